"""Metrics (each with its definition), details and artifacts of a sensitive-directions run."""

from __future__ import annotations

from typing import Any

from mi_ideas import IdeaResult

from ..common.curves import DEFINITIONS as D
from . import analysis as A
from .families import DEFINITIONS as FAMILY_DEFINITIONS, NO_RADIAL
from .result import SensitiveDirectionsResult

T_CROSS = ("t_cross: the perturbation length t (L2 norm of the added vector, in residual-"
           "stream units) at which KL(clean || perturbed) of the next token, last position, "
           "first exceeds kl_threshold nats, linearly interpolated between the grid steps "
           "around the crossing; inf (censored) if it never does up to t_max. Smaller = more "
           "sensitive.")
CURV = ("curvature: KL(t_s) / t_s^2 at the small step t_s = small_t_rel * median ||x|| "
        "(nats per squared unit); KL ~ (1/2) d^T F d t^2 near 0, so this estimates half the "
        "Fisher quadratic form along d. Larger = more sensitive.")


def _med(v: Any) -> float:
    """The median (mean of the two middle values for an even count; inf-aware)."""
    return A.summary(v)["median"]


COMPARE = ("paired over prompts: per prompt, the median t_cross over the family's paths and "
           "over the baseline's (a median that never crosses is set to t_cap = t_max (1 + 1 / "
           "n_steps), just beyond the grid; prompts where neither crosses are dropped); the "
           "per-prompt log ratio log(t_family / t_baseline), Wilcoxon signed-rank test over "
           "prompts (two-sided), 95% percentile bootstrap interval over prompts of its mean")


def build_result(*, config: Any, names: list[str], kl: dict, kl_err: dict, t_cross: dict,
                 curv: dict, steps: Any, x_norm: float, t_max: float, t_small: float,
                 err_norm: Any, dead: int, n_latents: int, n_pool: int, skipped: dict,
                 opt: dict, sae: Any, freq: Any, dirs: dict, site: str, x: Any,
                 pool: Any = None, n_pool_raw: int | None = None, raw: dict | None = None,
                 target_cos: Any = None, seed_for: Any = None) -> SensitiveDirectionsResult:
    import torch

    from ..common.directions import COS_X_DEFINITION, RADIAL_DEFINITIONS, add_cos_x, cos_x_stats

    base, sae_fam = config.baseline_family, config.sae_family
    radial = config.radial
    result = SensitiveDirectionsResult()
    result.add("x_norm_median", x_norm, "median (the lower middle value) over prompts of "
               f"||x||, the L2 norm of the reference activation at {site}, last position")
    result.add("t_max", t_max, "largest perturbation length swept: t_max_rel * x_norm_median")
    result.add("t_small", t_small,
               "the small step t_s of the curvature: small_t_rel * x_norm_median")
    result.add("kl_threshold", config.kl_threshold,
               "KL (nats) whose first crossing defines t_cross")
    result.add("n_prompts", len(x), "reference prompts (last-token activations x; distinct "
               f"{config.prompt_tokens}-token prompts)")
    result.add("n_pool_tokens", n_pool, "pool activations: distinct rows at positions 1 .. "
               f"prompt_tokens - 1 = {config.prompt_tokens - 1} (the position class of x, story "
               "openings; BOS skipped) of the pool texts, without exact duplicates or copies "
               "of a reference")
    if pool is not None:
        result.add("n_pool_duplicates_dropped", pool.n_duplicates, "pool activations dropped "
                   "as exact duplicates of an earlier pool row (repeated story openings)")
        result.add("n_pool_reference_copies_dropped", pool.n_reference_copies, "pool "
                   "activations dropped because they equal a reference activation x exactly "
                   "(so no path pairs a reference with itself)")
    result.add("n_dead_latents", dead,
               f"SAE latents (of {n_latents}) that never fire on the pool")
    result.add("error_norm_median", _med(err_norm), "median over prompts of ||x - x_hat||, "
               "x_hat the SAE reconstruction of x")
    radial_text = RADIAL_DEFINITIONS[radial] + ("" if radial != "match" else (
        f"; reference cosines: cos(d, x) of every family's raw paths pooled ({len(target_cos)} "
        f"values, mean {float(target_cos.mean()):.3g})"))
    result.add("radial_project", float(radial == "project"), "1 if radial=project (every "
               "family's component along x removed), else 0; " + radial_text)

    cap = t_max * (1 + 1 / config.n_steps)
    summaries, comparisons = {}, {}
    for f in names:
        s_t, s_c = A.summary(t_cross[f]), A.summary(curv[f])
        summaries[f] = {"t_cross": s_t, "curvature": s_c,
                        "kl_at_error_norm": A.summary(kl_err[f])}
        result.add(f"{f}.t_cross_median", s_t["median"],
                   f"median over (prompt, path) of {T_CROSS} Family {f}: "
                   f"{FAMILY_DEFINITIONS[f]}")
        result.add(f"{f}.t_cross_iqr", s_t["iqr"], f"interquartile range (q75 - q25) of {f}'s "
                   "t_cross (inf when more than a quarter never cross)")
        result.add(f"{f}.censored_frac", s_t["censored_frac"], f"fraction of {f}'s paths whose "
                   "KL never exceeds kl_threshold up to t_max")
        result.add(f"{f}.curvature_median", s_c["median"],
                   f"median over (prompt, path) of {CURV}")
        result.add(f"{f}.error_matched_kl_median", summaries[f]["kl_at_error_norm"]["median"],
                   f"median over (prompt, path) of KL at t = ||x - x_hat|| (each prompt's own "
                   f"SAE error norm) along {f}")
        applied = "keep" if f in NO_RADIAL else radial
        mean, std = add_cos_x(result, f, dirs[f], x, applied)
        summaries[f]["cos_x"] = {"mean": mean, "std": std, "radial": applied}
        if raw is not None and f in raw and applied != "keep":
            raw_mean, _ = cos_x_stats(raw[f], x)
            result.add(f"{f}.cos_x_raw_mean", raw_mean, "mean of " + COS_X_DEFINITION.replace(
                "after the radial option", "before the radial option (the family as defined)")
                + f"; family {f}")
        if f != base:
            c = A.compare(t_cross[f], t_cross[base], cap,
                          rng=seed_for(f) if seed_for is not None else 0)
            comparisons[f] = c
            result.add(f"{f}.vs_{base}.ratio", c["ratio"], f"exp(mean over prompts of log("
                       f"t_{f} / t_{base})): the geometric-mean ratio of the per-prompt median "
                       f"crossing lengths; < 1 = {f} crosses earlier (more sensitive); {COMPARE}")
            result.add(f"{f}.vs_{base}.ratio_ci_low", c["ratio_ci_low"], "lower end of the 95% "
                       "bootstrap interval (over prompts) of that ratio")
            result.add(f"{f}.vs_{base}.ratio_ci_high", c["ratio_ci_high"], "upper end of the "
                       "95% bootstrap interval (over prompts) of that ratio")
            result.add(f"{f}.vs_{base}.wilcoxon_p", c["wilcoxon_p"], "two-sided Wilcoxon "
                       f"signed-rank p over prompts of log(t_{f} / t_{base}) ({COMPARE})")
            result.add(f"{f}.vs_{base}.ks", A.ks(t_cross[f], t_cross[base]),
                       D["ks"] + f" between the t_cross samples of {f} and {base} (paths "
                       "pooled: descriptive only, no test)")
    ks_matrix = {f: {g: A.ks(t_cross[f], t_cross[g]) for g in names} for f in names}

    # The headline question, at the prompt level.
    c = comparisons[sae_fam]
    c_curv = _med(curv[sae_fam]) / _med(curv[base])
    verdict = c["verdict"]
    result.add("sae_vs_baseline.ratio", c["ratio"], f"exp(mean over prompts of log(t_{sae_fam} "
               f"/ t_{base})); < 1 = SAE directions cross earlier (more sensitive); {COMPARE}")
    result.add("sae_vs_baseline.ratio_ci_low", c["ratio_ci_low"],
               "lower end of the 95% bootstrap interval over prompts of that ratio")
    result.add("sae_vs_baseline.ratio_ci_high", c["ratio_ci_high"],
               "upper end of the 95% bootstrap interval over prompts of that ratio")
    result.add("sae_vs_baseline.wilcoxon_p", c["wilcoxon_p"], "two-sided Wilcoxon signed-rank "
               f"p over prompts of log(t_{sae_fam} / t_{base}) ({COMPARE})")
    result.add("sae_vs_baseline.prompt_frac", c["prompt_frac"], "fraction of prompts whose "
               f"median t_cross over {sae_fam} paths is below that over {base} paths (ties "
               "count 1/2)")
    result.add("sae_vs_baseline.n_prompts", c["n_prompts"], "prompts in that paired "
               "comparison (those where at least one of the two families crosses)")
    result.add("sae_vs_baseline.curvature_ratio", c_curv, f"median curvature[{sae_fam}] / "
               f"median curvature[{base}]; > 1 = SAE directions more sensitive at small t")
    result.add("sae_more_sensitive", verdict, f"+1: {sae_fam} crosses earlier than {base} "
               "(Wilcoxon signed-rank over prompts p < 0.05, ratio < 1); -1: later (p < 0.05, "
               "ratio > 1); 0: no significant difference")
    answer = answer_sentence(result.metrics, sae_fam, base, radial)
    for f, why in skipped.items():
        answer += f" {f} skipped: {why}."

    # Gurnee 2024: the KL of splicing in x_hat against random perturbations of equal length.
    if "dir_sae_error" in names:
        splice = kl_err["dir_sae_error"][:, 0]
        result.add("splice_kl_median", _med(splice), "median over prompts of KL(clean || "
                   "x replaced by x_hat), i.e. dir_sae_error at t = ||x - x_hat||")
        for ref in dict.fromkeys((base, "dir_isotropic")):
            if ref in names:
                ratio = splice / torch.quantile(kl_err[ref], 0.5, dim=-1).clamp_min(1e-12)
                result.add(f"splice_vs_{ref}_kl_ratio", _med(ratio), "median over prompts of "
                           f"KL(splice x_hat) / (median over {ref} paths of KL at the same "
                           "length ||x - x_hat||); Gurnee's 'pathological error' ratio (1 = as "
                           f"harmful as that random direction; {ref} with radial={radial}, "
                           "the error direction unadjusted: compare their cos_x_mean)")

    opt_details: dict[str, Any] = {}
    if opt:
        opt_details = _optimised(opt, result, sae, freq, dirs, x, base)

    curves = {}
    for f in names:
        q = torch.quantile(kl[f].reshape(-1, kl[f].shape[-1]).double(),
                           torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
        curves[f] = {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist()}
    details = {
        "site": site, "families": names, "skipped": skipped, "answer": answer,
        "steps": steps.tolist(), "curves": curves, "summaries": summaries,
        "comparisons_vs_baseline": comparisons, "ks_matrix": ks_matrix,
        "family_definitions": {f: FAMILY_DEFINITIONS[f] for f in names},
        "radial": radial, "sae_sign": config.sae_sign, "sae_family": sae_fam,
        "baseline_family": base,
        "pool_positions": f"1..{config.prompt_tokens - 1}",
        "optimised": opt_details,
    }
    result.details = details
    return result


def answer_sentence(m: dict, sae_fam: str, base: str, radial: str) -> str:
    """One sentence from the paired comparison's numbers (says "no difference" when p >= 0.05)."""
    p = m["sae_vs_baseline.wilcoxon_p"]
    ratio, lo, hi = (m[f"sae_vs_baseline.{k}"] for k in ("ratio", "ratio_ci_low", "ratio_ci_high"))
    cos_s, cos_b = m.get(f"{sae_fam}.cos_x_mean"), m.get(f"{base}.cos_x_mean")
    if m["sae_more_sensitive"] == 0.0:
        head = f"No difference: {sae_fam} directions are not significantly more or less " \
               f"sensitive than {base}"
    else:
        word = "MORE" if m["sae_more_sensitive"] > 0 else "LESS"
        head = f"{sae_fam} directions are {word} sensitive than {base}"
    return (f"{head} (radial={radial}): the per-prompt crossing length ratio t_{sae_fam} / "
            f"t_{base} is {ratio:.3g} [95% CI {lo:.3g}, {hi:.3g}], Wilcoxon signed-rank over "
            f"{int(m['sae_vs_baseline.n_prompts'])} prompts p = {p:.2g}; mean cos(d, x) "
            f"{cos_s:+.3f} vs {cos_b:+.3f}.")


def _optimised(opt: dict, result: IdeaResult, sae: Any, freq: Any, dirs: dict, x: Any,
               base: str) -> dict[str, Any]:
    import torch

    from .optimise import max_abs_cos

    u = opt["dirs"]
    w_alive = sae.W_dec.detach().float()[freq > 0]
    own = max_abs_cos(u, w_alive)
    result.add("opt_t", opt["t"],
               "length t at which KL was maximised: opt_t_rel * x_norm_median")
    result.add("opt_kl_median", _med(opt["kl"]), "median over prompts of the maximised "
               "KL(clean || x + opt_t d) of the best optimised direction d")
    result.add("opt_max_cos_sae_median", _med(own), "median over prompts of max_i |cos(d, "
               "w_i)|, d the optimised direction, w_i the decoder rows of alive SAE latents")
    out = {"max_cos_sae": own.tolist(), "kl": opt["kl"].tolist()}
    for ref in dict.fromkeys((base, "dir_isotropic")):
        if ref in dirs:
            c = max_abs_cos(dirs[ref], w_alive)
            result.add(f"opt_max_cos_{ref}_control_median", _med(c), "the same max |cos| "
                       f"with the alive decoder rows, for the {ref} directions (control: what "
                       "chance alignment of a direction of that family gives)")
            out[f"max_cos_{ref}_control"] = c.reshape(-1).tolist()
    with torch.no_grad():
        active = sae.encode(x.to(sae.W_dec.dtype)) > 0
        w = sae.W_dec.detach().float()
        cos = (u @ (w / w.norm(dim=-1, keepdim=True)).T).abs()
        act = torch.stack([cos[i][active[i]].max() for i in range(len(u))])
    result.add("opt_max_cos_active_median", _med(act), "median over prompts of max |cos| "
               "between the optimised direction and the decoder rows of the latents active "
               "at x")
    pair = (u @ u.T).abs().fill_diagonal_(float("nan"))
    result.add("opt_pairwise_cos_median", _med(pair[~pair.isnan()]), "median |cos| between "
               "the optimised directions of two different prompts (1 = one shared direction)")
    return out


def save_outputs(ctx: Any, result: IdeaResult, *, config: Any, names: list[str], kl: dict,
                 kl_err: dict, t_cross: dict, curv: dict, steps: Any, dirs: dict, x: Any,
                 x_hat: Any, freq: Any, x_norm: float, opt: dict) -> None:
    from .figures import curves_figure, optimised_figure, sensitivity_figure

    tensors = {"steps": steps, "x": x, "x_hat": x_hat, "latent_frequency": freq}
    for f in names:
        tensors[f"kl.{f}"] = kl[f]
        tensors[f"directions.{f}"] = dirs[f]
        tensors[f"t_cross.{f}"] = t_cross[f]
        tensors[f"curvature.{f}"] = curv[f]
        tensors[f"kl_at_error_norm.{f}"] = kl_err[f]
    ctx.artifacts.save_tensors("sweep", tensors, metadata={
        "kl": "KL(clean || perturbed) (n_prompts, n_paths, n_steps) along x + t d, t = steps",
        "threshold": str(config.kl_threshold)})
    ctx.artifacts.save_json("summary", {"metrics": result.metrics,
                                        "answer": result.details["answer"],
                                        "summaries": result.details["summaries"]})
    ctx.artifacts.save_figure("kl_curves", curves_figure(result.details, x_norm,
                                                         config.kl_threshold))
    ctx.artifacts.save_figure("sensitivity", sensitivity_figure(t_cross, curv, kl_err, x_norm))
    if opt:
        ctx.artifacts.save_figure("optimised", optimised_figure(result.details["optimised"]))
