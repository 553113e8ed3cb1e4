"""The activation-plateaus procedure (torch imported here, only when a run starts)."""

from __future__ import annotations

from typing import Any

import torch

from mi_ideas import IdeaResult, RunContext
from mi_ideas.dictionaries import site_of
from mi_ideas.errors import UsageError

from ..common import directions as dirs
from ..common.curves import DEFINITIONS as D, first_crossing, ks_distance, sharpness
from ..common.sweep import CleanRun, clean_run, rebase, sweep
from .config import PlateauConfig

SAE_FAMILIES = {"sae_latent", "sae_synthetic"}

# What this idea adds to the family's shared definitions (common/curves.py).
RELATIVE = "; relative steps: α = 0..1 along the path from x to its target"
CROSSING = (D["crossing"] + "; threshold kl_threshold; absolute steps: step k is k · "
            "abs_max_distance / (n_steps − 1) median real-pair distances from x")


def prompts(ctx: RunContext, n: int, tokens: int, offset: int = 0) -> Any:
    """``n`` prompts of exactly ``tokens`` tokens (BOS included) from the run's dataset."""
    subject = ctx.subject
    rows = []
    for text in ctx.dataset.texts[offset:]:
        ids = subject.tokenize(text, max_length=tokens).input_ids[0]
        if len(ids) == tokens:
            rows.append(ids)
        if len(rows) == n:
            break
    if len(rows) < n:
        raise UsageError(
            f"the dataset {ctx.dataset.spec!r} has only {len(rows)} texts of at least {tokens} "
            f"tokens after the first {offset}; use a larger dataset (e.g. --data "
            f"zoo:stories:{2 * (n + offset)}) or fewer prompts."
        )
    return subject.batch_from_ids(torch.stack(rows))


def pool_activations(subject: Any, batch: Any, sites: list[str], chunk: int = 256
                     ) -> dict[str, Any]:
    """Last-position activations of the pool prompts at every site, one forward per chunk."""
    parts = [subject.activations(subject.batch_from_ids(batch.input_ids[i:i + chunk]), sites,
                             positions="last") for i in range(0, len(batch), chunk)]
    return {s: torch.cat([p[s] for p in parts]).float() for s in sites}


def _sae_at(ctx: RunContext, site: str) -> Any:
    for sae in ctx.saes:
        if ctx.subject.site(site_of(sae)).name == ctx.subject.site(site).name:
            return sae
    return None


def run(ctx: RunContext, config: PlateauConfig) -> IdeaResult:
    # Every sub-experiment draws from its own generator (ctx.generator_for(name)), so
    # skipping one (the re-initialised control is skipped remotely; layers, steering, ...
    # are config switches) never changes the draws of another.
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

    need = 2 * config.n_prompts + config.n_pool
    if len(ctx.dataset) < need:
        raise UsageError(
            f"n_prompts={config.n_prompts} and n_pool={config.n_pool} need at least 2 * "
            f"n_prompts + n_pool = {need} texts (the pool starts after the first "
            f"{2 * config.n_prompts}), but the dataset {ctx.dataset.spec!r} has "
            f"{len(ctx.dataset)}: lower n_prompts or n_pool, or use a larger dataset (e.g. "
            f"--data zoo:stories:{2 * need}).")
    ref = prompts(ctx, config.n_prompts, config.prompt_tokens)
    pool_batch = prompts(ctx, config.n_pool, config.prompt_tokens, offset=config.n_prompts * 2)
    result = IdeaResult(details={"families": families, "site": site,
                                "skipped_families": skipped})
    details = result.details

    layer_sites = [subject.site(f"resid_pre.{layer}").name for layer in config.layers]
    pool_acts = pool_activations(subject, pool_batch, list(dict.fromkeys([site, *layer_sites])))
    pool = dirs.Pool.fit(pool_acts[site])
    clean = clean_run(subject, ref, site)
    freq = dirs.firing_frequency(sae, pool.acts) if sae is not None else None
    unit_len = pool.median_pair_distance(ctx.generator_for("median-pair-distance"))
    details["median_pair_distance"] = unit_len
    progress = None if ctx.quiet else ctx.progress

    def run_family(c: CleanRun, s: str, fam: str, mode: str, p: dirs.Pool, sae_: Any) -> Any:
        gen = ctx.generator_for(f"main:{fam}:{mode}")
        if mode == "relative":
            steps = torch.linspace(0, 1, config.n_steps)
            target_family = "real" if fam == "real_arc" else fam
            t = dirs.targets(target_family, c.x, p, config.n_paths, gen, sae=sae_, freq=freq)
            return sweep(subject, c, s, t, steps, kind="arc" if fam == "real_arc" else "target",
                         rows_per_forward=config.rows_per_forward, progress=progress)
        steps = torch.linspace(0, config.abs_max_distance * unit_len, config.n_steps)
        fam_dir = "real" if fam == "real_arc" else fam
        d = dirs.directions(fam_dir, c.x, p, config.n_paths, gen, sae=sae_, freq=freq)
        return sweep(subject, c, s, d, steps, kind="direction",
                     rows_per_forward=config.rows_per_forward, progress=progress)

    # -- the main experiment: every family, both step conventions --------------------------
    sharp: dict[str, Any] = {}
    crossings: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for fam in families:
        if "relative" in config.step_modes:
            res = run_family(clean, site, fam, "relative", pool, sae)
            s_l2, where = sharpness(res.l2, res.steps)
            s_kl, _ = sharpness(res.kl, res.steps)
            sharp[fam] = s_l2.flatten()
            curves[fam] = {"steps": res.steps.tolist(),
                           "l2": _bands(res.l2 / res.l2[..., -1:].clamp_min(1e-12)),
                           "kl": _bands(res.kl)}
            result.add(f"{fam}.sharpness_median", s_l2.median(),
                       D["sharpness_l2"] + RELATIVE + "; median")
            result.add(f"{fam}.sharpness_kl_median", s_kl.median(),
                       D["sharpness_kl"] + RELATIVE + "; median")
            result.add(f"{fam}.max_slope_step_median", where.median(),
                       D["max_slope_step"] + "; L2 read-out" + RELATIVE + "; median")
            ctx.artifacts.save_tensors(f"relative_{fam}", {"kl": res.kl, "l2": res.l2, "steps": res.steps})
        if "absolute" in config.step_modes:
            res = run_family(clean, site, fam, "absolute", pool, sae)
            cross = first_crossing(res.kl, config.kl_threshold).float().flatten()
            crossings[fam] = cross
            result.add(f"{fam}.crossing_median", cross.median(), CROSSING + "; median")
            result.add(f"{fam}.crossing_mean", cross.mean(), CROSSING + "; mean")
            ctx.artifacts.save_tensors(f"absolute_{fam}", {"kl": res.kl, "l2": res.l2, "steps": res.steps})
    names = list(sharp)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            result.add(f"ks.sharpness.{a}.{b}", ks_distance(sharp[a], sharp[b]),
                       D["ks"] + f" between the L2 sharpness distributions of {a} and {b}")
    details["curves"] = curves

    # -- control: the same architecture, re-initialised ---------------------------------
    if config.reinit_control and subject.on_server:
        ctx.log("the re-initialised control needs the weights locally: skipped for a remote model")
        details["reinit_control"] = "skipped: remote model"
    elif config.reinit_control and "relative" in config.step_modes:
        fresh = subject.reinitialized(ctx.seed)
        fresh_pool = dirs.Pool.fit(pool_activations(fresh, pool_batch, [site])[site])
        fresh_clean = clean_run(fresh, ref, site)
        t = dirs.targets("real", fresh_clean.x, fresh_pool, config.n_paths,
                         ctx.generator_for("reinit-control"))
        res = sweep(fresh, fresh_clean, site, t, torch.linspace(0, 1, config.n_steps),
                    kind="target", rows_per_forward=config.rows_per_forward)
        s_fresh, _ = sharpness(res.l2, res.steps)
        result.add("reinit.real.sharpness_median", s_fresh.median(),
                   D["sharpness_l2"] + RELATIVE + "; real targets; median, same architecture "
                   "re-initialised (control)")
        sharp["reinit real"] = s_fresh.flatten()
        if "real" in sharp:
            result.add("ks.sharpness.real.reinit", ks_distance(sharp["real"], s_fresh),
                       D["ks"] + " between the L2 sharpness distributions of real targets on "
                       "the trained and on the re-initialised model")

    # -- real bases vs Gaussian-sampled bases --------------------------------------------
    if config.compare_bases:
        gen = ctx.generator_for("bases")
        steps = torch.linspace(0, config.abs_max_distance * unit_len, config.n_steps)
        d = dirs.directions("isotropic", clean.x, pool, config.n_paths, gen)
        synth = rebase(subject, clean, site, pool.gaussian(len(clean.x), gen))
        for label, base in (("real", clean), ("cov_gauss", synth)):
            res = sweep(subject, base, site, d, steps, kind="direction",
                        rows_per_forward=config.rows_per_forward)
            cross = first_crossing(res.kl, config.kl_threshold).float()
            result.add(f"bases.{label}.crossing_median", cross.median(),
                       CROSSING + f"; isotropic directions from {label} bases; median")
            result.add(f"bases.{label}.crossing_mean", cross.mean(),
                       CROSSING + f"; isotropic directions from {label} bases; mean")

    # -- regions through layers ----------------------------------------------------------
    per_layer = []
    for layer in config.layers:
        s_l = subject.site(f"resid_pre.{layer}").name
        c_l = clean_run(subject, ref, s_l)
        p_l = pool if s_l == site else dirs.Pool.fit(pool_acts[s_l])
        row = {"layer": layer}
        gen = ctx.generator_for(f"layer:{layer}")
        t = dirs.targets("real", c_l.x, p_l, config.n_paths, gen)
        res = sweep(subject, c_l, s_l, t, torch.linspace(0, 1, config.n_steps), kind="target",
                    rows_per_forward=config.rows_per_forward)
        row["real_sharpness"] = float(sharpness(res.l2, res.steps)[0].median())
        steps = torch.linspace(0, config.abs_max_distance * p_l.median_pair_distance(gen),
                               config.n_steps)
        for fam in ("real", "isotropic"):
            d = dirs.directions(fam, c_l.x, p_l, config.n_paths, gen)
            r = sweep(subject, c_l, s_l, d, steps, kind="direction",
                      rows_per_forward=config.rows_per_forward)
            row[f"{fam}_crossing"] = float(first_crossing(r.kl, config.kl_threshold).float().median())
        per_layer.append(row)
        result.add(f"layer{layer}.real.sharpness_median", row["real_sharpness"],
                   D["sharpness_l2"] + RELATIVE + f"; real targets; median at resid_pre.{layer}")
        result.add(f"layer{layer}.crossing_ratio_iso_real",
                   row["isotropic_crossing"] / max(row["real_crossing"], 1),
                   "median crossing step along isotropic directions / along real directions at "
                   "this layer (> 1: real directions leave the plateau sooner); " + CROSSING)
    details["per_layer"] = per_layer

    # -- steering through the plateau lens -----------------------------------------------
    if config.steering:
        _steering(ctx, config, subject, clean, site, pool, unit_len, result)

    # -- SAE reconstructions -------------------------------------------------------------
    if config.sae_reconstruction and sae is not None:
        _reconstruction(config, subject, clean, site, sae,
                        ctx.generator_for("sae-reconstruction"), result)

    from .figures import save_all

    save_all(ctx, details, sharp, crossings)
    return result


def _bands(x: Any) -> dict[str, list[float]]:
    flat = x.reshape(-1, x.shape[-1])
    q = torch.quantile(flat, torch.tensor([0.25, 0.5, 0.75]), dim=0)
    return {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist()}


def _steering(ctx: RunContext, config: PlateauConfig, subject: Any, clean: CleanRun, site: str,
              pool: Any, unit_len: float, result: IdeaResult) -> None:
    from mi_ideas import load_dataset

    ladder = load_dataset("template:intensity_ladder")
    groups = {}
    for emotion in ("happy", "sad"):
        texts = [t for t, lab in zip(ladder.texts, ladder.labels) if lab.get("concept") == emotion]
        acts = subject.activations(subject.tokenize(texts), [site], positions="last")[site]
        groups[emotion] = acts.float().mean(0)
    v = groups["happy"] - groups["sad"]
    steps = torch.linspace(0, config.abs_max_distance * unit_len, config.n_steps)
    along = (v / v.norm()).expand(len(clean.x), 1, -1)
    res_s = sweep(subject, clean, site, along, steps, kind="direction",
                  rows_per_forward=config.rows_per_forward)
    d = dirs.directions("real", clean.x, pool, config.n_paths, ctx.generator_for("steering"))
    res_r = sweep(subject, clean, site, d, steps, kind="direction",
                  rows_per_forward=config.rows_per_forward)
    cs = first_crossing(res_s.kl, config.kl_threshold).float()
    cr = first_crossing(res_r.kl, config.kl_threshold).float()
    result.add("steering.crossing_median", cs.median(),
               CROSSING + "; along the happy−sad steering vector; median")
    result.add("steering.real.crossing_median", cr.median(),
               CROSSING + "; along real directions, same step lengths; median")
    result.add("steering.sharpness_median", sharpness(res_s.kl, steps)[0].median(),
               D["sharpness_kl"] + "; along the steering vector, absolute steps; median")
    result.details["steering_norm"] = float(v.norm())


def _reconstruction(config: PlateauConfig, subject: Any, clean: CleanRun, site: str, sae: Any,
                    gen: Any, result: IdeaResult) -> None:
    from mi_ideas.subject import Intervention, StatsRequest

    with torch.no_grad():
        x_hat = sae.decode(sae.encode(clean.x)).float()
    err = (clean.x - x_hat).norm(dim=-1)
    out = subject.forward(clean.batch, interventions=[Intervention(site, "replace", x_hat, "last")],
                          stats=StatsRequest(kl_reference=clean.logprobs))
    kl_hat = out.stats["kl"]
    # isotropic steps of the same length as each reconstruction error (the control)
    iso = torch.randn(len(clean.x), 4, clean.x.shape[1], generator=gen)
    iso = iso / iso.norm(dim=-1, keepdim=True) * err[:, None, None]
    res = sweep(subject, clean, site, iso, torch.tensor([0.0, 1.0]), kind="direction")
    kl_iso = res.kl[..., 1].median(dim=1).values
    result.add("sae_recon.kl_median", kl_hat.median(),
               "KL(clean ‖ x replaced by the SAE reconstruction x̂), last position; median")
    result.add("sae_recon.iso_kl_median", kl_iso.median(),
               "KL after an isotropic step of length ‖x − x̂‖ (control); median over prompts")
    result.add("sae_recon.in_plateau_fraction", (kl_hat < config.kl_threshold).float().mean(),
               "fraction of prompts whose x̂ stays below kl_threshold (inside x's plateau)")
    result.add("sae_recon.relative_error_median", (err / clean.x.norm(dim=-1)).median(),
               "‖x − x̂‖ / ‖x‖; median")
    result.details["sae_recon"] = {"kl": kl_hat.tolist(), "iso_kl": kl_iso.tolist()}
