"""The discrete-output-states experiment: clean forwards, clustering, probes, pair sweeps.

Every model call goes through the subject (``Subject.forward``) or the shared sweep engine
(:func:`..common.sweep.sweep`), so the idea runs remotely as well as locally.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mi_ideas.errors import UsageError
from mi_ideas.metrics import kl_divergence

from ..common.curves import DEFINITIONS as D, FLOORS, first_crossing
from mi_ideas.stats import DEFINITIONS as SD
from ..common.sweep import CleanRun, clean_run, sweep
from . import cluster as dc
from .config import DiscreteOutputStatesConfig
from .result import DiscreteOutputStatesResult

#: The interpolation paths swept from each reference prompt, in order.
PATHS = ("within", "across", "within_far", "null_within", "null_across")
PATH_DESCRIPTIONS = {
    "within": "towards the activation of another prompt in the same output cluster",
    "across": "towards the activation of a prompt in a different output cluster",
    "within_far": "along the same-cluster direction, as far as the other-cluster partner "
                  "(distance-matched control)",
    "null_within": "towards a prompt in the same cluster of a null partition (random "
                   "relabelling with the same cluster sizes)",
    "null_across": "towards a prompt in a different cluster of the null partition",
}

STATS_CI = SD["ci95"]
STATS_W = SD["wilcoxon_p"]


def _pick(labels: np.ndarray, i: int, same: bool, rng: np.random.Generator,
          copies: np.ndarray | None = None) -> int:
    """A random prompt in the same (or another) cluster as ``i``, never ``i`` nor a prompt
    whose activation equals ``i``'s (``copies[i]``); -1 if none."""
    mask = (labels == labels[i]) if same else (labels != labels[i])
    mask[i] = False
    if copies is not None:
        mask &= ~copies[i]
    choices = np.flatnonzero(mask)
    return int(rng.choice(choices)) if len(choices) else -1


def make_pairs(labels: np.ndarray, null_labels: np.ndarray, n_pairs: int,
               rng: np.random.Generator, copies: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """Reference prompts and their partners under the clusters and under the null partition.

    References are drawn (without replacement while possible) among prompts that have a
    partner of every kind; returns ``ref`` and one index array per partner kind.
    ``copies`` ``(n, n)`` bool marks prompts with exactly equal activations: a reference is
    never paired with itself or a copy (a zero-length path).
    """
    n = len(labels)
    sizes = np.bincount(labels)[labels]
    null_sizes = np.bincount(null_labels)[null_labels]
    ok = np.flatnonzero((sizes >= 2) & (sizes < n) & (null_sizes >= 2) & (null_sizes < n))
    if len(ok) == 0:
        raise UsageError("no prompt has both a same-cluster and an other-cluster partner.")
    ref = rng.choice(ok, size=n_pairs, replace=n_pairs > len(ok))
    out = {"ref": ref}
    for name, lab, same in (("within", labels, True), ("across", labels, False),
                            ("null_within", null_labels, True),
                            ("null_across", null_labels, False)):
        out[name] = np.array([_pick(lab, int(i), same, rng, copies) for i in ref])
        if (out[name] < 0).any():
            raise UsageError(f"a reference prompt has no {name.replace('_', ' ')} partner whose "
                             "activation differs from its own; use more distinct prompts.")
    return out


def _subset(clean: CleanRun, idx: Any) -> CleanRun:
    from mi_ideas.subject import Batch

    idx = torch.as_tensor(idx, dtype=torch.long)
    b = clean.batch
    return CleanRun(batch=Batch(b.input_ids[idx], b.attention_mask[idx]), resid=clean.resid[idx],
                    x=clean.x[idx], logprobs=clean.logprobs[idx], final=clean.final[idx])


def _seed(ctx: Any, name: str) -> int:
    """An integer seed (for scikit-learn's ``random_state``) of one sub-experiment."""
    return int(ctx.rng_for(name).integers(2**31 - 1))


def _median(t: Any) -> float:
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    t = t[torch.isfinite(t)]
    return float(t.median()) if len(t) else float("nan")


def run(ctx: Any, cfg: DiscreteOutputStatesConfig) -> DiscreteOutputStatesResult:
    # torch and the BLAS / OpenMP pools on one thread (tiny arrays, reproducible sums)
    with ctx.torch_threads(1), dc.one_thread():
        return _run(ctx, cfg)


def _run(ctx: Any, cfg: DiscreteOutputStatesConfig) -> DiscreteOutputStatesResult:
    subject, ds = ctx.subject, ctx.dataset
    site = subject.site(cfg.site)
    if site.kind != "resid_pre":
        raise UsageError(f"site must be a resid_pre.L site (the sweep perturbs the residual "
                         f"stream entering block L), not {cfg.site!r}.")
    probe_sites = [subject.site(s).name for s in (cfg.probe_sites or (
        ["resid_pre.0"] + [f"resid_post.{layer}" for layer in range(subject.n_layers)]))]
    # Each sub-experiment draws from its own generator or seed (ctx.rng_for(name)), so
    # skipping one (k = 1 skips probes and pairs) never changes the draws of another.

    # -- 1. prompts and one clean pass --------------------------------------------------
    n_all = len(ds)
    keep = (np.arange(n_all) if n_all <= cfg.max_prompts
            else np.sort(ctx.rng_for("prompts").choice(n_all, size=cfg.max_prompts,
                                                        replace=False)))
    # exact duplicate prompts would count one prompt twice (and pair it with itself)
    first = {}
    for i in keep:
        first.setdefault(ds.texts[i], i)
    n_duplicates = len(keep) - len(first)
    keep = np.asarray(sorted(first.values()), dtype=int)
    texts = [ds.texts[i] for i in keep]
    slot_labels = [ds.labels[i] for i in keep]
    n = len(texts)
    if n < 4:
        raise UsageError(f"dataset {ds.spec!r} has {n} prompts; at least 4 are needed.")
    if cfg.k_min > n - 1:
        raise UsageError(f"k_min={cfg.k_min} exceeds the {n} prompts of {ds.spec!r} minus one "
                         f"({n - 1}): k clusters need at least k + 1 prompts; lower k_min "
                         f"(and k_max) or use a larger dataset.")
    ctx.log(f"discrete-output-states: {n} prompts from {ds.spec}")
    clean = clean_run(subject, texts, site.name)
    logprobs = clean.logprobs.float()
    acts = subject.forward(clean.batch, read=probe_sites, positions="last").activations

    # -- 2. output states -----------------------------------------------------------------
    sel = dc.select_k(logprobs.numpy(), k_min=cfg.k_min, k_max=cfg.k_max,
                      representation=cfg.representation, criterion=cfg.criterion,
                      min_silhouette=cfg.min_silhouette, floor=cfg.logprob_floor,
                      seed=_seed(ctx, "clustering"),
                      n_init=cfg.kmeans_restarts, n_refs=cfg.gap_references)
    labels = sel.labels
    k = sel.k
    sizes = np.bincount(labels, minlength=k)
    centroids = dc.centroid_distributions(logprobs.numpy(), labels, cfg.representation)
    align = dc.alignment(labels, slot_labels)
    tok = subject.tokenizer
    clusters = []
    for c in range(k):
        top = np.argsort(-centroids[c])[:5]
        members = [slot_labels[i] for i in np.flatnonzero(labels == c)]
        slots = {}
        for key in align:
            vals: dict[str, int] = {}
            for m in members:
                vals[str(m[key])] = vals.get(str(m[key]), 0) + 1
            slots[key] = dict(sorted(vals.items(), key=lambda kv: -kv[1]))
        clusters.append({"cluster": c, "size": int(sizes[c]),
                         "top_tokens": [[tok.decode([int(t)]), float(centroids[c, t])]
                                        for t in top],
                         "slot_values": slots,
                         "example": texts[int(np.flatnonzero(labels == c)[0])]})

    result = DiscreteOutputStatesResult(k=k)
    result.add("n_prompts", n, "distinct prompts of the template family used (last position "
               "of each)")
    result.add("n_duplicate_prompts", n_duplicates, "prompts dropped as exact copies of an "
               "earlier prompt")
    how_k = (f"(k in {sel.ks[0]}..{sel.ks[-1]} with the largest mean silhouette; k = 1 when "
             f"that silhouette is below min_silhouette = {cfg.min_silhouette})"
             if cfg.criterion == "silhouette" else
             f"(smallest k in 1..{sel.gap_ks[-1]} with Gap(k) >= Gap(k+1) - s(k+1), "
             f"{cfg.gap_references} uniform PCA-box references)")
    result.add("k", k, f"number of output states chosen by the {cfg.criterion} criterion "
               f"{how_k} on {cfg.representation} clustering of the next-token distributions")
    result.add("best_silhouette", sel.best_silhouette,
               "largest mean silhouette over the k tried (s(i) = (b - a) / max(a, b), a = mean "
               "distance of row i to its own cluster, b = to the nearest other cluster; "
               f"distance of the {cfg.representation} representation); in [-1, 1], > 0.7 "
               "strong structure")
    if k >= 2 and k in sel.ks:
        result.add("silhouette_at_k", sel.silhouette[sel.ks.index(k)],
                   "mean silhouette at the chosen k")
    if sel.gap:
        result.add("gap_at_k", sel.gap[k - 1],
                   "gap statistic Gap(k) = E*[log W_k] - log W_k at the chosen k (W_k = "
                   "k-means within-cluster sum of squares; E* over uniform references in the "
                   "data's principal-axes box); > 0 means tighter than uniform")
    result.add("k_at_upper_bound", float(sel.at_upper_bound),
               "1 if the chosen k is k_max (the curve may still rise: widen the range), else 0")
    if k >= 2:
        stability = dc.stability(
            logprobs.numpy(), labels, representation=cfg.representation,
            floor=cfg.logprob_floor, n_resamples=cfg.stability_resamples,
            seed=_seed(ctx, "stability"),
            n_init=cfg.kmeans_restarts)
        result.add("cluster_stability_ari", stability,
                   f"mean adjusted Rand index between the clustering and re-clusterings (same "
                   f"k) of {cfg.stability_resamples} random 80% subsets of the prompts (1 = the "
                   f"same states on every subset)")
    result.add("largest_cluster_fraction", sizes.max() / n,
               "fraction of prompts in the largest cluster")
    mean_h = float(np.mean(np.linalg.norm(
        np.sqrt(np.exp(logprobs.numpy())) - np.sqrt(centroids[labels]), axis=1) / np.sqrt(2)))
    result.add("within_cluster_hellinger", mean_h,
               "mean Hellinger distance H(p, q) = ||sqrt p - sqrt q|| / sqrt 2 (in [0, 1]) of "
               "each prompt's next-token distribution to its cluster's centre distribution")
    if k >= 2:
        cd = np.linalg.norm(np.sqrt(centroids)[:, None] - np.sqrt(centroids)[None], axis=-1)
        cd = cd / np.sqrt(2)
        result.add("between_centroid_hellinger_min", cd[~np.eye(k, dtype=bool)].min(),
                   "smallest Hellinger distance between two cluster centre distributions")
    for key, a in align.items():
        result.add(f"ami_{key}", a["ami"],
                   f"adjusted mutual information (arithmetic normalisation; 0 = chance, 1 = "
                   f"identical partitions) between the clusters and the '{key}' slot label "
                   f"({int(a['n_values'])} values)")
        result.add(f"ari_{key}", a["ari"], f"adjusted Rand index between the clusters and the "
                   f"'{key}' slot label (0 = chance, 1 = identical)")

    details: dict[str, Any] = {
        "dataset": ds.spec, "site": site.name, "probe_sites": probe_sites,
        "k_selection": {"criterion": cfg.criterion, "representation": cfg.representation,
                        "ks": sel.ks, "silhouette": sel.silhouette, "gap_ks": sel.gap_ks,
                        "gap": sel.gap, "gap_s": sel.gap_s, "k": k},
        "clusters": clusters, "alignment": align,
    }
    tensors: dict[str, torch.Tensor] = {
        "labels": torch.as_tensor(labels), "prompt_index": torch.as_tensor(keep),
        "centroids": torch.as_tensor(centroids, dtype=torch.float32),
        "logprobs": logprobs,
    }

    if k < 2:
        ctx.log("discrete-output-states: no discrete structure (k = 1); probes and "
                "interpolations need two or more states and are skipped.")
        details["skipped"] = "k = 1: no states to probe or interpolate between"
    else:
        _probe(ctx, cfg, acts, labels, probe_sites, _seed(ctx, "probes"), result, details,
               tensors)
        _plateaus(ctx, cfg, subject, clean, logprobs, labels, site.name, result, details,
                  tensors)

    ctx.artifacts.save_tensors("discrete_output_states", tensors,
                               metadata={"site": site.name, "dataset": ds.spec, "k": str(k)})
    ctx.artifacts.save_json("clusters", {
        "k": k, "dataset": ds.spec, "clusters": clusters,
        "prompts": [{"text": t, "cluster": int(c), **{kk: str(v) for kk, v in s.items()}}
                    for t, c, s in zip(texts, labels, slot_labels)]})
    from .figures import make_figures

    make_figures(ctx, details, cfg)
    result.details = details
    return result


def _probe(ctx: Any, cfg: DiscreteOutputStatesConfig, acts: dict, labels: np.ndarray,
           probe_sites: list[str], seed: int, result: DiscreteOutputStatesResult,
           details: dict, tensors: dict) -> None:
    rows = []
    for s in ctx.progress(probe_sites, desc="probes"):
        sc = dc.probe_accuracy(acts[s].float().numpy(), labels, folds=cfg.probe_folds,
                               c=cfg.probe_c, seed=seed, n_shuffles=cfg.probe_shuffles)
        rows.append({"site": s, "accuracy": sc.accuracy, "shuffled": sc.shuffled_mean,
                     "shuffled_std": sc.shuffled_std, "majority": sc.majority})
        key = s.replace(".", "_")
        result.add(f"probe_acc_{key}", sc.accuracy,
                   f"held-out accuracy of a logistic-regression probe predicting the output "
                   f"cluster from {s} at the last position ({cfg.probe_folds}-fold stratified "
                   f"cross-validation, standardised features, L2 with C = {cfg.probe_c})")
        result.add(f"probe_shuffled_{key}", sc.shuffled_mean,
                   f"control: the same probe at {s} on randomly permuted cluster labels (mean "
                   f"over {cfg.probe_shuffles} permutations); chance for this class balance")
    result.add("probe_majority", rows[0]["majority"],
               "accuracy of always predicting the largest cluster")
    details["probes"] = rows
    tensors["probe_accuracy"] = torch.tensor([r["accuracy"] for r in rows])
    tensors["probe_shuffled"] = torch.tensor([r["shuffled"] for r in rows])


def _plateaus(ctx: Any, cfg: DiscreteOutputStatesConfig, subject: Any, clean: CleanRun,
              logprobs: torch.Tensor, labels: np.ndarray, site: str,
              result: DiscreteOutputStatesResult, details: dict, tensors: dict) -> None:
    from ..common.directions import same_rows
    from mi_ideas.stats import paired_comparison, per_unit
    from .onsets import (EXPONENT_DEFINITION, JUMP_DEFINITION, JUMP_MAX, VERDICT_DEFINITION,
                         path_metrics, verdict)
    from .readouts import BOUNDED

    null_labels = ctx.rng_for("null-partition").permutation(labels)
    x = clean.x.float()
    copies = same_rows(x, x).numpy()
    pairs = make_pairs(labels, null_labels, cfg.n_pairs, ctx.rng_for("pairs"), copies=copies)
    ref = pairs["ref"]
    xr = x[torch.as_tensor(ref)]
    t = {name: x[torch.as_tensor(pairs[name])] for name in ("within", "across",
                                                            "null_within", "null_across")}
    dist_across = (t["across"] - xr).norm(dim=-1, keepdim=True)
    w_dir = t["within"] - xr
    t["within_far"] = xr + w_dir / w_dir.norm(dim=-1, keepdim=True).clamp_min(1e-12) * dist_across
    paths = torch.stack([t[name] for name in PATHS], dim=1)
    steps = torch.linspace(0, 1, cfg.n_steps)
    sub = _subset(clean, ref)
    # The full-forward engine: the pair paths are few (n_pairs x 5 x n_steps rows); it keeps
    # a local run's numbers the same as a remote run's (the last-token engine's float32
    # rounding differs by ~1e-7 nats, which curves normalised by small endpoints turn into
    # ~3e-5 in paired sharpness differences). KL, L2, JS and TV come from one sweep, computed
    # next to the model (a remote run downloads four numbers per row, not a distribution).
    res = sweep(subject, sub, site, paths, steps, kind="target",
                rows_per_forward=cfg.rows_per_forward, progress=ctx.progress, engine="full",
                readouts=BOUNDED)
    per = path_metrics(res.kl, res.l2, res.js, res.tv, steps)
    cross = first_crossing(res.kl, cfg.kl_threshold)  # (n_pairs, n_paths), n_steps = never
    p = {name: i for i, name in enumerate(PATHS)}
    n_units = len(np.unique(ref))
    unit_note = (f"; per reference prompt the median over its paths of this kind (the {n_units} "
                 f"distinct references are the units), then the median over references")

    def unit_values(metric: str, name: str) -> Any:
        return per_unit(per[metric][:, p[name]].numpy(), ref)

    defs = {
        "sharpness_kl": D["sharpness_floored"] + "; read-out KL(clean || perturbed) of the next "
                        "token (a smooth response gives about 2, and so does a flat-then-linear "
                        "KL curve: sharpness cannot see a plateau)",
        "sharpness_l2": D["sharpness_floored"] + "; read-out L2 distance of the final residual "
                        "stream (last position)",
        "onset10_js": D["onset10_js"], "onset50_js": D["onset50_js"],
        "jump_js": JUMP_DEFINITION, "onset_exponent_js": EXPONENT_DEFINITION,
        "onset10_tv": D["onset10_tv"], "onset50_tv": D["onset50_tv"],
        "loglog_slope_js": D["loglog_slope_js"] + " (resolution 1e-6: float32 JS below it is "
                           "rounding)",
    }
    for name in PATHS:
        for metric, text in defs.items():
            result.add(f"{name}.{metric}_median", _median(unit_values(metric, name).values),
                       f"{text}; path {PATH_DESCRIPTIONS[name]}{unit_note}")
        slope = per["loglog_slope_js"][:, p[name]]
        kept = ~per["excluded_js"][:, p[name]]
        result.add(f"{name}.loglog_flat_frac",
                   float(torch.isnan(slope[kept]).double().mean()) if kept.any() else float("nan"),
                   "fraction of the kept paths (JS endpoint above the floor) whose JS is at or "
                   "below the 1e-6 resolution at the first grid points (fewer than 3 of the "
                   f"first 5 above it: no power-law start, a flat one); path {PATH_DESCRIPTIONS[name]}")
        result.add(f"{name}.n_excluded_kl", int(per["excluded_kl"][:, p[name]].sum()),
                   D["n_excluded"] + f"; KL read-out, floor {FLOORS['kl']} nats; path "
                   f"{PATH_DESCRIPTIONS[name]} (of {len(ref)} paths)")
        result.add(f"{name}.n_excluded_js", int(per["excluded_js"][:, p[name]].sum()),
                   D["n_excluded"] + f"; JS read-out, floor {FLOORS['js']} nats; path "
                   f"{PATH_DESCRIPTIONS[name]} (of {len(ref)} paths)")

    # "A vs B" at the prompt level: paired by reference prompt, Wilcoxon signed-rank.
    comparisons = {}
    for metric in ("jump_js", "onset10_js", "sharpness_kl"):
        for b, a in (("across", "within_far"), ("across", "within"),
                     ("null_across", "null_within")):
            key = f"cmp.{metric}.{b}_vs_{a}"
            try:
                pc = paired_comparison(unit_values(metric, a), unit_values(metric, b),
                                       rng=_seed(ctx, key))
            except ValueError:  # fewer than 2 references with both values (floors)
                continue
            comparisons[key] = pc.as_dict()
            what = (f"{metric} ({defs[metric].split(':')[0]}) of {b} minus {a} paths, paired by "
                    f"reference prompt (per-reference medians over its paths)")
            result.add(f"{key}.diff_mean", pc.mean_diff, "mean over reference prompts of "
                       f"the difference in {what}")
            result.add(f"{key}.ci_low", pc.ci_low, STATS_CI + f"; {what}")
            result.add(f"{key}.ci_high", pc.ci_high, STATS_CI + f"; {what}")
            result.add(f"{key}.wilcoxon_p", pc.p_wilcoxon, STATS_W + f"; {what}")
            result.add(f"{key}.n_units", pc.n_units, f"reference prompts in that comparison "
                       f"({pc.n_dropped} dropped: an excluded value in one of the two)")

    # The verdict: a bounded read-out's onset, not the max-slope sharpness.
    value, med, lo, hi, n_v = verdict(unit_values("jump_js", "across").values,
                                      rng=_seed(ctx, "verdict"))
    result.add("across.jump_js_ci_low", lo, "lower end of the 95% bootstrap interval over "
               "reference prompts of the median jump width of other-cluster paths")
    result.add("across.jump_js_ci_high", hi, "upper end of that interval")
    result.add("plateau_like", value, VERDICT_DEFINITION + f" ({n_v} references)")

    for name in ("within", "across", "within_far"):
        crossed = cross[:, p[name]] < cfg.n_steps
        result.add(f"frac_crossing_{name}", crossed.float().mean(),
                   f"fraction of {name} paths whose KL exceeds kl_threshold = "
                   f"{cfg.kl_threshold} nats anywhere along the path")
        a = steps[cross[:, p[name]].clamp(max=cfg.n_steps - 1)][crossed]
        result.add(f"crossing_alpha_{name}", _median(a) if len(a) else float("nan"),
                   f"median alpha (0..1) of the first step with KL > {cfg.kl_threshold} nats, "
                   f"over {name} paths that cross (plateau length as a fraction of the path)")
    # KL(p_ref || p_partner) in nats between the clean next-token distributions
    lp_ref = logprobs[torch.as_tensor(ref)]
    kl_w = kl_divergence(lp_ref, logprobs[torch.as_tensor(pairs["within"])])
    kl_a = kl_divergence(lp_ref, logprobs[torch.as_tensor(pairs["across"])])
    result.add("clean_kl_within", _median(kl_w), "median KL(p_ref || p_partner) in nats "
               "between the clean next-token distributions of same-cluster pairs")
    result.add("clean_kl_across", _median(kl_a), "median KL(p_ref || p_partner) in nats "
               "between the clean next-token distributions of other-cluster pairs")
    result.add("endpoint_kl_within", _median(res.kl[:, p["within"], -1]),
               "median KL(clean || alpha = 1) in nats of same-cluster paths (compare the KL "
               f"floor {FLOORS['kl']}: paths below it are excluded from the normalised metrics)")
    result.add("endpoint_kl_across", _median(res.kl[:, p["across"], -1]),
               f"median KL(clean || alpha = 1) in nats of other-cluster paths: the reference "
               f"prompt with the partner's {site} activation at the last position (earlier "
               f"positions unchanged)")
    result.add("endpoint_js_across", _median(res.js[:, p["across"], -1]),
               "median JS(clean || alpha = 1) in nats (at most ln 2 = 0.693) of other-cluster "
               "paths")
    result.add("endpoint_transfer_across",
               _median(res.kl[:, p["across"], -1] / kl_a.clamp_min(1e-9)),
               "median over other-cluster pairs of KL(clean || alpha = 1) / KL(p_ref || "
               "p_partner): about 1 when patching the last position alone carries the "
               "partner's output state")
    d_w = (t["within"] - xr).norm(dim=-1)
    result.add("act_distance_within", _median(d_w), f"median L2 distance at {site} between "
               "the activations of same-cluster pairs")
    result.add("act_distance_across", _median(dist_across), f"median L2 distance at {site} "
               "between the activations of other-cluster pairs (also the length of the "
               "within_far paths)")
    result.add("n_pair_references", n_units, "distinct reference prompts of the pair paths "
               "(the units of every paired comparison)")

    def bands(curves: Any) -> dict:
        return {name: _nanmedian_curve(curves[:, p[name]]) for name in PATHS}

    js_norm = torch.where(per["excluded_js"][..., None], torch.full_like(res.js, math.nan),
                          res.js / res.js[..., -1:])
    details["plateaus"] = {
        "paths": list(PATHS), "path_descriptions": PATH_DESCRIPTIONS,
        "steps": steps.tolist(), "jump_max": JUMP_MAX,
        "per_path": {m: {name: per[m][:, p[name]].tolist() for name in PATHS}
                     for m in ("sharpness_kl", "jump_js", "onset10_js", "onset50_js")},
        "median_curve": {"kl": bands(res.kl), "js": bands(res.js)},
        "median_normalised_curve": {"js": bands(js_norm)},
        "comparisons": comparisons,
        "n_forwards": res.n_forwards, "kl_threshold": cfg.kl_threshold,
    }
    tensors.update({
        "pairs_ref": torch.as_tensor(ref),
        **{f"pairs_{name}": torch.as_tensor(pairs[name]) for name in
           ("within", "across", "null_within", "null_across")},
        "null_labels": torch.as_tensor(null_labels),
        "sweep_kl": res.kl, "sweep_l2": res.l2, "sweep_js": res.js,
        "sweep_tv": res.tv, "sweep_steps": steps,
        **{f"path_{m}": per[m].float() for m in ("sharpness_kl", "sharpness_l2", "onset10_js",
                                                 "onset50_js", "jump_js", "loglog_slope_js")},
    })


def _nanmedian_curve(curves: Any) -> list[float]:
    """Median over paths (NaN paths left out) at every step."""
    return torch.nanmedian(curves.double(), dim=0).values.tolist()
