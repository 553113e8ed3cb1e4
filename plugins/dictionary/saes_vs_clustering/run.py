"""The saes-vs-clustering pipeline: inputs -> dictionaries at every K -> reconstruction,
CE splice, purity -> result, SAEBench-style export, figures."""

from __future__ import annotations

from typing import Any

import torch

from mi_ideas import RunContext
from mi_ideas.errors import UsageError
from mi_ideas_plugins.dictionary.common import evaluate as ev_mod
from mi_ideas_plugins.dictionary.common import purity as pur_mod
from mi_ideas_plugins.dictionary.common.kmeans import kmeans, nearest, scaled_kmeans
from mi_ideas_plugins.dictionary.common.rows import RowSource, load_activations_file
from mi_ideas_plugins.dictionary.common.training import train_topk_sae

from .config import SaesVsClusteringConfig
from .result import METHOD_DEFS, SaesVsClusteringResult

# --------------------------------------------------------------------------- inputs


class Inputs:
    """Training rows (a :class:`RowSource`), held-out rows in memory, and what is known
    about them: the subject and site (harvests), the held-out texts and their labels."""

    def __init__(self, train: RowSource, x_eval: torch.Tensor, *, site: str, source: str,
                 subject: Any = None, eval_texts: Any = None, labels: list[str] | None = None,
                 eval_doc: torch.Tensor | None = None):
        self.train, self.x_eval, self.site, self.source = train, x_eval, site, source
        self.subject, self.eval_texts, self.labels = subject, eval_texts, labels
        self.eval_doc = eval_doc  # held-out text index of each held-out row (harvests)


def load_inputs(ctx: RunContext, config: SaesVsClusteringConfig) -> Inputs:
    if config.activations:
        x = load_activations_file(config.activations)
        n_eval = max(1, int(round(len(x) * config.eval_fraction)))
        if len(x) - n_eval < 2:
            raise UsageError(f"activations={config.activations!r} has {len(x)} rows: too few to "
                             f"hold out eval_fraction={config.eval_fraction} and fit on the rest.")
        ctx.log(f"activations from {config.activations}: {len(x)} rows of d={x.shape[1]}, the "
                f"last {n_eval} held out")
        return Inputs(RowSource.of(x[:-n_eval]), x[-n_eval:].clone(), site="activations",
                      source=f"file:{config.activations}")

    from mi_ideas.integrations.sae_lens.provider import split_dataset

    subject = ctx.subject
    site = subject.site(config.site).name
    ds = ctx.dataset
    if config.n_texts is not None and config.n_texts < len(ds):
        from mi_ideas.data import Dataset

        n = config.n_texts
        ds = Dataset(f"{ds.spec}[:{n}]", ds.texts[:n], ds.labels[:n],
                     ds.spans[:n] if ds.spans is not None else None, ds.description)
    if len(ds) <= config.n_eval_texts:
        raise UsageError(f"the dataset {ds.spec!r} has {len(ds)} texts; n_eval_texts="
                         f"{config.n_eval_texts} must leave some to fit on. Use more texts "
                         f"(--data zoo:stories:N) or lower n_eval_texts.")
    train_ds, eval_ds = split_dataset(ds, config.n_eval_texts)
    kw = dict(positions="all", max_length=config.max_length,
              batch_size=config.harvest_batch_size, budget_mb=config.budget_mb)
    acts_train = ctx.harvest([site], dataset=train_ds, **kw)
    acts_eval = ctx.harvest([site], dataset=eval_ds, **kw)
    train = RowSource(activations=acts_train, site=site, budget_mb=config.budget_mb)
    x_eval = acts_eval.load(site).float()
    labels = None
    doc = acts_eval.load("doc")
    if eval_ds.spans is not None:
        labels = pur_mod.row_labels(subject.tokenizer, eval_ds.texts, eval_ds.spans,
                                    doc, acts_eval.load("pos"))
    ctx.log(f"{site}: {train.n_rows} training rows ({'in memory' if train.in_memory else 'streamed'}), "
            f"{len(x_eval)} held-out rows from {len(eval_ds)} texts of {ds.spec}")
    return Inputs(train, x_eval, site=site, source=ds.spec, subject=subject,
                  eval_texts=eval_ds.texts, labels=labels, eval_doc=doc)


# --------------------------------------------------------------------------- statistics


def mean_and_pca(src: RowSource, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, the top ``dims`` principal directions ``(dims, d)`` and all eigenvalues, from
    one streamed pass accumulating Σx and Σxxᵀ in float64."""
    s1, s2, n = None, None, 0
    for b in src.batches():
        b = b.double()
        s1 = b.sum(0) if s1 is None else s1 + b.sum(0)
        s2 = b.T @ b if s2 is None else s2 + b.T @ b
        n += len(b)
    mean = s1 / n
    cov = s2 / n - torch.outer(mean, mean)
    evals, evecs = torch.linalg.eigh(cov)
    order = evals.argsort(descending=True)
    return mean.float(), evecs[:, order[:dims]].T.float().contiguous(), evals[order].float()


def random_dictionary(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    r = torch.randn(k, d, generator=g)
    return r / r.norm(dim=-1, keepdim=True)


def random_reconstruct(x: torch.Tensor, mean: torch.Tensor, r: torch.Tensor, l0: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂ = mean + the least-squares combination of the ``l0`` random atoms with the
    largest |(x − mean)·r|; also the projections (the units' scores for purity)."""
    xc = x - mean
    proj = xc @ r.T
    l0 = min(l0, r.shape[0], r.shape[1])
    idx = proj.abs().topk(l0, dim=-1).indices
    a = r[idx]                                          # (n, l0, d)
    coef = torch.linalg.lstsq(a.transpose(1, 2), xc[:, :, None]).solution  # (n, l0, 1)
    return mean + (a.transpose(1, 2) @ coef)[:, :, 0], proj


# --------------------------------------------------------------------------- the run


def run(ctx: RunContext, config: SaesVsClusteringConfig) -> SaesVsClusteringResult:
    inputs = load_inputs(ctx, config)
    x_eval = inputs.x_eval
    d = x_eval.shape[1]
    if float((x_eval - x_eval.mean(0)).pow(2).sum()) == 0:
        raise UsageError("the held-out rows are all equal: explained variance is undefined. "
                         "Use more varied activations.")
    mean, pcs, eigvals = mean_and_pca(inputs.train, min(config.pca_dims, d))
    purity_k = config.purity_size or config.sizes[-1]
    splice, n_ce_rows = None, 0
    if inputs.subject is not None and config.ce:
        n_ce = min(config.ce_texts or len(inputs.eval_texts), len(inputs.eval_texts))
        # the harvest is ordered by text, so the first n_ce texts' rows come first
        n_ce_rows = int((inputs.eval_doc < n_ce).sum())
        splice = ev_mod.SpliceSet(inputs.subject, inputs.eval_texts[:n_ce], inputs.site,
                                  max_length=config.max_length,
                                  batch_size=config.harvest_batch_size)
        if splice.n_rows != n_ce_rows or not bool((inputs.eval_doc[:n_ce_rows] < n_ce).all()):
            raise RuntimeError(f"splice rows {splice.n_rows} != harvested rows {n_ce_rows} "
                               f"of the first {n_ce} held-out texts")

    result = SaesVsClusteringResult(details={
        "sizes": config.sizes, "methods": list(config.methods), "site": inputs.site,
        "source": inputs.source, "d": d, "purity_size": purity_k, "curves": {},
        "given_saes": [], "purity": {}, "training": {},
    })
    details = result.details

    def add(name: str, value: Any, definition: str) -> None:
        result.add(name, value, definition)

    add("n_train_rows", inputs.train.n_rows, "rows the dictionaries are fitted on")
    add("n_eval_rows", len(x_eval), "held-out rows every metric but the CE ones is computed on")
    add("pca_ev_of_kept_dims", float(eigvals[:pcs.shape[0]].sum() / eigvals.sum()),
        f"fraction of the training rows' variance in the top pca_dims={pcs.shape[0]} "
        f"principal components (the ceiling of pca_kmeans)")
    if splice is not None:
        add("n_ce_rows", n_ce_rows, "held-out rows spliced for the CE metrics: every "
            "position of the first ce_texts held-out texts")
        ce_clean = splice.ce(None)
        ce_zero = splice.ce(torch.zeros(d))
        ce_mean = splice.ce(mean)
        add("ce_clean", ce_clean, "mean next-token CE (nats) of the clean model over the "
            "scored positions (every token after BOS but the last) of the first ce_texts "
            "held-out texts")
        add("ce_zero_ablation", ce_zero, "the same CE with the site set to zero at every "
            "non-BOS position (the zero point of ce_loss_score)")
        add("ce_mean_ablation", ce_mean, "the same CE with the site set to the training "
            "rows' mean (what a reconstruction with EV = 0 gives)")

    def record(method: str, k: int, x_hat: torch.Tensor, l0: float, *, curve: str | None = None
               ) -> None:
        stats = ev_mod.reconstruction_stats(x_eval, x_hat, l0)
        prefix = f"{method}.{k}"
        what = METHOD_DEFS.get(method, METHOD_DEFS["sae_given"])
        for key in ("ev", "mse", "l0"):
            add(f"{prefix}.{key}", stats[key], f"{what}: {ev_mod.DEFS[key]}")
        line = f"{prefix}: EV {stats['ev']:.4f}, L0 {stats['l0']:.2f}"
        if splice is not None:
            ce = splice.ce(x_hat[:n_ce_rows])
            add(f"{prefix}.ce_increase", ce - ce_clean, f"{what}: {ev_mod.DEFS['ce_increase']}")
            add(f"{prefix}.ce_loss_score", ev_mod.ce_loss_score(ce, ce_clean, ce_zero),
                f"{what}: {ev_mod.DEFS['ce_loss_score']}")
            stats["ce"] = ce
            line += f", CE +{ce - ce_clean:.4f}"
        ctx.log(line)
        details["curves"].setdefault(curve or method, {})[str(k)] = stats

    # every method's unit scores at every K (purity is measured at each size of the sweep)
    purity_scores: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    saes: dict[str, Any] = {}
    methods = list(config.methods)
    for k in ctx.progress(config.sizes, desc="sizes"):
        if "kmeans" in methods:  # (scaled k-means fits its own centroids)
            km = kmeans(inputs.train, k, n_iter=config.kmeans_iters, seed=ctx.seed_for(f"kmeans.{k}"),
                        backend=config.kmeans_backend)
            j, dist = nearest(x_eval, km.centroids)
            record("kmeans", k, km.centroids[j], 1.0)
            purity_scores[("kmeans", k)] = _cluster_scores(j, -dist, k)
        if "kmeans_scaled" in methods:
            sk = scaled_kmeans(inputs.train, k, mean=mean, n_iter=config.kmeans_iters,
                               seed=ctx.seed_for(f"kmeans_scaled.{k}"))
            j, a = sk.codes(x_eval)
            record("kmeans_scaled", k, sk.reconstruct(x_eval), 1.0)
            purity_scores[("kmeans_scaled", k)] = _cluster_scores(j, a.abs(), k)
        if "pca_kmeans" in methods:
            proj = inputs.train.mapped(lambda b: (b - mean) @ pcs.T)
            pk = kmeans(proj, k, n_iter=config.kmeans_iters, seed=ctx.seed_for(f"pca_kmeans.{k}"),
                        backend=config.kmeans_backend)
            j, dist = nearest((x_eval - mean) @ pcs.T, pk.centroids)
            record("pca_kmeans", k, mean + pk.centroids[j] @ pcs, 1.0)
            purity_scores[("pca_kmeans", k)] = _cluster_scores(j, -dist, k)
        if "sae" in methods:
            kk = config.sae_k if config.sae_k < k else max(1, k // 2)
            sae, info = train_topk_sae(
                inputs.train.shuffled_batches(config.sae_batch_size, ctx.seed_for(f"sae-data.{k}")),
                d_in=d, d_sae=k, k=kk, steps=config.sae_steps, batch_size=config.sae_batch_size,
                lr=config.sae_lr, seed=ctx.seed_for(f"sae.{k}"),
                out_dir=ctx.run_dir / "artifacts" / f"sae-{k}", hook_name=inputs.site,
                model_name=getattr(inputs.subject, "spec", inputs.source))
            details["training"][f"sae.{k}"] = info
            with torch.no_grad():
                feats = sae.encode(x_eval)
                x_hat = sae.decode(feats)
            record("sae", k, x_hat, float((feats != 0).sum(-1).float().mean()))
            saes[f"sae.{k}"] = sae
            purity_scores[("sae", k)] = (feats, feats > 0)
        if "random" in methods:
            r = random_dictionary(d, k, ctx.generator_for(f"random.{k}"))
            l0 = config.sae_k if config.sae_k < k else max(1, k // 2)
            x_hat, proj = random_reconstruct(x_eval, mean, r, l0)
            record("random", k, x_hat, float(min(l0, k, d)))
            purity_scores[("random", k)] = (proj, torch.ones_like(proj, dtype=torch.bool))

    for i, sae in enumerate(ctx.saes):
        name = _given_sae_name(sae, i, ctx.saes)
        why = _given_sae_skip(sae, inputs, d)
        if why:
            ctx.log(f"--sae {name}: not evaluated ({why})")
            details["given_saes"].append({"name": name, "skipped": why})
            continue
        if inputs.subject is None:
            ctx.log(f"--sae {name}: evaluated on the rows of {inputs.source} (its d_in matches; "
                    f"whether it was trained on such rows is yours to know)")
        sae.eval()
        with torch.no_grad():
            feats = sae.encode(x_eval.to(sae.dtype if hasattr(sae, "dtype") else torch.float32))
            x_hat = sae.decode(feats).float()
        k = int(sae.cfg.d_sae)
        record(name, k, x_hat, float((feats != 0).sum(-1).float().mean()), curve=name)
        saes[f"{name}.{k}"] = sae
        purity_scores[(name, k)] = (feats.float(), feats > 0)
        details["given_saes"].append({"name": name, "d_sae": k})

    if inputs.labels is not None:
        for (method, k), (scores, active) in purity_scores.items():
            summary = pur_mod.purity_summary(scores, active, inputs.labels, config.purity_top,
                                             ctx.rng_for("purity-shuffle"))
            details["purity"][f"{method}.{k}"] = summary
            what = METHOD_DEFS.get(method, METHOD_DEFS["sae_given"])
            for key in ("purity", "purity_shuffled", "purity_excess", "purity_excess_ci_lo",
                        "purity_excess_ci_hi", "concept_units", "n_units"):
                base = key.replace("_ci_lo", "").replace("_ci_hi", "")
                add(f"{method}.{k}.{key}", summary[key],
                    f"{what}, top_contexts={config.purity_top}: {pur_mod.DEFS[base]}")
            ctx.log(f"{method}.{k}: purity {summary['purity']:.3f} vs shuffled "
                    f"{summary['purity_shuffled']:.3f} over {summary['n_units']} units")
        # SAE latents against each clustering at the same K: paired over held-out texts,
        # one set of resamples per K for every comparison
        for k in config.sizes:
            others = {o: purity_scores[(o, k)] for o in ("kmeans", "kmeans_scaled", "pca_kmeans", "random")
                      if (o, k) in purity_scores}
            if ("sae", k) not in purity_scores or not others:
                continue
            comparisons = pur_mod.paired_text_bootstrap_many(
                purity_scores[("sae", k)], others, inputs.labels, inputs.eval_doc, config.purity_top,
                ctx.rng_for(f"purity-paired.{k}"), n_boot=config.purity_bootstrap,
                shuffle_rng=ctx.rng_for("purity-shuffle"))
            for other, c in comparisons.items():
                prefix = f"cmp.sae_vs_{other}.{k}"
                what = f"TopK SAE latents vs {METHOD_DEFS[other]} (K={k}, top_contexts={config.purity_top})"
                for key, value in c.items():
                    base = "n_texts" if key == "n_texts" else "purity_excess_diff"
                    add(f"{prefix}.{key}", value, f"{what}: {pur_mod.DEFS[base]}")
                details.setdefault("purity_paired", {})[f"sae_vs_{other}.{k}"] = c
                ctx.log(f"{prefix}: excess purity difference {c['purity_excess_diff']:+.3f} "
                        f"[{c['purity_excess_diff_ci_lo']:+.3f}, {c['purity_excess_diff_ci_hi']:+.3f}], "
                        f"p = {c['purity_excess_diff_p']:.3g} over {int(c['n_texts'])} texts")
    else:
        ctx.log("no concept labels for these rows (only the zoo corpus has them): purity skipped")

    from .export import saebench_records

    for name, record_ in saebench_records(result, saes, config, inputs).items():
        ctx.artifacts.save_json(f"saebench-{name}", record_)
    ctx.artifacts.save_tensors("pca", {"mean": mean, "components": pcs, "eigenvalues": eigvals})
    from .figures import ev_figure, purity_figure

    ctx.artifacts.save_figure("ev-curves", ev_figure(details))
    if details["purity"]:
        ctx.artifacts.save_figure("purity", purity_figure(details))
    return result


def _cluster_scores(j: torch.Tensor, score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A cluster as a unit: active on its own rows, scored there by ``score`` (closeness to
    the centroid, or |coefficient|)."""
    active = torch.zeros(len(j), k, dtype=torch.bool)
    active[torch.arange(len(j)), j] = True
    scores = torch.zeros(len(j), k)
    scores[torch.arange(len(j)), j] = score.float()
    return scores, active


def _given_sae_name(sae: Any, i: int, all_saes: list[Any]) -> str:
    sizes = [int(getattr(s.cfg, "d_sae", 0)) for s in all_saes]
    return "sae_given" if sizes.count(sizes[i]) == 1 else f"sae_given{i}"


def _given_sae_skip(sae: Any, inputs: Inputs, d: int) -> str | None:
    if "transcoder" in type(sae).__name__.lower() or hasattr(sae.cfg, "d_out"):
        return "a transcoder reconstructs another site; this idea compares dictionaries of one site"
    if int(sae.cfg.d_in) != d:
        return f"its d_in is {sae.cfg.d_in}, the activations have d = {d}"
    if inputs.subject is not None:
        hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
        try:
            name = inputs.subject.site(hook).name if hook else None
        except UsageError:
            name = None
        if name != inputs.site:
            return f"it reads {hook!r}, this run harvests {inputs.site} (set site=...)"
    return None
