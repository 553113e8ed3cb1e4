"""sparsify-model: a Jacobian SAE pair at each MLP, for each lambda of the sweep."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mi_ideas import IdeaResult
from mi_ideas.errors import UsageError

from .config import SparsifyModelConfig
from .definitions import definition
from .jsae import MLP, JacobianSAEPair, fit_pair


def lam_name(lam: float) -> str:
    return f"lambda_{lam:g}"


def layers_of(cfg: SparsifyModelConfig, subject) -> list[int]:
    """The layers to sparsify (all when ``cfg.layers`` is None), refused when out of range."""
    layers = list(range(subject.n_layers)) if cfg.layers is None else list(cfg.layers)
    bad = [L for L in layers if not 0 <= L < subject.n_layers]
    if bad:
        raise UsageError(f"layers {bad} are outside {subject.spec}'s 0..{subject.n_layers - 1}; "
                         f"give layers within that range or null for all.")
    return layers


def mlp_names(subject, layer: int) -> tuple[list[str], str]:
    """The parameter names of ``layer``'s MLP (W_in, b_in, W_out, b_out) and its activation,
    after checking that it is a MLP this idea can read (no weights are read): a GPT-2-style
    Hugging Face model on the nnsight back-end (Conv1D ``c_fc`` / ``c_proj``, weights
    already (d_in, d_out)), or a TransformerLens model with a plain (non-gated, non-MoE)
    MLP. Anything else is a UsageError."""
    hint = (f"sparsify-model reads the MLP weights of a GPT-2-architecture model (a non-gated "
            f"MLP: Conv1D transformer.h[L].mlp.c_fc / c_proj on nnsight, blocks[L].mlp.W_in / "
            f"W_out on TransformerLens); {subject.spec} is not one. Use the zoo model, a GPT-2 "
            f"checkpoint (--model hf:DIR, or a remote one), or its TransformerLens version (tl:...).")
    if subject.backend == "transformer_lens":
        cfg = subject.model.cfg
        if (getattr(cfg, "attn_only", False) or getattr(cfg, "gated_mlp", False)
                or getattr(cfg, "num_experts", None) or getattr(cfg, "d_mlp", None) is None):
            raise UsageError(hint)
        act = getattr(cfg, "act_fn", None)
        names = [f"blocks.{layer}.mlp.{n}" for n in ("W_in", "b_in", "W_out", "b_out")]
    else:
        module = getattr(getattr(subject, "model", None), "_module", None)
        try:
            block = module.transformer.h[layer].mlp
            act = module.config.activation_function
            if not all(type(getattr(block, n)).__name__ == "Conv1D" for n in ("c_fc", "c_proj")):
                raise AttributeError  # e.g. nn.Linear (out, in) weights: another layout
        except (AttributeError, IndexError, TypeError):
            raise UsageError(hint) from None
        names = [f"transformer.h.{layer}.mlp.{n}" for n in ("c_fc.weight", "c_fc.bias",
                                                            "c_proj.weight", "c_proj.bias")]
    if act not in ("relu", "gelu_new", "gelu"):
        raise UsageError(f"sparsify-model supports MLP activations relu, gelu_new and gelu; "
                         f"{subject.spec} uses {act!r}.")
    return names, act


def check(cfg: SparsifyModelConfig, subject) -> None:
    """What :meth:`SparsifyModel.check` refuses before the run directory exists: layers out
    of range, and a model whose MLPs this idea cannot read."""
    if subject is None:
        return
    for L in layers_of(cfg, subject):
        mlp_names(subject, L)


def mlp_of(subject, layer: int) -> MLP:
    """The frozen MLP of ``layer``, y = act(x W_in + b_in) W_out + b_out, read through the
    subject (:meth:`Subject.parameters`: one trace for a remote model; see
    :func:`mlp_names`), its shapes checked against d_model."""
    names, act = mlp_names(subject, layer)
    w = subject.parameters(names)
    w_in, b_in, w_out, b_out = (w[n].float() for n in names)
    d, m = subject.d_model, w_in.shape[-1]
    if not (w_in.shape == (d, m) and b_in.shape == (m,) and w_out.shape == (m, d)
            and b_out.shape == (d,)):
        raise UsageError(f"{subject.spec}'s layer {layer} MLP has weights of shapes "
                         f"{[tuple(t.shape) for t in (w_in, b_in, w_out, b_out)]}, not "
                         f"(d_model, d_mlp), (d_mlp,), (d_mlp, d_model), (d_model,) with d_model "
                         f"{d}; sparsify-model cannot read this architecture's MLP.")
    return MLP(w_in, b_in, w_out, b_out, act=act)


@torch.no_grad()
def evaluate(pair: JacobianSAEPair, x: torch.Tensor, y: torch.Tensor, cfg: SparsifyModelConfig
             ) -> dict[str, float]:
    """Reconstruction, sparsity and Jacobian statistics on held-out rows."""
    from mi_ideas.metrics import explained_variance

    d1, d2 = pair.cfg.d_sae, pair.cfg.d_sae_out
    sums = torch.zeros(d2, d1, dtype=torch.float64)
    counts = torch.zeros(d2, d1, dtype=torch.float64)
    y_hats, x_hats, l0, above, total, l1 = [], [], 0.0, 0.0, 0.0, 0.0
    for i in range(0, len(x), 1024):
        o = pair.pair_forward(x[i:i + 1024])
        jac = o["jacobian"].double().abs()
        y_hats.append(o["y_hat"])
        x_hats.append(o["x_hat"])
        l0 += float((o["z1"] > 0).sum())
        above += float((jac > cfg.jacobian_eps).sum())
        total += jac.numel()
        l1 += float(jac.sum((1, 2)).sum())
        # co-active counts and |J| sums per (output, input) latent pair
        both = ((o["z2"].gather(1, o["idx_out"]) > 0)[..., None]
                & (o["z1"].gather(1, o["idx_in"]) > 0)[:, None, :]).double()
        flat = (o["idx_out"][..., None] * d1 + o["idx_in"][:, None, :]).reshape(-1)
        sums.view(-1).index_add_(0, flat, (jac * both).reshape(-1))
        counts.view(-1).index_add_(0, flat, both.reshape(-1))
    mean_abs = sums / counts.clamp_min(1)
    edges = (counts >= cfg.edge_min_tokens) & (mean_abs > cfg.jacobian_eps)
    live = int((counts.sum(0) > 0).sum())
    return {"ev": float(explained_variance(y, torch.cat(y_hats))),
            "ev_in": float(explained_variance(x, torch.cat(x_hats))),
            "l0": l0 / len(x), "jacobian_density": above / max(total, 1),
            "jacobian_l1": l1 / len(x), "edges": float(edges.sum()), "live": float(live),
            "edge_matrix": edges, "mean_abs": mean_abs.float()}


def autograd_error(pair: JacobianSAEPair, x: torch.Tensor) -> float:
    """max |J_einsum - J_autograd| on a few rows, in float64."""
    import copy

    p = copy.deepcopy(pair).double()
    x = x.double()
    o = p.pair_forward(x)
    err = 0.0
    for t in range(len(x)):
        idx_in, idx_out, z1 = o["idx_in"][t], o["idx_out"][t], o["z1"][t].detach()

        def f(v, z1=z1, idx_in=idx_in, idx_out=idx_out):
            z = z1.index_put((idx_in,), v)
            y, _ = p.mlp(p.decode(z[None]))
            return torch.relu(y @ p.sae2.W_enc + p.sae2.b_enc)[0, idx_out]

        ref = torch.autograd.functional.jacobian(f, z1[idx_in])
        err = max(err, float((ref - o["jacobian"][t].detach()).abs().max()))
    return err


def ce_losses(subject, texts: list[str], layers: list[int], pairs: dict, max_length: int,
              scales: dict[int, tuple[float, float]]) -> tuple[float, dict]:
    """Clean CE, and CE with each (layer, lambda) pair's y_hat spliced at mlp_out.L on the
    CE texts (common/evaluate.SpliceSet: the family's one spliced-CE definition; BOS kept
    clean). The pair of a scale-matched control works in rescaled units: x / s_x in,
    y_hat * s_y back. The pairs' inputs are the CE texts' own mlp_in rows, read in one
    forward per batch in the splice's row order."""
    from ..common.evaluate import SpliceSet

    first = SpliceSet(subject, texts, f"mlp_out.{layers[0]}", max_length=max_length)
    splices = {L: first.at(f"mlp_out.{L}") for L in layers}
    x_rows: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    for eb in first.batches:
        acts = subject.forward(eb.batch, read=[f"mlp_in.{L}" for L in layers], positions=eb.mask)
        for L in layers:
            x_rows[L].append(acts.activations[f"mlp_in.{L}"].float())
    out = {}
    with torch.no_grad():
        for (L, lam), pair in pairs.items():
            s_x, s_y = scales[L]
            x = torch.cat(x_rows[L]) / s_x
            if len(x) != splices[L].n_rows:
                raise RuntimeError(f"CE rows {len(x)} != splice rows {splices[L].n_rows}")
            y_hat = pair.pair_forward(x, jacobian=False)["y_hat"] * s_y
            out[(L, lam)] = splices[L].ce(y_hat)
    return first.ce(None), out


def scale_matched(mlp: MLP, x: torch.Tensor, y: torch.Tensor, target: tuple[float, float]
                  ) -> tuple[MLP, float, float]:
    """The MLP in rescaled units and the two scales: x' = x / s_x and y' = y / s_y with s_x,
    s_y such that the mean norms over ``x``'s (training) rows become ``target`` (the trained
    model's), and the MLP y' = MLP'(x') = MLP(s_x x') / s_y. Used on the re-initialised
    control so that it differs from the model in its weights only, not in the scale that
    lambda, eps and the Jacobian's entries are read against."""
    s_x = float(x.norm(dim=1).mean()) / target[0]
    s_y = float(y.norm(dim=1).mean()) / target[1]
    return MLP(mlp.w_in * s_x, mlp.b_in, mlp.w_out / s_y, mlp.b_out / s_y, mlp.act), s_x, s_y


def sweep(subject, acts, layers, cfg, ctx, tag: str, texts: list[str], ce_rows: int,
          targets: dict[int, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Train and evaluate every (layer, lambda) pair on one model; with ``targets`` (per
    layer, the mean MLP input and output norms of the model's training rows) the
    activations are first rescaled to those norms (:func:`scale_matched`)."""
    n = acts.n_rows
    # held out: the last eval_fraction of the rows, at least 64 and at least the CE texts'
    # rows (the harvest is in text order, so those are its last ce_rows rows)
    n_eval = max(int(n * cfg.eval_fraction), 64, ce_rows)
    if n_eval >= n:
        raise UsageError(f"{n} harvested tokens leave none to train on once {n_eval} are held "
                         f"out (eval_fraction, and the {len(texts)} CE texts' {ce_rows} tokens); "
                         f"use more texts (--data zoo:stories:N) or lower ce_texts / eval_fraction.")
    lams = sorted(set([0.0, *cfg.lambdas]))
    stats: dict = {}
    pairs: dict = {}
    seconds = {lam: 0.0 for lam in lams}
    norms: dict[str, dict[int, float]] = {"mlp_in_norm": {}, "mlp_out_norm": {}}
    scales: dict[int, tuple[float, float]] = {}
    train_norms: dict[int, tuple[float, float]] = {}
    x_eval0 = None
    for L in layers:
        mlp = mlp_of(subject, L)
        x = acts.load(f"mlp_in.{L}").float()
        y = acts.load(f"mlp_out.{L}").float()
        norms["mlp_in_norm"][L] = float(x[-n_eval:].norm(dim=1).mean())
        norms["mlp_out_norm"][L] = float(y[-n_eval:].norm(dim=1).mean())
        train_norms[L] = (float(x[:-n_eval].norm(dim=1).mean()), float(y[:-n_eval].norm(dim=1).mean()))
        if targets is not None:
            mlp, s_x, s_y = scale_matched(mlp, x[:-n_eval], y[:-n_eval], targets[L])
            x, y = x / s_x, y / s_y
        else:
            s_x = s_y = 1.0
        scales[L] = (s_x, s_y)
        if x_eval0 is None:
            x_eval0 = x[-8:]
        seed = ctx.seed_for(f"{tag}-{L}")
        for lam in lams:
            t0 = time.perf_counter()
            pair = fit_pair(mlp, x[:-n_eval], d_sae=cfg.d_sae, k=cfg.k, lam=lam, steps=cfg.steps,
                            batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, kernel=cfg.jacobian_kernel)
            seconds[lam] += time.perf_counter() - t0
            pair.eval()
            stats[(L, lam)] = evaluate(pair, x[-n_eval:], y[-n_eval:], cfg)
            pairs[(L, lam)] = pair
            s = stats[(L, lam)]
            ctx.log(f"{tag} layer {L} lambda {lam:g}: EV {s['ev']:.3f} (in {s['ev_in']:.3f}), "
                    f"density {s['jacobian_density']:.3f}, edges {int(s['edges'])}")
    ce_clean, ce = ce_losses(subject, texts, layers, pairs, cfg.max_length, scales)
    return {"stats": stats, "pairs": pairs, "seconds": seconds, "ce_clean": ce_clean, "ce": ce, **norms,
            "lams": lams, "n_train": n - n_eval, "x_eval0": x_eval0, "scales": scales,
            "train_norms": train_norms}


def add_sweep(result: IdeaResult, sw: dict, layers: list[int], prefix: str) -> None:
    base = sw["seconds"][0.0]
    # the nuisance quantities the model and the re-initialised control differ in
    for key in ("mlp_in_norm", "mlp_out_norm"):
        result.add(prefix + key, sum(sw[key][L] for L in layers) / len(layers), definition(prefix + key))
        for L in layers:
            result.add(f"{prefix}layer{L}.{key}", sw[key][L], definition(f"{prefix}layer{L}.{key}"))
    for lam in sw["lams"]:
        p = f"{prefix}{lam_name(lam)}."
        st = [sw["stats"][(L, lam)] for L in layers]
        mean = lambda key: sum(s[key] for s in st) / len(st)  # noqa: E731
        for key in ("ev", "ev_in", "l0", "jacobian_density", "jacobian_l1"):
            result.add(p + key, mean(key), definition(p + key))
        result.add(p + "ce_increase", sum(sw["ce"][(L, lam)] - sw["ce_clean"] for L in layers) / len(layers),
                   definition(p + "ce_increase"))
        result.add(p + "edges_per_feature", sum(s["edges"] for s in st) / max(sum(s["live"] for s in st), 1),
                   definition(p + "edges_per_feature"))
        for L, s in zip(layers, st):  # the same statistics per layer (the means above average these)
            q = f"{prefix}layer{L}.{lam_name(lam)}."
            for key in ("ev", "ev_in", "l0", "jacobian_density", "jacobian_l1"):
                result.add(q + key, s[key], definition(q + key))
            result.add(q + "ce_increase", sw["ce"][(L, lam)] - sw["ce_clean"], definition(q + "ce_increase"))
            result.add(q + "edges_per_feature", s["edges"] / max(s["live"], 1), definition(q + "edges_per_feature"))
        result.add(p + "train_seconds", sw["seconds"][lam], definition(p + "train_seconds"))
        result.add(p + "time_ratio", sw["seconds"][lam] / base if base > 0 else float("nan"),
                   definition(p + "time_ratio"))


def run_toy(result: IdeaResult, cfg: SparsifyModelConfig, ctx) -> dict[str, Any]:
    """The planted sparse feature map: the edges recovered at each lambda vs the planted ones."""
    from . import toy

    gen = ctx.generator_for("toy")
    g = toy.build(cfg.toy_features, 0.08, gen)
    x, xe = g.sample(16384, gen), g.sample(4096, gen)
    ye = g.mlp(xe)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    out = {}
    for lam in sorted(set([0.0, *cfg.toy_lambdas])):
        t0 = time.perf_counter()
        pair = fit_pair(g.mlp, x, d_sae=cfg.toy_features + cfg.toy_features // 3, k=4, lam=lam,
                        steps=cfg.toy_steps, batch_size=256, lr=3e-3, seed=seed,
                        kernel=cfg.jacobian_kernel)
        secs = time.perf_counter() - t0
        s = evaluate(pair, xe, ye, cfg)
        found, _, m_out = toy.recovered_edges(s["edge_matrix"], pair.W_dec.detach(),
                                              pair.sae2.W_dec.detach(), g)
        tp = found & g.edges
        p = f"toy.{lam_name(lam)}."
        for key in ("ev", "ev_in", "jacobian_density"):
            result.add(p + key, s[key], definition(p + key))
        result.add(p + "edge_precision", len(tp) / max(s["edges"], 1), definition(p + "edge_precision"))
        result.add(p + "edge_recall", len(tp) / len(g.edges), definition(p + "edge_recall"))
        result.add(p + "n_edges", s["edges"], definition(p + "n_edges"))
        result.add(p + "matched_out", m_out, definition(p + "matched_out"))
        result.add(p + "train_seconds", secs, definition(p + "train_seconds"))
        out[f"{lam:g}"] = {"found": sorted(found), "planted": sorted(g.edges)}
        ctx.log(f"toy lambda {lam:g}: EV {s['ev']:.3f}, density {s['jacobian_density']:.3f}, "
                f"{int(s['edges'])} edges, {len(tp)}/{len(g.edges)} planted found")
    return out


def run(ctx, cfg: SparsifyModelConfig) -> IdeaResult:
    from mi_ideas.harvest import harvest_to_cache

    subject = ctx.subject
    layers = layers_of(cfg, subject)
    sites = [s for L in layers for s in (f"mlp_in.{L}", f"mlp_out.{L}")]
    n_ce = min(cfg.ce_texts, max(1, int(len(ctx.dataset) * cfg.eval_fraction)))
    texts = ctx.dataset.texts[-n_ce:]
    result = IdeaResult()
    toy_details = run_toy(result, cfg, ctx) if cfg.toy else None
    from ..common.evaluate import SpliceSet

    ce_rows = SpliceSet(subject, texts, sites[1], max_length=cfg.max_length).n_rows
    acts = ctx.harvest(sites, positions="all", max_length=cfg.max_length)
    sw = sweep(subject, acts, layers, cfg, ctx, "model", texts, ce_rows)
    add_sweep(result, sw, layers, "")
    result.add("jacobian_autograd_max_abs_err", autograd_error(sw["pairs"][(layers[0], 0.0)], sw["x_eval0"]),
               definition("jacobian_autograd_max_abs_err"))
    result.add("n_layers", len(layers), definition("n_layers"))
    result.add("n_train_tokens", sw["n_train"], definition("n_train_tokens"))
    result.add("ce_clean", sw["ce_clean"], definition("ce_clean"))
    details: dict[str, Any] = {"layers": layers, "lambdas": sw["lams"], "model": {
        f"{L}/{lam:g}": {k: v for k, v in s.items() if k not in ("edge_matrix", "mean_abs")}
        for (L, lam), s in sw["stats"].items()}, "toy": toy_details}
    ctx.artifacts.save_tensors("jacobian_edges", {
        f"layer{L}.lambda{lam:g}": s["mean_abs"] for (L, lam), s in sw["stats"].items()})
    if cfg.save_dictionaries:
        from mi_ideas.sites import to_hook_name

        details["dictionaries"] = {  # paths relative to the run directory
            f"{L}/{lam:g}": {which: str(Path(d).relative_to(ctx.run_dir)) for which, d in
                             pair.save_inference_saes(
                                 ctx.run_dir / "artifacts" / "dictionaries" / f"layer{L}.lambda{lam:g}",
                                 hook_in=to_hook_name(f"mlp_in.{L}"),
                                 hook_out=to_hook_name(f"mlp_out.{L}"),
                                 model_name=subject.spec).items()}
            for (L, lam), pair in sw["pairs"].items()}
    if cfg.reinit_control and subject.on_server:
        ctx.log("the re-initialised control needs the weights locally: skipped for a remote model")
        details["reinit_control"] = "skipped: remote model"
    elif cfg.reinit_control:
        fresh = subject.reinitialized(seed=ctx.seed_for("reinit"))
        r_acts = harvest_to_cache(fresh, ctx.dataset, sites, positions="all", max_length=cfg.max_length)
        rsw = sweep(fresh, r_acts, layers, cfg, ctx, "reinit", texts, ce_rows,
                    targets=sw["train_norms"] if cfg.scale_match_control else None)
        add_sweep(result, rsw, layers, "reinit.")
        result.add("reinit.ce_clean", rsw["ce_clean"], definition("reinit.ce_clean"))
        for i, key in enumerate(("mlp_in_scale", "mlp_out_scale")):
            result.add(f"reinit.{key}", sum(rsw["scales"][L][i] for L in layers) / len(layers),
                       definition(f"reinit.{key}"))
        details["reinit"] = {f"{L}/{lam:g}": {k: v for k, v in s.items() if k not in ("edge_matrix", "mean_abs")}
                             for (L, lam), s in rsw["stats"].items()}
    result.details = details
    from .figures import figures

    for name, fig in figures(result).items():
        ctx.artifacts.save_figure(name, fig)
    result.artifacts.update(ctx.artifacts.saved)
    result.figures.update(ctx.artifacts.figures)
    return result
