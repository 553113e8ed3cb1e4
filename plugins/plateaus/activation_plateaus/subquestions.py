"""The seed's sub-questions as parts of an activation-plateaus run: synthetic vs real bases
(7), regions through layers (2), steering (5), SAE reconstructions (4), grokking (3) and
end-to-end SAEs (6). Each draws from its own generators."""

from __future__ import annotations

from typing import Any

import torch

from mi_ideas import RunContext

from ..common.sweep import CleanRun, SweepPlan, clean_run, rebase, sweep
from . import families as F
from .config import PlateauConfig
from .readouts import BOUNDED
from .measures import (COS_TARGET, Recorder, crossing_metrics, dirs_cos_words, fit_pool,
                       radial, radial_words, relative_metrics)


def _bases(ctx: RunContext, config: PlateauConfig, rec: Recorder, subject: Any, clean: CleanRun,
           site: str, pool: Any, sae: Any, freq: Any, steps: Any, pooled_cos: Any) -> None:
    """dir_isotropic (after the radial option, at each base) and toward_iso_sample directions
    from real bases, each reference's SAE-synthetic version, and Gaussian samples."""
    n, dim = clean.x.shape
    bases = {"real": clean,
             "cov_sample": rebase(subject, clean, site, pool.gaussian(n, ctx.generator_for(
                 "bases:cov_sample")))}
    if sae is not None:
        synth = F.synthetic(sae, clean.x, freq, ctx.generator_for("bases:sae_synthetic"))
        bases["sae_synthetic"] = rebase(subject, clean, site, synth.float())
    z = F.raw_directions("dir_isotropic", clean.x, pool, config.n_paths,
                         ctx.generator_for("bases:dir_isotropic"))
    t = F.targets("toward_iso_sample", clean.x, pool, config.n_paths,
                  ctx.generator_for("bases:toward_iso_sample"))
    words = {"real": "real bases (the references x)",
             "cov_sample": "Gaussian bases: samples of N(μ, Σ) of the pool, one per prompt, "
                           "written at the prompt's last position",
             "sae_synthetic": "SAE-synthetic bases: each reference's own active latents swapped "
                              "for latents of similar firing frequency, accumulating decode"}
    pp: dict[tuple[str, str], Any] = {}
    info = {}
    # the bases are rebase()s of the same prompts at the same site: one plan for all
    plan = SweepPlan(subject, clean, site, rows_per_forward=config.rows_per_forward)
    todo = []
    for label, base in bases.items():
        rec.add(f"bases.{label}.norm_median", base.x.norm(dim=-1).median(),
                f"median L2 norm of the {words[label]}")
        for dfam in ("dir_isotropic", "toward_iso_sample"):
            if dfam == "dir_isotropic":
                d = radial(config, z, base.x, ctx, f"bases:{label}", pooled_cos)
                cw = dirs_cos_words(config)
            else:
                d = F._unit(t - base.x[:, None])
                cw = COS_TARGET
            rec.cos(f"bases.{label}.{dfam}", F.cos_with_x(d, base.x), cw + "; at the base")
            todo.append((label, dfam, plan.add(f"{label}:{dfam}", d, steps, kind="direction",
                                               clean=base)))
        info[label] = words[label]
    plan.run(progress=ctx.progress)
    for label, dfam, handle in todo:
        pp[(label, dfam)] = crossing_metrics(rec, f"bases.{label}.{dfam}", handle.result.kl,
                                             config, f"{dfam} directions from {words[label]}")
    for dfam in ("dir_isotropic", "toward_iso_sample"):
        for label in bases:
            if label != "real":
                rec.compare(f"cmp.bases.{dfam}.{label}.vs.real", pp[("real", dfam)],
                            pp[(label, dfam)], "real bases", words[label],
                            f"median crossing step over the prompt's {dfam} paths")
    rec.result.details["bases"] = info


def _layer(ctx: RunContext, config: PlateauConfig, rec: Recorder, subject: Any, ref: Any,
           layer: int, pool_acts: dict, pool: Any, site: str, clean: CleanRun,
           pooled_cos: Any) -> dict:
    s_l = subject.site(f"resid_pre.{layer}").name
    c_l = clean if s_l == site else clean_run(subject, ref, s_l)
    p_l = pool if s_l == site else fit_pool(pool_acts[s_l], c_l.x)
    gen = f"layer{layer}:"
    row: dict[str, Any] = {"layer": layer}
    t = F.targets("toward_real", c_l.x, p_l, config.n_paths,
                  ctx.generator_for(gen + "family:toward_real"))
    prefix = f"layer{layer}"
    # the relative and the absolute sweeps share the prompts and the site: one plan
    plan = SweepPlan(subject, c_l, s_l, rows_per_forward=config.rows_per_forward)
    relative = None
    if "relative" in config.step_modes:
        relative = plan.add("relative", t, torch.linspace(0, 1, config.n_steps), kind="target",
                            readouts=BOUNDED)
    absolute = {}
    if "absolute" in config.step_modes:
        unit = p_l.median_pair_distance(ctx.generator_for(gen + "median-pair-distance"))
        steps = torch.linspace(0, config.abs_max_distance * unit, config.n_steps)
        z = F.raw_directions("dir_isotropic", c_l.x, p_l, config.n_paths,
                             ctx.generator_for(gen + "family:dir_isotropic"))
        d_iso = radial(config, z, c_l.x, ctx, gen + "dir_isotropic", pooled_cos)
        d_real = F._unit(t - c_l.x[:, None])
        for fam, d in (("toward_real", d_real), ("dir_isotropic", d_iso)):
            absolute[fam] = plan.add(fam, d, steps, kind="direction")
    plan.run(progress=ctx.progress)
    if relative is not None:
        relative_metrics(rec, f"{prefix}.toward_real", relative.result,
                         f"family toward_real at resid_pre.{layer}")
        for k in ("onset10_js_median", "onset50_js_median", "sharpness_median",
                  "step_like_fraction"):
            row[k] = rec.result.metrics[f"{prefix}.toward_real.{k}"]
    if absolute:
        pp = {}
        for fam, handle in absolute.items():
            pp[fam] = crossing_metrics(rec, f"{prefix}.{fam}", handle.result.kl, config,
                                       f"family {fam} at resid_pre.{layer}")
            row[f"{fam}_crossing"] = float(pp[fam].median())
        rec.compare(f"cmp.{prefix}.crossing.toward_real.vs.dir_isotropic", pp["dir_isotropic"],
                    pp["toward_real"], "dir_isotropic", "toward_real (unit(t − x))",
                    f"median crossing step over the prompt's paths at resid_pre.{layer}")
    return row


def _steering(ctx: RunContext, config: PlateauConfig, rec: Recorder, subject: Any,
              clean: CleanRun, site: str, pool: Any, steps: Any, pooled_cos: Any) -> None:
    from mi_ideas import load_dataset

    ladder = load_dataset("template:intensity_ladder")
    groups = {}
    for emotion in ("happy", "sad"):
        texts = [t for t, lab in zip(ladder.texts, ladder.labels) if lab.get("concept") == emotion]
        acts = subject.activations(subject.tokenize(texts), [site], positions="last")[site]
        groups[emotion] = acts.float().mean(0)
    v = groups["happy"] - groups["sad"]
    n = len(clean.x)
    raw_v = (v / v.norm()).expand(n, 1, -1).clone()
    rec.cos("steering.raw", F.cos_with_x(raw_v, clean.x),
            "cos(v, x) of the unit happy − sad steering vector v before the radial option")
    along = radial(config, raw_v, clean.x, ctx, "steering", pooled_cos)
    rec.cos("steering", F.cos_with_x(along, clean.x), dirs_cos_words(config)
            + "; the steering vector")
    pp = {}
    # the steering vector and its two controls share the prompts and the site: one plan
    plan = SweepPlan(subject, clean, site, rows_per_forward=config.rows_per_forward)
    main = plan.add("steering", along, steps, kind="direction")
    controls = {}
    for fam in ("dir_isotropic", "dir_real_diff"):
        z = F.raw_directions(fam, clean.x, pool, config.n_paths,
                             ctx.generator_for(f"steering:family:{fam}"))
        d = radial(config, z, clean.x, ctx, f"steering:{fam}", pooled_cos)
        rec.cos(f"steering.{fam}", F.cos_with_x(d, clean.x), dirs_cos_words(config))
        controls[fam] = plan.add(fam, d, steps, kind="direction")
    plan.run(progress=ctx.progress)
    pp["steering"] = crossing_metrics(rec, "steering", main.result.kl, config,
                                      "along the unit happy − sad difference-of-means steering "
                                      "vector (template:intensity_ladder, last position), "
                                      + radial_words(config))
    for fam, handle in controls.items():
        pp[fam] = crossing_metrics(rec, f"steering.{fam}", handle.result.kl, config,
                                   f"family {fam}, same step lengths, " + radial_words(config))
        rec.compare(f"cmp.steering.vs.{fam}", pp[fam], pp["steering"], fam,
                    "the steering vector", "median crossing step over the prompt's paths")
    rec.result.details["steering_norm"] = float(v.norm())


def _reconstruction(ctx: RunContext, config: PlateauConfig, rec: Recorder, subject: Any,
                    clean: CleanRun, site: str, sae: Any, pooled_cos: Any) -> None:
    from mi_ideas.subject import Intervention, StatsRequest

    x_hat = F.reconstruct(sae, clean.x)
    err = (clean.x - x_hat).norm(dim=-1)
    out = subject.forward(clean.batch, interventions=[Intervention(site, "replace", x_hat, "last")],
                          stats=StatsRequest(kl_reference=clean.logprobs))
    kl_hat = out.stats["kl"].float()
    rec.cos("sae_recon", F.cos_with_x((x_hat - clean.x)[:, None], clean.x),
            "cos(x̂ − x, x) of the reconstruction error")
    # the control: dir_isotropic steps (radial option applied) of the same length ‖x − x̂‖
    z = F.raw_directions("dir_isotropic", clean.x, None, 4,
                         ctx.generator_for("sae-reconstruction"))
    d = radial(config, z, clean.x, ctx, "sae-reconstruction", pooled_cos)
    res = sweep(subject, clean, site, d * err[:, None, None], torch.tensor([0.0, 1.0]),
                kind="direction", rows_per_forward=config.rows_per_forward)
    kl_iso = res.kl[..., 1].median(dim=1).values
    rec.add("sae_recon.kl_median", kl_hat.median(),
            "KL(clean ‖ x replaced by the SAE reconstruction x̂), last position; median over "
            "prompts")
    rec.add("sae_recon.iso_kl_median", kl_iso.median(),
            "KL after a dir_isotropic step of length ‖x − x̂‖ (" + radial_words(config) + "; the "
            "control); per prompt the median of 4 directions, then the median over prompts")
    rec.add("sae_recon.in_plateau_fraction", (kl_hat < config.kl_threshold).float().mean(),
            f"fraction of prompts whose x̂ stays below kl_threshold = {config.kl_threshold} "
            f"nats (inside x's plateau)")
    rec.add("sae_recon.relative_error_median", (err / clean.x.norm(dim=-1)).median(),
            "‖x − x̂‖ / ‖x‖; median over prompts")
    rec.compare("cmp.sae_recon.kl.vs.dir_isotropic", kl_iso, kl_hat,
                "dir_isotropic step of the same length", "the SAE reconstruction x̂",
                "KL(clean ‖ perturbed) in nats")
    rec.result.details["sae_recon"] = {"kl": kl_hat.tolist(), "iso_kl": kl_iso.tolist()}


def _grokking(ctx: RunContext, config: PlateauConfig, rec: Recorder) -> None:
    from . import grokking as G

    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator_for("grokking")))
    main, control = G.run_grokking_with_control(seed=seed, steps=config.grokking_steps)
    out = {}
    for tag, r in (("grokking", main), ("grokking.no_wd", control)):
        who = ("the modular-addition MLP trained with weight decay "
               f"{r.config['weight_decay']}" if tag == "grokking" else
               "the same schedule without weight decay (the control)")
        s = r.summary()
        rec.add(f"{tag}.final_train_acc", r.train_acc[-1], f"train accuracy at the last step; {who}")
        rec.add(f"{tag}.final_test_acc", r.test_acc[-1], f"test accuracy at the last step; {who}")
        for mark in ("memorised_step", "grok_step"):
            v = s.get(mark)
            rec.add(f"{tag}.{mark}", float("nan") if v is None else v,
                    G.DEFINITIONS[mark] + f" (NaN: never); {who}")
        for when in ("init", "final"):
            row = s[when]
            for k in ("onset10", "onset50", "loglog_slope", "sharpness", "crossings", "bunching",
                      "bunching_shuffled"):
                words = G.DEFINITIONS["onset10" if k.startswith("onset") else k]
                if k == "onset50":
                    words = "onset50: " + words
                rec.add(f"{tag}.{when}.{k}", row[k], f"median over paths of {words}; at the "
                        f"{when} checkpoint; {who}")
        out[tag] = {"step": r.step.tolist(), "train_acc": r.train_acc.tolist(),
                    "test_acc": r.test_acc.tolist(), "onset10": r.metrics["onset10"].tolist(),
                    "onset50": r.metrics["onset50"].tolist(),
                    "crossings": r.metrics["crossings"].tolist(),
                    "bunching": r.metrics["bunching"].tolist(),
                    "bunching_shuffled": r.metrics["bunching_shuffled"].tolist(),
                    "summary": s}
    rec.result.details["grokking"] = out


def _e2e(ctx: RunContext, config: PlateauConfig, rec: Recorder, subject: Any, site: str) -> None:
    if subject.remote:
        ctx.log("the e2e SAE needs gradients through a local model: skipped for a remote model")
        rec.result.details["e2e_sae"] = "skipped: remote model"
        return
    from .e2e_sae import run_e2e_plateaus

    r = run_e2e_plateaus(subject, site, list(ctx.dataset.texts), steps=config.e2e_steps,
                         seed=ctx.seed, generator=ctx.generator_for("e2e-sae"),
                         log=None if ctx.quiet else ctx.log)
    for k, v in r.metrics.items():
        rec.add(f"e2e.{k}", v, r.definitions[k])
    rec.result.details["e2e_sae"] = {k: v for k, v in r.details.items()
                                     if k not in ("kl_curves", "history")}
