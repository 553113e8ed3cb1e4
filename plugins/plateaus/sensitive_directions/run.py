"""The sensitive-directions pipeline: pool, families, one batched sweep, read-outs."""

from __future__ import annotations

from typing import Any

from mi_ideas.errors import UsageError

from . import analysis as A
from .families import NO_RADIAL, latent_frequency, principal_components, \
    raw_family_directions, reconstruction


def pick_sae(ctx: Any) -> tuple[Any, str]:
    """The first dictionary that reads a resid_pre site of the subject, and that site."""
    from mi_ideas.dictionaries import site_of

    for sae in ctx.saes:
        site = ctx.subject.site(site_of(sae))
        if site.kind == "resid_pre":
            return sae, site.name
    raise UsageError("sensitive-directions needs a dictionary on a resid_pre.L site (the sweep "
                     "perturbs the residual stream entering a block); pass one with --sae.")


def prompts_and_pool(ctx: Any, config: Any) -> tuple[list[str], Any]:
    """The reference prompts and the pool dataset.

    Prompts: the first ``n_prompts`` texts whose first ``prompt_tokens`` tokens differ
    from every earlier prompt's (stories often share an opening, and a repeated prompt
    would count one reference twice). Pool: the ``pool_stories`` texts after the last
    text looked at, so no prompt's story is in the pool.
    """
    from mi_ideas.data import Dataset

    ds = ctx.dataset
    texts = list(ds.texts)
    seen: set[tuple[int, ...]] = set()
    chosen: list[str] = []
    last = -1
    for last, text in enumerate(texts):
        ids = tuple(ctx.subject.tokenize([text], max_length=config.prompt_tokens)
                    .input_ids[0].tolist())
        if ids not in seen:
            seen.add(ids)
            chosen.append(text)
            if len(chosen) == config.n_prompts:
                break
    start, end = last + 1, last + 1 + config.pool_stories
    if len(chosen) < config.n_prompts or start >= len(texts):
        raise UsageError(
            f"the dataset ({len(texts)} texts) has {len(chosen)} distinct {config.prompt_tokens}-"
            f"token prompts and {max(len(texts) - start, 0)} texts left for the pool; "
            f"sensitive-directions needs n_prompts ({config.n_prompts}) distinct prompts and "
            f"at least one pool text: lower n_prompts or use a larger dataset.")
    return chosen, Dataset(f"{ds.spec}[{start}:{end}]", texts[start:end])


def run(ctx: Any, config: Any) -> Any:
    with ctx.torch_threads(1):
        return _run(ctx, config)


def _run(ctx: Any, config: Any) -> Any:
    from ..common.directions import Pool
    from ..common.sweep import clean_run

    subject = ctx.subject
    if config.optimise and getattr(subject, "remote", False):
        raise UsageError("optimise=true needs gradients through the model, which remote (NDIF) "
                         "subjects do not give: run it locally or set optimise=false.")
    if "dir_pca" in config.families and config.n_paths > subject.d_model:
        raise UsageError(f"n_paths={config.n_paths} exceeds the {subject.d_model} principal "
                         f"components of {subject.spec!r} (d_model) that the dir_pca family "
                         f"sweeps: lower n_paths or drop dir_pca from families.")
    sae, site = pick_sae(ctx)
    prompts, pool_ds = prompts_and_pool(ctx, config)
    ctx.log(f"sensitive-directions: {len(prompts)} prompts at {site}; pool of {len(pool_ds)} texts")
    batch = subject.tokenize(prompts, max_length=config.prompt_tokens)
    clean = clean_run(subject, batch, site)
    x = clean.x.float()
    # The pool covers the same position class as x: positions 1 .. prompt_tokens - 1 of
    # story openings (x is the last of them), not every position of whole stories.
    acts = ctx.harvest(site, dataset=pool_ds, max_length=config.prompt_tokens).load(site).float()
    pool = Pool.fit(acts, exclude=x)

    result, outputs = experiment(subject, clean, site, pool, sae, config, ctx.generator_for,
                                 n_pool_raw=len(acts), progress=ctx.progress, log=ctx.log)
    from .report import save_outputs

    save_outputs(ctx, result, config=config, **outputs)
    result.artifacts.update(ctx.artifacts.saved)
    result.figures.update(ctx.artifacts.figures)
    return result


def experiment(subject: Any, clean: Any, site: str, pool: Any, sae: Any, config: Any,
               generator_for: Any, *, n_pool_raw: int | None = None, progress: Any = None,
               log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Families, radial option, the sweeps and the result, from a clean run and a pool.

    ``generator_for(name)`` gives each sub-experiment its own generator. Returns the result
    and what :func:`.report.save_outputs` needs. Any subject the sweep engine takes works
    (tests drive it with planted toy models).
    """
    import torch

    from ..common.directions import apply_radial, cos_with_x
    from ..common.sweep import sweep

    x = clean.x.float()
    freq = latent_frequency(sae, pool.acts)
    dead = int((freq == 0).sum())
    x_hat = reconstruction(sae, x)
    err_norm = (x - x_hat).norm(dim=-1)
    x_norm = float(x.norm(dim=-1).median())  # the lower median (torch)
    t_max, t_small = config.t_max_rel * x_norm, config.small_t_rel * x_norm
    grid = torch.linspace(t_max / config.n_steps, t_max, config.n_steps)
    steps = torch.cat([torch.tensor([0.0, t_small]), grid])

    # Each family draws from its own generators (and the optimisation from another), so
    # adding, dropping or skipping one never changes the directions of the others.
    pcs = principal_components(pool)
    raw: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for fam in config.families:
        if fam == "dir_sae_dead" and dead == 0:
            skipped[fam] = (f"no latent is dead: every one of the {len(freq)} latents fires "
                            f"on at least one of the {len(pool.acts)} pool activations")
            continue
        raw[fam] = raw_family_directions(fam, x, pool, config.n_paths,
                                         generator_for(f"family:{fam}"), sae=sae,
                                         freq=freq, pca=pcs, sae_sign=config.sae_sign).float()
    for field in ("sae_family", "baseline_family"):
        if getattr(config, field) not in raw:
            raise UsageError(f"{field}={getattr(config, field)!r} was skipped: "
                             f"{skipped.get(getattr(config, field), 'not computed')}.")
    # radial=match: every family gets cosines drawn from the pooled raw cosines of all of them
    target_cos = torch.cat([cos_with_x(d, x).reshape(-1) for f, d in raw.items()
                            if f not in NO_RADIAL])
    dirs = {f: d if f in NO_RADIAL else apply_radial(d, x, config.radial,
                                                     generator_for(f"radial:{f}"),
                                                     target_cos=target_cos)
            for f, d in raw.items()}

    opt: dict[str, Any] = {}
    if config.optimise:
        opt = _optimise(subject, clean, site, x, config, x_norm, generator_for("optimise"))
        dirs["optimised"] = opt["dirs"][:, None]

    names = list(dirs)
    sizes = [dirs[f].shape[1] for f in names]
    paths = torch.cat([dirs[f] for f in names], 1)
    if log is not None:
        log(f"sweeping {paths.shape[1]} paths x {len(steps)} steps x {len(x)} prompts")
    res = sweep(subject, clean, site, paths, steps, rows_per_forward=config.rows_per_forward,
                progress=progress)
    # Gurnee's comparison: every direction at its prompt's own length ||x - x_hat||.
    matched = sweep(subject, clean, site, paths * err_norm[:, None, None], torch.tensor([1.0]),
                    rows_per_forward=config.rows_per_forward)
    kl, kl_err = {}, {}
    offset = 0
    for f, m in zip(names, sizes):
        kl[f] = res.kl[:, offset:offset + m]
        kl_err[f] = matched.kl[:, offset:offset + m, 0]
        offset += m
    t_cross = {f: A.crossing_t(kl[f], steps, config.kl_threshold) for f in names}
    curv = {f: A.curvature(kl[f], steps, 1) for f in names}

    from .report import build_result

    result = build_result(config=config, names=names, kl=kl, kl_err=kl_err, t_cross=t_cross,
                          curv=curv, steps=steps, x_norm=x_norm, t_max=t_max, t_small=t_small,
                          err_norm=err_norm, dead=dead, n_latents=len(freq),
                          n_pool=len(pool.acts), skipped=skipped, opt=opt, sae=sae, freq=freq,
                          dirs=dirs, site=site, x=x, pool=pool, n_pool_raw=n_pool_raw,
                          raw=raw, target_cos=target_cos,
                          seed_for=lambda name: int(torch.randint(
                              2**31 - 1, (1,), generator=generator_for(f"bootstrap:{name}"))))
    outputs = dict(names=names, kl=kl, kl_err=kl_err, t_cross=t_cross, curv=curv, steps=steps,
                   dirs=dirs, x=x, x_hat=x_hat, freq=freq, x_norm=x_norm, opt=opt)
    return result, outputs


def _optimise(subject: Any, clean: Any, site: str, x: Any, config: Any, x_norm: float,
              gen: Any) -> dict[str, Any]:
    import torch

    from mi_ideas.errors import RunError

    from .optimise import optimise_directions, readout_for

    t = config.opt_t_rel * x_norm
    readout = readout_for(subject, clean.batch, site, config.opt_restarts)
    with torch.no_grad():  # the differentiable read-out must reproduce the clean run
        gap = float((readout(x.repeat_interleave(config.opt_restarts, 0))
                     - clean.logprobs.float().repeat_interleave(config.opt_restarts, 0)).abs().max())
    if gap > 1e-3:
        raise RunError(f"the differentiable read-out differs from the subject's clean run by "
                       f"{gap:.3g} in log-probability; optimisation would be meaningless.")
    u, kl = optimise_directions(readout, x, clean.logprobs, t, restarts=config.opt_restarts,
                                steps=config.opt_steps, lr=config.opt_lr, gen=gen)
    return {"dirs": u, "kl": kl, "t": t}
