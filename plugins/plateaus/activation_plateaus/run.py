"""The activation-plateaus procedure (torch imported here, only when a run starts).

Every sub-experiment draws from its own generator (``ctx.generator_for(name)``), so
skipping one (the re-initialised control is skipped remotely; the sub-questions are config
switches) never changes the draws of another. Every "A vs B" verdict is made over prompts,
paired by prompt (``mi_ideas/stats.py``).
"""

from __future__ import annotations

import torch

from mi_ideas import IdeaResult, RunContext
from mi_ideas.errors import UsageError

from ..common import directions as dirs
from ..common.curves import FLOORS
from ..common.sweep import SweepPlan, clean_run, sweep
from . import families as F
from .config import SAE_FAMILIES, PlateauConfig
from .measures import (COS_TARGET, Recorder, _bands, _normalised, _sae_at, crossing_metrics,
                       dirs_cos_words, distinct_prompts, draw, fit_pool, per_prompt,
                       pool_activations, radial, radial_words, relative_metrics)
from .readouts import BOUNDED
from .subquestions import _bases, _e2e, _grokking, _layer, _reconstruction, _steering


def run(ctx: RunContext, config: PlateauConfig) -> IdeaResult:
    result = IdeaResult()
    rec = Recorder(result, ctx)
    details = result.details
    if config.grokking:
        _grokking(ctx, config, rec)
    subject = ctx.subject
    site = subject.site(config.site).name
    if subject.site(site).kind != "resid_pre":
        raise UsageError(f"activation-plateaus perturbs resid_pre.L sites, not {config.site!r}.")
    sae = _sae_at(ctx, site)
    families = list(config.families)
    skipped = [f for f in families if f in SAE_FAMILIES and sae is None]
    if skipped:
        ctx.log(f"no dictionary reads {site}: skipping {skipped} (give --sae for that site)")
        families = [f for f in families if f not in skipped]
    if len(ctx.dataset) < config.n_prompts + config.n_pool:
        raise UsageError(
            f"n_prompts={config.n_prompts} and n_pool={config.n_pool} need at least n_prompts "
            f"+ n_pool = {config.n_prompts + config.n_pool} distinct texts, but the dataset "
            f"{ctx.dataset.spec!r} has {len(ctx.dataset)}: lower n_prompts or n_pool, or use "
            f"a larger dataset (e.g. --data zoo:stories).")
    ref, pool_batch, counts = distinct_prompts(ctx, config)
    details.update({"families": families, "site": site, "skipped_families": skipped,
                    "radial": config.radial, "sae_sign": config.sae_sign, **counts})

    layer_sites = [subject.site(f"resid_pre.{layer}").name for layer in config.layers]
    pool_acts = pool_activations(subject, pool_batch, list(dict.fromkeys([site, *layer_sites])))
    clean = clean_run(subject, ref, site)
    pool = fit_pool(pool_acts[site], clean.x)
    details.update({"n_pool_activations": len(pool.acts),
                    "pool_duplicate_rows_dropped": pool.n_duplicates,
                    "pool_reference_copies_dropped": pool.n_reference_copies})
    freq = dirs.firing_frequency(sae, pool.acts) if sae is not None else None
    unit_len = pool.median_pair_distance(ctx.generator_for("median-pair-distance"))
    details["median_pair_distance"] = unit_len
    rec.add("pool.norm_median", pool.acts.norm(dim=-1).median(),
            "median L2 norm of the pool's real activations at the site (the scale against "
            "which target norms are read)")
    abs_steps = torch.linspace(0, config.abs_max_distance * unit_len, config.n_steps)
    rel_steps = torch.linspace(0, 1, config.n_steps)
    relative_on = "relative" in config.step_modes
    absolute_on = "absolute" in config.step_modes

    # -- the main experiment -----------------------------------------------------------------
    targets, raw, pooled_cos = draw(config, families, clean.x, pool, sae, freq, ctx)
    details["radial_target_cos"] = ("pooled raw cos(d, x) of the run's direction families: "
                                    f"{len(pooled_cos)} values, mean "
                                    f"{float(pooled_cos.mean()) if len(pooled_cos) else float('nan'):.3f}")
    if len(pooled_cos):
        ctx.artifacts.save_tensors("radial_target_cos", {"cos_x": pooled_cos})
    curves, per_prompt_cross, per_prompt_onset = {}, {}, {}
    # Every family's relative and absolute sweeps share the prompts and the site: one plan,
    # its rows cut into rows_per_forward chunks together (the results are those of separate
    # sweeps, to float rounding).
    plan = SweepPlan(subject, clean, site, rows_per_forward=config.rows_per_forward)
    todo = []
    for fam in families:
        words = f"family {fam}: " + F.definition(fam)
        if fam in targets:
            t = targets[fam]
            rec.cos(fam, F.cos_with_x(t - clean.x[:, None], clean.x), COS_TARGET)
            rec.add(f"{fam}.target_norm_median", t.norm(dim=-1).median(),
                    "median L2 norm of the family's targets t (read against pool.norm_median)")
            if relative_on:
                todo.append(("relative", fam, words, t, plan.add(
                    f"relative:{fam}", t, rel_steps,
                    kind="arc" if fam == "toward_real_arc" else "target", readouts=BOUNDED)))
            if absolute_on:
                d = F._unit(t - clean.x[:, None])
                todo.append(("absolute", fam, words + "; direction unit(t − x)", None,
                             plan.add(f"absolute:{fam}", d, abs_steps, kind="direction")))
        elif absolute_on:
            d = radial(config, raw[fam], clean.x, ctx, fam, pooled_cos)
            rec.cos(fam, F.cos_with_x(d, clean.x), dirs_cos_words(config))
            todo.append(("direction", fam, words + "; " + radial_words(config), d,
                         plan.add(f"absolute:{fam}", d, abs_steps, kind="direction")))
    plan.run(progress=ctx.progress)
    for mode, fam, words, t, handle in todo:
        res = handle.result
        if mode == "relative":
            per_path = relative_metrics(rec, fam, res, words)
            per_prompt_onset[fam] = per_prompt(per_path["onset50"])
            curves[fam] = {"steps": rel_steps.tolist(),
                           "js": _bands(_normalised(res.js, FLOORS["js"])),
                           "kl": _bands(res.kl)}
            ctx.artifacts.save_tensors(f"relative_{fam}", {
                "kl": res.kl, "l2": res.l2, "js": res.js, "tv": res.tv, "steps": rel_steps,
                "x": clean.x, "targets": t, **{k: v.float() for k, v in per_path.items()}})
        elif mode == "absolute":
            per_prompt_cross[fam] = crossing_metrics(rec, fam, res.kl, config, words)
            ctx.artifacts.save_tensors(f"absolute_{fam}", {"kl": res.kl, "l2": res.l2,
                                                           "steps": abs_steps})
        else:
            d = t
            per_prompt_cross[fam] = crossing_metrics(rec, fam, res.kl, config, words)
            ctx.artifacts.save_tensors(f"absolute_{fam}", {
                "kl": res.kl, "l2": res.l2, "steps": abs_steps, "directions": d,
                "cos_x": F.cos_with_x(d, clean.x), "raw_cos_x": F.cos_with_x(raw[fam], clean.x)})
    details["curves"] = curves
    details["crossings_per_prompt"] = {k: v.tolist() for k, v in per_prompt_cross.items()}

    # every family against the truly isotropic direction; the target paths in order
    what = "median crossing step over the prompt's paths"
    if "dir_isotropic" in per_prompt_cross:
        for fam, v in per_prompt_cross.items():
            if fam != "dir_isotropic":
                rec.compare(f"cmp.crossing.{fam}.vs.dir_isotropic", per_prompt_cross["dir_isotropic"],
                            v, "dir_isotropic", fam, what)
    for a, b in (("toward_real", "toward_cov_sample"), ("toward_cov_sample", "toward_iso_sample")):
        if a in per_prompt_cross and b in per_prompt_cross:
            rec.compare(f"cmp.crossing.{b}.vs.{a}", per_prompt_cross[a], per_prompt_cross[b],
                        a, b, what)
    for fam, v in per_prompt_onset.items():
        if fam != "toward_real" and "toward_real" in per_prompt_onset:
            rec.compare(f"cmp.onset50.{fam}.vs.toward_real", per_prompt_onset["toward_real"], v,
                        "toward_real", fam, "median onset-50% (JS) over the prompt's paths")

    # -- control: the same architecture, re-initialised ------------------------------------
    if config.reinit_control and subject.on_server:
        ctx.log("the re-initialised control needs the weights locally: skipped for a remote model")
        details["reinit_control"] = "skipped: remote model"
    elif config.reinit_control and relative_on:
        fresh = subject.reinitialized(ctx.seed)
        fresh_clean = clean_run(fresh, ref, site)
        fresh_pool = fit_pool(pool_activations(fresh, pool_batch, [site])[site], fresh_clean.x)
        t = F.targets("toward_real", fresh_clean.x, fresh_pool, config.n_paths,
                      ctx.generator_for("reinit:family:toward_real"))
        res = sweep(fresh, fresh_clean, site, t, rel_steps, kind="target",
                    rows_per_forward=config.rows_per_forward, readouts=BOUNDED)
        per_path = relative_metrics(rec, "reinit.toward_real", res,
                                    "family toward_real on the same architecture re-initialised "
                                    "(control)")
        if "toward_real" in per_prompt_onset:
            rec.compare("cmp.onset50.toward_real.vs.reinit", per_prompt(per_path["onset50"]),
                        per_prompt_onset["toward_real"], "re-initialised model",
                        "trained model", "median onset-50% (JS) of toward_real paths")

    # -- sub-question 7: real vs synthetic vs Gaussian bases -------------------------------
    if config.compare_bases and absolute_on:
        _bases(ctx, config, rec, subject, clean, site, pool, sae, freq, abs_steps, pooled_cos)

    # -- sub-question 2: regions through layers --------------------------------------------
    per_layer = []
    for layer in config.layers:
        per_layer.append(_layer(ctx, config, rec, subject, ref, layer, pool_acts, pool, site,
                                clean, pooled_cos))
    details["per_layer"] = per_layer

    # -- sub-question 5: steering through the plateau lens ---------------------------------
    if config.steering and absolute_on:
        _steering(ctx, config, rec, subject, clean, site, pool, abs_steps, pooled_cos)

    # -- sub-question 4: SAE reconstructions -----------------------------------------------
    if config.sae_reconstruction and sae is not None:
        _reconstruction(ctx, config, rec, subject, clean, site, sae, pooled_cos)

    # -- sub-question 6: end-to-end SAEs ---------------------------------------------------
    if config.e2e_sae:
        _e2e(ctx, config, rec, subject, site)

    from .figures import save_all

    save_all(ctx, details)
    return result
