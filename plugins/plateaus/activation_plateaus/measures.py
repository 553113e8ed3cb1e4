"""What activation-plateaus measures and how it records it: prompts and pool, per-path and
per-prompt metrics, paired comparisons, the radial option (torch)."""

from __future__ import annotations

from typing import Any

import torch

from mi_ideas import IdeaResult, RunContext
from mi_ideas.dictionaries import site_of
from mi_ideas.errors import UsageError

from ..common import directions as dirs
from ..common.curves import (DEFINITIONS as D, FLOORS, first_crossing, loglog_slope, onset,
                             sharpness_with_floor)
from mi_ideas.stats import DEFINITIONS as SD, paired_comparison
from . import families as F
from .config import TARGET_FAMILIES, PlateauConfig

#: onset-50% − onset-10% at most this (a fraction of the path) counts as a step-like rise
STEP_WIDTH = 0.1
RELATIVE = "; relative steps: α = 0..1 along the path from x to its target"
PER_PROMPT = ("; per prompt the median over its n_paths paths, then the median over prompts "
              "(excluded paths left out)")
STEP_LIKE = (f"step-like fraction: the fraction of non-excluded paths whose JS rises from 10% "
             f"to 50% of its endpoint within {STEP_WIDTH} of the path (onset50_js − onset10_js "
             f"≤ {STEP_WIDTH}): a plateau followed by a jump gives ≈ 1, a smooth (quadratic) "
             f"response 0 (its gap is ≈ 0.39)")
COS_TARGET = ("cos(t − x, x) between the path's direction t − x and its reference x, over all "
              "paths of the family (target paths are not changed by the radial option)")


def crossing_text(config: PlateauConfig) -> str:
    return (D["crossing"] + f"; threshold kl_threshold = {config.kl_threshold} nats; absolute "
            f"steps: step k is k · abs_max_distance / (n_steps − 1) median real-pair "
            f"distances from x (abs_max_distance = {config.abs_max_distance}, n_steps = "
            f"{config.n_steps})")


# -- prompts and pool ----------------------------------------------------------------------


def distinct_prompts(ctx: RunContext, config: PlateauConfig) -> tuple[Any, Any, dict]:
    """(references, pool, counts): ``n_prompts`` distinct prompts of exactly
    ``prompt_tokens`` tokens, then ``n_pool`` more, each distinct from every reference and
    from each other (exact token-id duplicates are skipped and counted)."""
    subject = ctx.subject
    seen: set[tuple[int, ...]] = set()
    ref: list[Any] = []
    pool: list[Any] = []
    dup = 0
    for text in ctx.dataset.texts:
        ids = subject.tokenize(text, max_length=config.prompt_tokens).input_ids[0]
        if len(ids) != config.prompt_tokens:
            continue
        key = tuple(ids.tolist())
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        (ref if len(ref) < config.n_prompts else pool).append(ids)
        if len(pool) == config.n_pool:
            break
    if len(pool) < config.n_pool:
        raise UsageError(
            f"n_prompts={config.n_prompts} and n_pool={config.n_pool} need "
            f"{config.n_prompts + config.n_pool} distinct prompts of {config.prompt_tokens} "
            f"tokens, but the dataset {ctx.dataset.spec!r} has only {len(ref) + len(pool)} "
            f"({dup} exact duplicates skipped): lower n_prompts or n_pool, or use a larger "
            f"dataset (e.g. --data zoo:stories).")
    counts = {"n_references": len(ref), "n_pool": len(pool), "duplicates_skipped": dup}
    return (subject.batch_from_ids(torch.stack(ref)), subject.batch_from_ids(torch.stack(pool)),
            counts)


def pool_activations(subject: Any, batch: Any, sites: list[str], chunk: int = 256
                     ) -> dict[str, Any]:
    """Last-position activations of the pool prompts at every site, one forward per chunk."""
    parts = [subject.activations(subject.batch_from_ids(batch.input_ids[i:i + chunk]), sites,
                                 positions="last") for i in range(0, len(batch), chunk)]
    return {s: torch.cat([p[s] for p in parts]).float() for s in sites}


def fit_pool(acts: Any, x: Any) -> Any:
    """The pool's Gaussian fit on its distinct rows, without rows equal to a reference
    activation (distinct prompts almost never give equal activations; checked, counted)."""
    return dirs.Pool.fit(acts, exclude=x)


def _sae_at(ctx: RunContext, site: str) -> Any:
    for sae in ctx.saes:
        try:
            if ctx.subject.site(site_of(sae)).name == ctx.subject.site(site).name:
                return sae
        except UsageError:  # the dictionary names a site this model does not have
            continue
    return None


# -- metrics -------------------------------------------------------------------------------


def per_prompt(v: Any) -> Any:
    """Median over paths (dim 1), NaN paths left out: one value per prompt."""
    return torch.nanmedian(torch.as_tensor(v, dtype=torch.float64), dim=1).values


def _med(v: Any) -> float:
    v = torch.as_tensor(v, dtype=torch.float64)
    v = v[torch.isfinite(v)]
    return float(v.median()) if len(v) else float("nan")


class Recorder:
    """Adds metrics and prompt-level paired comparisons to a result."""

    def __init__(self, result: IdeaResult, ctx: RunContext):
        self.result, self.ctx = result, ctx
        result.details.setdefault("comparisons", {})

    def add(self, name: str, value: Any, definition: str) -> None:
        self.result.add(name, value, definition)

    def compare(self, name: str, a: Any, b: Any, a_words: str, b_words: str, what: str) -> None:
        """Paired comparison over prompts of per-prompt values ``b`` against ``a``."""
        a = torch.as_tensor(a, dtype=torch.float64).numpy()
        b = torch.as_tensor(b, dtype=torch.float64).numpy()
        try:
            c = paired_comparison(a, b, test="wilcoxon", rng=self.ctx.rng_for(f"cmp:{name}"))
        except ValueError as exc:
            self.result.details["comparisons"][name] = f"not computed: {exc}"
            return
        about = f"; B = {b_words}, A = {a_words}; per-prompt values: {what}"
        self.add(f"{name}.mean_diff", c.mean_diff, SD["mean_diff"] + about)
        self.add(f"{name}.ci_low", c.ci_low, "lower end of the " + SD["ci95"] + about)
        self.add(f"{name}.ci_high", c.ci_high, "upper end of the " + SD["ci95"] + about)
        self.add(f"{name}.p_wilcoxon", c.p_wilcoxon, SD["wilcoxon_p"] + about)
        self.add(f"{name}.n_units", c.n_units, SD["n_units"] + about)
        self.result.details["comparisons"][name] = {**c.as_dict(), "describe": c.describe(),
                                                    "a": a_words, "b": b_words}

    def cos(self, prefix: str, cos: Any, words: str) -> None:
        cos = torch.as_tensor(cos, dtype=torch.float64).flatten()
        self.add(f"{prefix}.cos_x_mean", cos.mean(), "mean of " + words)
        self.add(f"{prefix}.cos_x_std", cos.std() if len(cos) > 1 else 0.0,
                 "standard deviation of " + words)


def relative_metrics(rec: Recorder, prefix: str, res: Any, words: str) -> dict[str, Any]:
    """Onset (JS), log–log slope (JS), step-like fraction, sharpness (L2, KL), n_excluded of a
    relative-step sweep; returns the per-path values."""
    steps = res.steps
    floor = FLOORS["js"]
    o10 = onset(res.js, steps, 0.1, floor)
    o50 = onset(res.js, steps, 0.5, floor)
    slope = loglog_slope(res.js, steps, floor=floor)
    s_l2, _, n_ex_l2 = sharpness_with_floor(res.l2, steps, FLOORS["l2"])
    s_kl, _, _ = sharpness_with_floor(res.kl, steps, FLOORS["kl"])
    n_paths = int(res.js[..., -1].numel())
    valid = torch.isfinite(o10) & torch.isfinite(o50)
    n_ex = int((~valid).sum())
    step_like = ((o50 - o10) <= STEP_WIDTH + 1e-9) & valid
    w = words + RELATIVE + PER_PROMPT
    rec.add(f"{prefix}.onset10_js_median", _med(per_prompt(o10)), D["onset10_js"] + w)
    rec.add(f"{prefix}.onset50_js_median", _med(per_prompt(o50)), D["onset50_js"] + w)
    rec.add(f"{prefix}.loglog_slope_js_median", _med(per_prompt(slope)), D["loglog_slope_js"] + w)
    rec.add(f"{prefix}.step_like_fraction",
            float(step_like.sum()) / max(int(valid.sum()), 1) if int(valid.sum()) else float("nan"),
            STEP_LIKE + "; " + words + RELATIVE)
    rec.add(f"{prefix}.sharpness_median", _med(per_prompt(s_l2)), D["sharpness_l2"] + "; "
            + D["sharpness_floored"].split("; ")[-1] + w)
    rec.add(f"{prefix}.sharpness_kl_median", _med(per_prompt(s_kl)), D["sharpness_kl"] + "; "
            + D["sharpness_floored"].split("; ")[-1] + w)
    rec.add(f"{prefix}.n_excluded", n_ex, D["n_excluded"] + f"; read-out JS, floor {floor} "
            f"nats; of {n_paths} paths; " + words)
    rec.add(f"{prefix}.n_excluded_l2", n_ex_l2, D["n_excluded"] + f"; read-out L2, floor "
            f"{FLOORS['l2']}; of {n_paths} paths; " + words)
    return {"onset10": o10, "onset50": o50, "loglog_slope": slope, "sharpness_l2": s_l2,
            "sharpness_kl": s_kl}


def crossing_metrics(rec: Recorder, prefix: str, kl: Any, config: PlateauConfig, words: str
                     ) -> Any:
    """Median / mean over prompts of the per-prompt median crossing step; returns per-prompt."""
    cross = first_crossing(kl, config.kl_threshold).double()
    pp = per_prompt(cross)
    w = crossing_text(config) + "; " + words
    rec.add(f"{prefix}.crossing_median", pp.median(), w + PER_PROMPT)
    rec.add(f"{prefix}.crossing_mean", pp.mean(), w + "; per prompt the median over its "
            "paths, then the mean over prompts")
    rec.add(f"{prefix}.never_crossed_fraction", (cross >= kl.shape[-1]).double().mean(),
            "fraction of paths whose KL never exceeds kl_threshold within the n_steps steps "
            "(their crossing is censored at n_steps); " + words)
    return pp


# -- families ------------------------------------------------------------------------------


def draw(config: PlateauConfig, fams: list[str], x: Any, pool: Any, sae: Any, freq: Any,
         ctx: RunContext, tag: str = "") -> tuple[dict, dict, Any]:
    """Targets of the target families, raw directions of the direction families (before the
    radial option), and the pooled raw cos(d, x) of the direction families."""
    targets, raw = {}, {}
    for fam in fams:
        if fam in TARGET_FAMILIES:
            key = "toward_real" if fam == "toward_real_arc" else fam
            targets[fam] = F.targets(fam, x, pool, config.n_paths,
                                     ctx.generator_for(f"{tag}family:{key}"), sae=sae, freq=freq)
        else:
            raw[fam] = F.raw_directions(fam, x, pool, config.n_paths,
                                        ctx.generator_for(f"{tag}family:{fam}"), sae=sae,
                                        freq=freq, sae_sign=config.sae_sign)
    pooled = (torch.cat([F.cos_with_x(d, x).flatten() for d in raw.values()])
              if raw else torch.zeros(0))
    return targets, raw, pooled


def radial(config: PlateauConfig, d: Any, x: Any, ctx: RunContext, name: str,
           target_cos: Any) -> Any:
    if config.radial == "match" and len(target_cos) == 0:
        target_cos = F.cos_with_x(d, x).flatten()
    return F.apply_radial(d, x, config.radial, ctx.generator_for(f"radial:{name}"),
                          target_cos=target_cos if config.radial == "match" else None)


def radial_words(config: PlateauConfig) -> str:
    words = dirs.RADIAL_DEFINITIONS[config.radial]
    if config.radial == "match":
        words += " (here: the raw cos(d, x) of the run's direction families, pooled)"
    return words


# -- the run -------------------------------------------------------------------------------


def dirs_cos_words(config: PlateauConfig) -> str:
    return dirs.COS_X_DEFINITION + "; " + radial_words(config)


def _normalised(curves: Any, floor: float) -> Any:
    """d(α) / d(α_max), NaN for the paths whose endpoint is below the floor (excluded)."""
    end = curves[..., -1:]
    return curves / torch.where(end >= floor, end, torch.full_like(end, float("nan")))


def _bands(x: Any) -> dict[str, list[float]]:
    flat = x.reshape(-1, x.shape[-1]).double()
    q = torch.nanquantile(flat, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
    return {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist()}
