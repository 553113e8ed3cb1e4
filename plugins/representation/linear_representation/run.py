"""The linear-representation pipeline: render the grid and the ladder, read the sites at the
chosen token, fit and score (torch only for the model calls; the analysis is numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mi_ideas import RunContext

from ..common.additive import fit_additive, interactions, loco_scores, shuffled_r2
from ..common.grids import GridPrompts, render_grid, slot_token_index
from ..common.ladders import ladder_scores
from .config import LinearRepresentationConfig
from .definitions import definition
from .result import LinearRepresentationResult


def prompts_of(config: LinearRepresentationConfig) -> tuple[GridPrompts, GridPrompts | None]:
    """The grid's and the ladder's rendered prompts (the ladder's cells: level-major)."""
    g = config.grid
    grid = render_grid(g.template, g.slots, g.contexts, config.position)
    lad = config.ladder
    if lad is None:
        return grid, None
    slots = {lad.level_slot: lad.slots[lad.level_slot],
             lad.concept_slot: lad.slots[lad.concept_slot]}
    return grid, render_grid(lad.template, slots, lad.contexts, lad.position)


def token_indices(tokenizer: Any, prompts: GridPrompts, slot: str) -> list[int] | None:
    """Per prompt, the index of the read token among the prompt's tokens (no BOS); None for
    position ``last``. A slot value that is not whole tokens is a ConfigError."""
    if prompts.slot_end is None:
        return None
    values = _slot_values(prompts, slot)
    return [slot_token_index(tokenizer, t, e, slot=slot, value=v)
            for t, e, v in zip(prompts.texts, prompts.slot_end, values)]


def _slot_values(prompts: GridPrompts, slot: str) -> list[str | None]:
    """The value of ``slot`` in each prompt (None for a context slot: named from the text)."""
    if slot not in prompts.slot_names:
        return [None] * len(prompts.texts)
    s = prompts.slot_names.index(slot)
    return [prompts.slot_values[s][lv[s]] for lv in prompts.levels
            for _ in range(prompts.n_contexts)]


def read(subject: Any, texts: list[str], index: list[int] | None, sites: list[str],
         batch_size: int, progress: Any = None, desc: str = "") -> dict[str, np.ndarray]:
    """Activations (n_prompts, d) at ``sites``, read at each prompt's token ``index`` (the
    last token when None), one forward (one remote request) per batch."""
    import torch

    out: dict[str, list] = {s: [] for s in sites}
    starts = range(0, len(texts), batch_size)
    for start in (progress(starts, desc=desc) if progress else starts):
        chunk = texts[start:start + batch_size]
        batch = subject.tokenize(chunk)
        if index is None:
            positions: Any = "last"
        else:
            width = batch.shape[1]
            positions = torch.zeros(batch.shape, dtype=torch.bool)
            for row, (text, j) in enumerate(zip(chunk, index[start:start + batch_size])):
                n_ids = len(subject.tokenizer(text, add_special_tokens=False)["input_ids"])
                positions[row, width - n_ids + j] = True
        acts = subject.forward(batch, read=sites, positions=positions).activations
        for s in sites:
            out[s].append(acts[s].detach().double().cpu().numpy().reshape(len(chunk), -1))
    return {s: np.concatenate(v) for s, v in out.items()}


def analyse_grid(acts: np.ndarray, prompts: GridPrompts, *, rng: Any = None,
                 n_shuffles: int = 0) -> dict[str, Any]:
    """Every grid score of one site's activations ((n_cells * n_contexts, d), cell-major)."""
    n_c, k = prompts.n_cells, prompts.n_contexts
    obs = acts.reshape(n_c, k, -1)
    cells = obs.mean(1)
    levels = np.asarray(prompts.levels)
    n_levels = [len(v) for v in prompts.slot_values]
    fit = fit_additive(cells, levels, n_levels)
    cos, hit = loco_scores(cells, fit.loco)
    out: dict[str, Any] = {
        "additive_r2": fit.r2, "shares": dict(zip(prompts.slot_names, fit.shares)),
        "loco_cosine": float(cos.mean()), "loco_nn_accuracy": float(hit.mean()),
        "cell_fit": fit.cell_fit, "n_params": fit.n_params,
    }
    if k >= 2:
        out["interactions"], out["context_noise_share"] = interactions(
            obs, levels, n_levels, prompts.slot_names)
    if n_shuffles:
        out["shuffled_r2"], out["shuffled_cell_fit"], out["chance"] = shuffled_r2(
            cells, levels, n_levels, rng, n_shuffles)
    return out


def ladder_array(acts: np.ndarray, prompts: GridPrompts) -> np.ndarray:
    """(n_prompts, d) ladder activations as (levels, concepts, contexts, d)."""
    n_l, n_c = (len(v) for v in prompts.slot_values)
    return acts.reshape(n_l, n_c, prompts.n_contexts, -1)


def run(ctx: RunContext, config: LinearRepresentationConfig) -> LinearRepresentationResult:
    """The whole run on one BLAS and one torch thread: the fits are many small matrix
    products, which ran 14x slower with a thread pool on a shared 2-core machine (and one
    thread makes the numbers reproducible)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), ctx.torch_threads(1):
        return _run(ctx, config)


def _run(ctx: RunContext, config: LinearRepresentationConfig) -> LinearRepresentationResult:
    import torch

    from mi_ideas.stats import paired_comparison

    subject = ctx.subject
    sites = [subject.site(s).name for s in config.sites]
    grid, ladder = prompts_of(config)
    g_index = token_indices(subject.tokenizer, grid, config.position)
    l_index = None if ladder is None else token_indices(subject.tokenizer, ladder,
                                                        config.ladder.position)
    ctx.log(f"linear-representation: grid of {grid.n_cells} cells x {grid.n_contexts} contexts"
            + ("" if ladder is None else f", ladder of {ladder.n_cells} (level, concept) x "
               f"{ladder.n_contexts} contexts") + f" at {', '.join(sites)}")

    def measure(model: Any, tag: str) -> tuple[dict, dict]:
        g = read(model, grid.texts, g_index, sites, config.batch_size, ctx.progress,
                 f"{tag} grid")
        lad = None if ladder is None else read(model, ladder.texts, l_index, sites,
                                               config.batch_size, ctx.progress, f"{tag} ladder")
        return g, lad

    acts, lad_acts = measure(subject, "model")
    result = LinearRepresentationResult()

    def add(name: str, value: Any) -> None:
        result.add(name, value, definition(name))

    add("n_cells", grid.n_cells)
    add("n_contexts", grid.n_contexts)
    add("loco_nn_chance", 1.0 / grid.n_cells)
    details: dict[str, Any] = {"sites": sites, "slots": grid.slot_names,
                               "headline_site": sites[-1], "grid": {}, "ladder": {}}
    scores: dict[str, dict] = {}
    for site in sites:
        a = analyse_grid(acts[site], grid, rng=ctx.rng_for(f"shuffle:{site}"),
                         n_shuffles=config.n_shuffles)
        scores[site] = a
    add("n_params", scores[sites[0]]["n_params"])
    add("shuffled.additive_r2_chance", scores[sites[0]]["chance"])
    for site, a in scores.items():
        add(f"{site}.additive_r2", a["additive_r2"])
        for slot, share in a["shares"].items():
            add(f"{site}.share.{slot}", share)
        add(f"{site}.loco_cosine", a["loco_cosine"])
        add(f"{site}.loco_nn_accuracy", a["loco_nn_accuracy"])
        for pair, v in a.get("interactions", {}).items():
            add(f"{site}.interaction.{pair}.share", v["share"])
            add(f"{site}.interaction.{pair}.f_ratio", v["f_ratio"])
        if "context_noise_share" in a:
            add(f"{site}.context_noise_share", a["context_noise_share"])
        add(f"shuffled.{site}.additive_r2", a["shuffled_r2"])
        details["grid"][site] = {k: v for k, v in a.items()
                                 if k not in ("cell_fit", "shuffled_cell_fit")}

    lad_scores: dict[str, Any] = {}
    if ladder is not None:
        add("ladder.n_concepts", len(ladder.slot_values[1]))
        add("ladder.n_levels", len(ladder.slot_values[0]))
        add("ladder.n_contexts", ladder.n_contexts)
        for site in sites:
            sc = ladder_scores(ladder_array(lad_acts[site], ladder))
            lad_scores[site] = sc
            _add_ladder(add, site, sc, ctx.rng_for(f"ladder:{site}"))
            details["ladder"][site] = {"projection": sc.projection.tolist(),
                                       "spearman": sc.spearman.tolist(),
                                       "diff_cosine": sc.diff_cosine.tolist(),
                                       "raw_diff_cosine": sc.raw_diff_cosine.tolist(),
                                       "norm_ratio": sc.norm_ratio.tolist()}
        details["ladder_levels"] = ladder.slot_values[0]
        details["ladder_concepts"] = ladder.slot_values[1]

    for site, a in scores.items():  # the shuffled control, paired by cell
        _compare(add, f"cmp.{site}.additive_r2.vs_shuffled", a["cell_fit"],
                 a["shuffled_cell_fit"], paired_comparison, ctx.rng_for(f"cmp:shuf:{site}"))

    if config.reinit_control and subject.on_server:
        ctx.log("  re-initialised control skipped: the weights are on a server")
        details["reinit_control"] = "skipped: remote model"
    elif config.reinit_control:
        seed = ctx.seed_for("reinit")
        fresh = subject.reinitialized(seed=seed)
        r_acts, r_lad = measure(fresh, "reinit")
        details["reinit"] = {"seed": seed, "grid": {}}
        for site in sites:
            r = analyse_grid(r_acts[site], grid)
            add(f"reinit.{site}.additive_r2", r["additive_r2"])
            add(f"reinit.{site}.loco_cosine", r["loco_cosine"])
            add(f"reinit.{site}.loco_nn_accuracy", r["loco_nn_accuracy"])
            for slot, share in r["shares"].items():
                add(f"reinit.{site}.share.{slot}", share)
            details["reinit"]["grid"][site] = {"additive_r2": r["additive_r2"],
                                               "shares": r["shares"]}
            _compare(add, f"cmp.{site}.additive_r2.vs_reinit", scores[site]["cell_fit"],
                     r["cell_fit"], paired_comparison, ctx.rng_for(f"cmp:reinit:{site}"))
            if ladder is not None:
                rs = ladder_scores(ladder_array(r_lad[site], ladder))
                add(f"reinit.{site}.intensity.spearman", np.nanmean(rs.spearman)
                    if np.isfinite(rs.spearman).any() else float("nan"))
                for key in ("diff_cosine", "norm_ratio"):
                    v = getattr(rs, key)
                    add(f"reinit.{site}.intensity.{key}", np.nanmean(v)
                        if np.isfinite(v).any() else float("nan"))
                _compare(add, f"cmp.{site}.intensity.spearman.vs_reinit",
                         lad_scores[site].spearman, rs.spearman, paired_comparison,
                         ctx.rng_for(f"cmp:lad:{site}"))

    ctx.artifacts.save_tensors("cell_activations", {
        f"{site}": torch.from_numpy(acts[site].reshape(grid.n_cells, grid.n_contexts, -1)
                                    .mean(1)).float() for site in sites},
        metadata={"slots": ",".join(grid.slot_names)})
    ctx.artifacts.save_json("grid", {"slots": dict(zip(grid.slot_names, grid.slot_values)),
                                     "levels": grid.levels, "contexts": grid.context_labels,
                                     "example_prompt": grid.texts[0]})
    from .answer import answer_text

    result.details.update(details)
    result.details["answer"] = answer_text(result)
    from .figures import figures

    for name, fig in figures(result).items():
        ctx.artifacts.save_figure(name, fig)
    return result


def _add_ladder(add: Any, site: str, sc: Any, rng: Any) -> None:
    for key in ("spearman", "diff_cosine", "raw_diff_cosine"):
        est, lo, hi = mean_interval(getattr(sc, key), rng)
        add(f"{site}.intensity.{key}", est)
        add(f"{site}.intensity.{key}_ci_low", lo)
        add(f"{site}.intensity.{key}_ci_high", hi)
    finite = sc.norm_ratio[np.isfinite(sc.norm_ratio)]
    add(f"{site}.intensity.norm_ratio", finite.mean() if finite.size else float("nan"))


def mean_interval(values: Any, rng: Any, n_boot: int = 2000, confidence: float = 0.95
                  ) -> tuple[float, float, float]:
    """(mean, low, high) over the finite units: the bootstrap percentile interval of the
    mean, Hesterberg's expanded percentiles below 10 units (:func:`mi_ideas.stats.unit_interval`).
    Fewer than two units: no interval (NaN)."""
    from mi_ideas.stats import unit_interval

    n = int(np.isfinite(np.asarray(values, dtype=float)).sum())
    mean, lo, hi, _ = unit_interval(values, reduce="mean", n_boot=n_boot, rng=rng,
                                    confidence=confidence,
                                    interval="expanded" if n < 10 else "percentile")
    return (mean, float("nan"), float("nan")) if n < 2 else (mean, lo, hi)


def _compare(add: Any, name: str, model: np.ndarray, control: np.ndarray,
             paired_comparison: Any, rng: Any) -> None:
    """model − control over units, paired (NaNs where fewer than two units are finite)."""
    m, c = np.asarray(model, float), np.asarray(control, float)
    n = int((np.isfinite(m) & np.isfinite(c)).sum())
    if n < 2:
        stats = dict(mean_diff=float("nan"), ci_low=float("nan"), ci_high=float("nan"),
                     p_wilcoxon=float("nan"), n_units=n)
    else:
        pc = paired_comparison(c, m, rng=rng, interval="expanded" if n < 10 else "percentile")
        stats = dict(mean_diff=pc.mean_diff, ci_low=pc.ci_low, ci_high=pc.ci_high,
                     p_wilcoxon=pc.p_wilcoxon, n_units=pc.n_units)
    for key, value in stats.items():
        add(f"{name}.{key}", value)
