"""Metrics (each with its definition), details and artifacts of a sensitive-directions run."""

from __future__ import annotations

from typing import Any

from mi_ideas import IdeaResult

from ..common.curves import DEFINITIONS as D
from . import analysis as A
from .families import DEFINITIONS as FAMILY_DEFINITIONS
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


def build_result(*, config: Any, names: list[str], kl: dict, kl_err: dict, t_cross: dict,
                 curv: dict, steps: Any, x_norm: float, t_max: float, t_small: float,
                 err_norm: Any, dead: int, n_latents: int, n_pool: int, skipped: dict,
                 opt: dict, sae: Any, freq: Any, dirs: dict, site: str,
                 x: Any) -> SensitiveDirectionsResult:
    import torch

    base, sae_fam = config.baseline_family, config.sae_family
    result = SensitiveDirectionsResult()
    result.add("x_norm_median", x_norm, "median (the lower middle value) over prompts of "
               f"||x||, the L2 norm of the reference activation at {site}, last position")
    result.add("t_max", t_max, "largest perturbation length swept: t_max_rel * x_norm_median")
    result.add("t_small", t_small,
               "the small step t_s of the curvature: small_t_rel * x_norm_median")
    result.add("kl_threshold", config.kl_threshold,
               "KL (nats) whose first crossing defines t_cross")
    result.add("n_prompts", len(x), "reference prompts (last-token activations x)")
    result.add("n_pool_tokens", n_pool,
               "pool activations (every token but BOS of the pool texts)")
    result.add("n_dead_latents", dead,
               f"SAE latents (of {n_latents}) that never fire on the pool")
    result.add("error_norm_median", _med(err_norm), "median over prompts of ||x - x_hat||, "
               "x_hat the SAE reconstruction of x")

    summaries, comparisons = {}, {}
    for f in names:
        s_t, s_c = A.summary(t_cross[f]), A.summary(curv[f])
        summaries[f] = {"t_cross": s_t, "curvature": s_c,
                        "kl_at_error_norm": A.summary(kl_err[f])}
        result.add(f"{f}_t_cross_median", s_t["median"],
                   f"median over (prompt, path) of {T_CROSS} Family {f}: "
                   f"{FAMILY_DEFINITIONS[f]}")
        result.add(f"{f}_t_cross_iqr", s_t["iqr"], f"interquartile range (q75 - q25) of {f}'s "
                   "t_cross (inf when more than a quarter never cross)")
        result.add(f"{f}_censored_frac", s_t["censored_frac"], f"fraction of {f}'s paths whose "
                   "KL never exceeds kl_threshold up to t_max")
        result.add(f"{f}_curvature_median", s_c["median"],
                   f"median over (prompt, path) of {CURV}")
        result.add(f"{f}_error_matched_kl_median", summaries[f]["kl_at_error_norm"]["median"],
                   f"median over (prompt, path) of KL at t = ||x - x_hat|| (each prompt's own "
                   f"SAE error norm) along {f}")
        if f != base:
            c = A.compare(t_cross[f], t_cross[base])
            comparisons[f] = c
            result.add(f"{f}_ks_vs_{base}", A.ks(t_cross[f], t_cross[base]),
                       D["ks"] + f" between the t_cross samples of {f} and {base}")
            result.add(f"{f}_mannwhitney_p_vs_{base}", c["mannwhitney_p"], "two-sided "
                       f"Mann-Whitney U p-value of t_cross[{f}] vs t_cross[{base}] (paths pooled "
                       "over prompts)")
            result.add(f"{f}_auc_vs_{base}", c["auc"], f"P(t_cross of a {f} path < that of a "
                       f"{base} path) + 0.5 P(tie), over all pairs (Mann-Whitney U / (n1 n2)); "
                       f"> 0.5 = {f} more sensitive")
    ks_matrix = {f: {g: A.ks(t_cross[f], t_cross[g]) for g in names} for f in names}
    if "real" in names and "isotropic" in names:
        result.add("ks_real_vs_isotropic", ks_matrix["real"]["isotropic"],
                   D["ks"] + " between the t_cross samples of real and isotropic")

    # The headline question.
    c = comparisons[sae_fam]
    c_curv = _med(curv[sae_fam]) / _med(curv[base])
    sig = c["mannwhitney_p"] < 0.05
    verdict = (1.0 if c["auc"] > 0.5 else -1.0) if sig else 0.0
    result.add("sae_vs_baseline_auc", c["auc"], f"P(t_cross[{sae_fam}] < t_cross[{base}]) + "
               "0.5 P(tie) over all path pairs (Mann-Whitney); > 0.5 = SAE directions more "
               "sensitive")
    result.add("sae_vs_baseline_mannwhitney_p", c["mannwhitney_p"], "two-sided Mann-Whitney U "
               f"p-value of t_cross[{sae_fam}] vs t_cross[{base}] (paths pooled over prompts)")
    result.add("sae_vs_baseline_median_ratio", c["median_ratio"], f"median t_cross[{sae_fam}] "
               f"/ median t_cross[{base}]; < 1 = SAE directions cross earlier")
    result.add("sae_vs_baseline_prompt_frac", c["prompt_frac"], "fraction of prompts whose "
               f"median t_cross over {sae_fam} paths is below that over {base} paths (ties "
               "count 1/2)")
    result.add("sae_vs_baseline_wilcoxon_p", c["wilcoxon_p"], "two-sided Wilcoxon signed-rank "
               "p-value of the per-prompt log ratio of those medians (paired by prompt)")
    result.add("sae_vs_baseline_ks", A.ks(t_cross[sae_fam], t_cross[base]),
               D["ks"] + f" between t_cross[{sae_fam}] and t_cross[{base}]")
    result.add("sae_vs_baseline_curvature_ratio", c_curv, f"median curvature[{sae_fam}] / "
               f"median curvature[{base}]; > 1 = SAE directions more sensitive at small t")
    result.add("sae_more_sensitive", verdict, "+1: SAE directions cross earlier than the "
               "baseline (AUC > 0.5, Mann-Whitney p < 0.05); -1: later (AUC < 0.5, p < 0.05); "
               "0: no significant difference")
    word = {1.0: "MORE", -1.0: "LESS", 0.0: "NOT SIGNIFICANTLY MORE OR LESS"}[verdict]
    answer = (f"{sae_fam} directions are {word} sensitive than {base}: AUC P(t_{sae_fam} < "
              f"t_{base}) = {c['auc']:.3f} (Mann-Whitney p = {c['mannwhitney_p']:.2g}), median "
              f"t_cross {summaries[sae_fam]['t_cross']['median']:.3g} vs "
              f"{summaries[base]['t_cross']['median']:.3g}, prompts with earlier SAE crossing "
              f"{c['prompt_frac']:.2f} (Wilcoxon p = {c['wilcoxon_p']:.2g}), small-step "
              f"curvature ratio {c_curv:.3g}.")

    others = []
    for f in names:
        if f.startswith("sae_") and f not in (sae_fam, base) and f in comparisons:
            o = comparisons[f]
            w = (("MORE" if o["auc"] > 0.5 else "LESS") if o["mannwhitney_p"] < 0.05
                 else "not significantly different")
            others.append(f"{f} {w} (AUC {o['auc']:.3f}, p = {o['mannwhitney_p']:.2g})")
    if others:
        answer += f" Other SAE families vs {base}: " + "; ".join(others) + "."
    for f, why in skipped.items():
        answer += f" {f} skipped: {why}."

    # Gurnee 2024: the KL of splicing in x_hat against random perturbations of equal length.
    if "sae_error" in names:
        splice = kl_err["sae_error"][:, 0]
        result.add("splice_kl_median", _med(splice), "median over prompts of KL(clean || "
                   "x replaced by x_hat), i.e. sae_error at t = ||x - x_hat||")
        for ref in dict.fromkeys((base, "isotropic")):
            if ref in names:
                ratio = splice / torch.quantile(kl_err[ref], 0.5, dim=-1).clamp_min(1e-12)
                result.add(f"splice_vs_{ref}_kl_ratio", _med(ratio), "median over prompts of "
                           f"KL(splice x_hat) / (median over {ref} paths of KL at the same "
                           "length ||x - x_hat||); Gurnee's 'pathological error' ratio (1 = as "
                           "harmful as that random direction)")

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
        "optimised": opt_details,
    }
    result.details = details
    return result


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
    for ref in dict.fromkeys((base, "isotropic")):
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
