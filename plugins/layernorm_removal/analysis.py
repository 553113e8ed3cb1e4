"""The seed's questions 1 and 3 on finished runs: per-token comparison, weights, SAEs."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .model import FakeLNGPT2
from .train import EvalSet, per_token_nll

POSITION_BUCKETS = ((0, 0), (1, 3), (4, 15), (16, 63), (64, 10 ** 9))


def paired_summary(per_unit: np.ndarray) -> dict[str, float]:
    """Mean of per-prompt differences, its 95% t-interval and the Wilcoxon signed-rank p."""
    from scipy import stats

    d = np.asarray(per_unit, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_wilcoxon": math.nan, "n": 0}
    m = float(d.mean())
    if n < 2 or float(d.std()) == 0.0:
        return {"mean": m, "ci_low": m, "ci_high": m, "p_wilcoxon": math.nan, "n": int(n)}
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    try:
        p = float(stats.wilcoxon(d).pvalue)
    except ValueError:
        p = math.nan
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "p_wilcoxon": p, "n": int(n)}


def token_categories(tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Any]] | None,
                     n_ctx: int, eot: int) -> tuple[list[list[int]], list[list[str]]]:
    """Eval rows ``[eot] text [eot]`` (cut at n_ctx) and the category of every token
    (the zoo corpus's span category, 'end-of-text', or 'other' / 'unlabelled')."""
    from mi_ideas.data.stories import token_labels

    rows, cats = [], []
    for i, text in enumerate(texts):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if spans is not None:
            labels = [s.category if s is not None else "other" for s in token_labels(offsets, spans[i])]
        else:
            labels = ["unlabelled"] * len(ids)
        row = ([eot] + ids + [eot])[:n_ctx]
        cat = (["end-of-text"] + labels + ["end-of-text"])[:n_ctx]
        rows.append(row)
        cats.append(cat)
    return rows, cats


@torch.no_grad()
def ln_scales(model: FakeLNGPT2, ev: EvalSet, batch_size: int = 32) -> torch.Tensor:
    """The original model's LN scale at each predicting position, relative to the site's
    average: per token, the geometric mean over every site of std_token / sigma_site
    (sigma_site = mean std over the held-out non-special positions). ``(n, T)``."""
    model.eval()
    stds: dict[str, list[torch.Tensor]] = {}
    model.record_std = {}
    try:
        for k in range(0, ev.ids.shape[0], batch_size):
            model.record_std.clear()
            model(ev.ids[k:k + batch_size], pad=ev.pad[k:k + batch_size])
            for s, v in model.record_std.items():
                stds.setdefault(s, []).append(v)
    finally:
        model.record_std = None
    normal, _, _ = model.masks(ev.ids, ev.pad)
    logs = []
    for s in model.sites:
        v = torch.cat(stds[s]).double()
        logs.append(torch.log(v / v[normal].mean()))
    return torch.stack(logs).mean(0).exp()


def compare_tokens(nll_free: torch.Tensor, nll_ctrl: torch.Tensor, ev: EvalSet,
                   cats: list[list[str]], scale: torch.Tensor, tokenizer, top_k: int
                   ) -> dict[str, Any]:
    """Question 1: where the LN-free model is worse than the control, by target-token
    category and by position, with prompts as the units (paired differences)."""
    valid = ev.target_valid
    diff = (nll_free - nll_ctrl).double()
    n, tm1 = diff.shape
    # category of the predicted token x_{p+1}; the predicting position is p
    cat_of = [[cats[i][p + 1] if p + 1 < len(cats[i]) else "" for p in range(tm1)] for i in range(n)]
    sc = scale[:, :tm1]

    def group(keys_fn) -> list[dict[str, Any]]:
        groups: dict[str, dict[int, list[float]]] = {}
        scl: dict[str, list[float]] = {}
        for i in range(n):
            for p in range(tm1):
                if not bool(valid[i, p]):
                    continue
                k = keys_fn(i, p)
                groups.setdefault(k, {}).setdefault(i, []).append(float(diff[i, p]))
                scl.setdefault(k, []).append(float(sc[i, p]))
        out = []
        for k, per in groups.items():
            units = np.array([np.mean(v) for v in per.values()])
            s = paired_summary(units)
            out.append({"group": k, "n_tokens": int(sum(len(v) for v in per.values())),
                        "n_prompts": s["n"], "mean_diff": s["mean"], "ci_low": s["ci_low"],
                        "ci_high": s["ci_high"], "p_wilcoxon": s["p_wilcoxon"],
                        "mean_ln_scale": float(np.mean(scl[k]))})
        return sorted(out, key=lambda r: -r["mean_diff"])

    by_cat = group(lambda i, p: cat_of[i][p])

    def bucket(p: int) -> str:
        for lo, hi in POSITION_BUCKETS:
            if lo <= p <= hi:
                return f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10 ** 9 else f">={lo}")
        return "?"

    by_pos = group(lambda i, p: bucket(p))
    flat = diff.masked_fill(~valid, -math.inf).flatten()
    top = []
    for idx in torch.topk(flat, min(top_k, int(valid.sum()))).indices.tolist():
        i, p = divmod(idx, tm1)
        ids = ev.ids[i]
        top.append({"prompt": i, "position": p, "target": tokenizer.decode([int(ids[p + 1])]),
                    "context": tokenizer.decode(ids[max(0, p - 8):p + 1].tolist()),
                    "category": cat_of[i][p], "diff": float(diff[i, p]),
                    "nll_ln_free": float(nll_free[i, p]), "nll_control": float(nll_ctrl[i, p]),
                    "ln_scale": float(sc[i, p])})
    from scipy import stats

    d = diff[valid].numpy()
    dev = np.abs(np.log(sc[valid].numpy()))
    rho = stats.spearmanr(d, dev)
    per_prompt = np.array([float(diff[i][valid[i]].mean()) for i in range(n) if bool(valid[i].any())])
    return {"by_category": by_cat, "by_position": by_pos, "top_tokens": top,
            "overall": paired_summary(per_prompt),
            "spearman_diff_vs_abs_log_scale": float(rho.statistic),
            "spearman_p": float(rho.pvalue), "n_tokens": int(valid.sum())}


def weight_change(original: FakeLNGPT2, treated: FakeLNGPT2, control: FakeLNGPT2
                  ) -> list[dict[str, Any]]:
    """Question 3: per weight matrix, ||W_t - W_o||_F / ||W_o||_F (treated vs original),
    the same for the control, and ||W_t - W_c||_F / ||W_c||_F."""
    o, t, c = original.matrices(), treated.matrices(), control.matrices()
    rows = []
    for name, w in o.items():
        wo, wt, wc = w.double(), t[name].double(), c[name].double()
        rows.append({"matrix": name,
                     "ln_free_vs_original": float((wt - wo).norm() / wo.norm()),
                     "control_vs_original": float((wc - wo).norm() / wo.norm()),
                     "ln_free_vs_control": float((wt - wc).norm() / wc.norm())})
    return rows


@torch.no_grad()
def sae_metrics(model: FakeLNGPT2, sae: Any, layer: int, ev: EvalSet, batch_size: int = 32,
                clean_nll: torch.Tensor | None = None) -> dict[str, float]:
    """The SAE at ``resid_pre.layer`` of ``model`` on the held-out rows (position 0 and
    padding excluded): explained variance (1 - sum ||x - x_hat||^2 / sum ||x - mean||^2),
    CE clean / spliced (reconstruction at positions >= 1) / mean-ablated (positions >= 1
    replaced by the mean activation), and CE recovered = (CE_abl - CE_sae) / (CE_abl - CE_clean)."""
    model.eval()
    acts: list[torch.Tensor] = []
    site = f"resid_pre.{layer}"
    keep = ~ev.pad.clone()
    keep[:, 0] = False

    def grab(s, x):
        if s == site:
            acts.append(x.clone())
        return None

    for k in range(0, ev.ids.shape[0], batch_size):
        model(ev.ids[k:k + batch_size], hook=grab, pad=ev.pad[k:k + batch_size])
    x_all = torch.cat(acts)
    x = x_all[keep].double()
    x_hat = sae.decode(sae.encode(x.float())).double()
    ev_sae = 1.0 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    mean = x.mean(0).float()

    def splice(kind: str):
        def hook(s, h):
            if s != site:
                return None
            out = h.clone()
            if kind == "sae":
                out[:, 1:] = sae.decode(sae.encode(h[:, 1:]))
            else:
                out[:, 1:] = mean
            return out
        return hook

    valid = ev.target_valid

    def ce(hook=None) -> float:
        return float(per_token_nll(model, ev, hook=hook)[valid].double().mean())

    clean = ce() if clean_nll is None else float(clean_nll[valid].double().mean())
    spliced, ablated = ce(splice("sae")), ce(splice("mean"))
    rec = (ablated - spliced) / (ablated - clean) if ablated != clean else math.nan
    return {"explained_variance": ev_sae, "ce_clean": clean, "ce_spliced": spliced,
            "ce_mean_ablated": ablated, "ce_recovered": rec}
