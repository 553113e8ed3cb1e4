"""transcoder-clustering: train (or load) a transcoder, cluster its latents by co-activation,
score the clusters against a planted partition (toy, U-AND) or concept labels (a model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mi_ideas import IdeaResult

from . import clustering as C
from .config import TranscoderClusteringConfig
from .definitions import definitions_for


def _add(result: IdeaResult, prefix: str, name: str, value: Any) -> None:
    result.add(prefix + name, value, definitions_for(name))


def partition_scores(acts: torch.Tensor, w_dec: torch.Tensor, truth: np.ndarray,
                     cfg: TranscoderClusteringConfig, seed: int) -> dict[str, Any]:
    """Cluster latents (columns of ``acts``) by co-activation, by decoder cosine and on
    per-latent-shuffled activations, all at the same k; ARI / AMI against ``truth``."""
    aff = C.affinity(acts, cfg.affinity)
    k = cfg.n_clusters or C.eigengap_k(aff, cfg.max_clusters)
    labels = C.cluster(aff, k, cfg.method, seed)
    shuffled = C.affinity(C.shuffle_columns(acts, torch.Generator().manual_seed(seed + 7919)),
                          cfg.affinity)
    out = {"k": k, "labels": labels}
    out["coact"] = C.scores(truth, labels)
    out["decoder_cos"] = C.scores(truth, C.cluster(C.decoder_cosine(w_dec), k, cfg.method, seed))
    out["shuffled"] = C.scores(truth, C.cluster(shuffled, k, cfg.method, seed))
    out["truth_k"] = int(len(np.unique(truth)))
    return out


def _latents(sae, x_in: torch.Tensor, x_out: torch.Tensor, min_fires: int):
    from mi_ideas.metrics import explained_variance

    with torch.no_grad():
        acts = sae.encode(x_in.float())
        x_hat = sae.decode(acts)
    alive = (acts > 0).sum(0) >= min_fires
    return acts, alive, float(explained_variance(x_out, x_hat)), float((acts > 0).sum(1).float().mean())


def planted_run(result: IdeaResult, prefix: str, cfg: TranscoderClusteringConfig, ctx,
                x_in: torch.Tensor, x_out: torch.Tensor, e_in: torch.Tensor, e_out: torch.Tensor,
                module_of, neuron_hidden: torch.Tensor | None, neuron_module: torch.Tensor | None,
                name: str) -> dict[str, Any]:
    """Transcoders from cfg.n_seeds seeds on (x_in -> x_out); clusters of each scored against
    the planted modules of its latents (``module_of(sae) -> (module, share)``)."""
    from mi_ideas.training.transcoder import fit_transcoder

    per_seed: list[dict[str, Any]] = []
    for s in range(cfg.n_seeds):
        seed = ctx.seed_for(f"{name}-tc-{s}")
        sae = fit_transcoder(x_in, x_out, d_sae=cfg.toy_d_sae, l1_coefficient=cfg.l1_coefficient,
                             steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                             quiet=True)
        acts, alive, ev, l0 = _latents(sae, e_in, e_out, cfg.min_fires)
        w_dec = sae.W_dec.detach()
        module, share = module_of(sae)
        keep = alive & (module >= 0)
        sc = partition_scores(acts[:, keep], w_dec[keep], module[keep].numpy(), cfg, seed)
        sc.update(ev=ev, l0=l0, alive=int(alive.sum()), assigned=int(keep.sum()),
                  d_sae=int(w_dec.shape[0]), share=float(share[alive].mean()))
        sizes = np.bincount(sc["labels"]).tolist()
        sc["sizes"] = sorted(sizes, reverse=True)
        per_seed.append(sc)
        ctx.log(f"{name} seed {s}: EV {ev:.3f}, L0 {l0:.2f}, {sc['assigned']}/{sc['d_sae']} latents "
                f"scored, k={sc['k']}: coact ARI {sc['coact'][0]:.3f}, decoder-cos "
                f"{sc['decoder_cos'][0]:.3f}, shuffled {sc['shuffled'][0]:.3f}")
    mean = lambda key, i: float(np.mean([p[key][i] for p in per_seed]))  # noqa: E731
    for method in ("coact", "decoder_cos", "shuffled"):
        _add(result, prefix, f"{method}.ari", mean(method, 0))
        _add(result, prefix, f"{method}.ami", mean(method, 1))
    aris = [p["coact"][0] for p in per_seed]
    _add(result, prefix, "coact.ari_min", min(aris))
    _add(result, prefix, "coact.ari_max", max(aris))
    _add(result, prefix, "coact.ari_std", float(np.std(aris, ddof=1)) if len(aris) > 1 else float("nan"))
    _add(result, prefix, "n_seeds", len(per_seed))
    _add(result, prefix, "n_clusters", float(np.mean([p["k"] for p in per_seed])))
    _add(result, prefix, "n_modules", per_seed[0]["truth_k"])
    _add(result, prefix, "transcoder_ev", float(np.mean([p["ev"] for p in per_seed])))
    _add(result, prefix, "transcoder_l0", float(np.mean([p["l0"] for p in per_seed])))
    _add(result, prefix, "latents_alive", float(np.mean([p["alive"] for p in per_seed])))
    _add(result, prefix, "latents_scored", float(np.mean([p["assigned"] for p in per_seed])))
    _add(result, prefix, "module_share", float(np.mean([p["share"] for p in per_seed])))
    _add(result, prefix, "cluster_size_max", float(np.mean([p["sizes"][0] for p in per_seed])))
    _add(result, prefix, "cluster_size_min", float(np.mean([p["sizes"][-1] for p in per_seed])))
    if neuron_hidden is not None:
        # the neurons' own partition, clustered the same way (the redundancy the idea relies on)
        n_alive = (neuron_hidden > 0).sum(0) >= cfg.min_fires
        aff = C.affinity(neuron_hidden[:, n_alive], cfg.affinity)
        k = cfg.n_clusters or C.eigengap_k(aff, cfg.max_clusters)
        ari, _ = C.scores(neuron_module[n_alive].numpy(), C.cluster(aff, k, cfg.method, 0))
        _add(result, prefix, "neurons.ari", ari)
    return {"per_seed": [{k: v for k, v in p.items() if k != "labels"} | {"labels": p["labels"].tolist()}
                         for p in per_seed]}


def run_toy(result: IdeaResult, cfg: TranscoderClusteringConfig, ctx) -> dict[str, Any]:
    from . import toy

    gen = ctx.generator_for("toy")
    t = toy.build(cfg.toy_modules, cfg.toy_features, cfg.toy_redundancy, cfg.toy_d_in,
                  cfg.toy_d_out, cfg.toy_module_prob, cfg.toy_feature_prob, gen, cfg.toy_output)
    x = t.inputs(t.features(cfg.toy_samples, gen))
    e = t.inputs(t.features(cfg.toy_eval_samples, gen))
    details = planted_run(result, "", cfg, ctx, x, t.mlp(x), e, t.mlp(e),
                          lambda sae: t.latent_modules(sae.W_dec.detach(), cfg.assign_threshold,
                                                       sae.W_enc.detach()),
                          t.hidden(e), t.neuron_module, "toy")
    ctx.artifacts.save_tensors("toy_mlp", {"embed": t.embed, "w_in": t.w_in, "b_in": t.b_in,
                                           "w_out": t.w_out, "neuron_module": t.neuron_module})
    return details


def run_uand(result: IdeaResult, cfg: TranscoderClusteringConfig, ctx) -> dict[str, Any]:
    """A cis-toy-model U-AND MLP (its training code and input distribution), gates as modules:
    a latent belongs to the gate output holding most of its decoder's squared norm."""
    from mi_ideas_plugins.cis_toy_model.config import CisConfig
    from mi_ideas_plugins.cis_toy_model.tasks import uand

    ucfg = CisConfig(task="u-and", uand_n_features=cfg.uand_features, uand_n_gates=cfg.uand_gates,
                     uand_n_neurons=cfg.uand_neurons, uand_steps=cfg.uand_steps)
    gen = ctx.generator_for("uand")
    gates = uand.choose_gates(cfg.uand_features, cfg.uand_gates, gen)
    s1, s2 = (int(v) for v in torch.randint(0, 2**31 - 1, (2,), generator=gen))
    forward, params, _ = uand.train_model(ucfg, gates, True, s1, s2, ctx)
    with torch.no_grad():
        x = uand.sample_inputs(cfg.toy_samples, ucfg, gen)
        e = uand.sample_inputs(cfg.toy_eval_samples, ucfg, gen)
        y, ye = forward(x), forward(e)
        hidden = torch.relu(e @ params["W_in"].T + params["b_in"])

    def module_of(sae):
        w_dec = sae.W_dec.detach()
        share = (w_dec.float() ** 2) / (w_dec.float() ** 2).sum(-1, keepdim=True).clamp_min(1e-12)
        best, module = share.max(dim=1)
        return torch.where(best >= cfg.assign_threshold, module, torch.full_like(module, -1)), best

    details = planted_run(result, "uand.", cfg, ctx, x, y, e, ye, module_of, None, None, "uand")
    details["gates"] = gates.tolist()
    return details


def run_model(result: IdeaResult, cfg: TranscoderClusteringConfig, ctx) -> dict[str, Any]:
    """The subject with its transcoder: co-activation clusters with their top contexts,
    concept purity against a shuffled-label baseline, split-half stability."""
    from mi_ideas.dictionaries import output_site_of, site_of
    from mi_ideas.errors import UsageError
    from mi_ideas.metrics import explained_variance

    tcs = [s for s in ctx.saes if output_site_of(s)]
    if not tcs:
        raise UsageError(
            "transcoder-clustering with 'model' in sources needs a transcoder (a dictionary "
            "whose cfg.metadata has hook_name_out), but --sae gave none: pass one, e.g. "
            "--sae zoo:stories-gpt2-mlp1-transcoder, or drop 'model' from sources.")
    sae = tcs[0]
    subject = ctx.subject
    site_in, site_out = subject.site(site_of(sae)).name, subject.site(output_site_of(sae)).name
    dataset = ctx.dataset
    if cfg.model_texts is not None and cfg.model_texts < len(dataset):
        from mi_ideas.data import Dataset

        n = cfg.model_texts
        dataset = Dataset(spec=f"{dataset.spec}[:{n}]", texts=dataset.texts[:n],
                          labels=dataset.labels[:n], spans=dataset.spans[:n] if dataset.spans else None,
                          description=dataset.description)
    acts_h = ctx.harvest([site_in, site_out], dataset=dataset, positions="all",
                         max_length=cfg.model_max_length)
    x_in, x_out = acts_h.load(site_in).float(), acts_h.load(site_out).float()
    with torch.no_grad():
        acts = torch.cat([sae.encode(x_in[i:i + 4096]) for i in range(0, len(x_in), 4096)])
        x_hat = torch.cat([sae.decode(acts[i:i + 4096]) for i in range(0, len(acts), 4096)])
    alive_idx = torch.nonzero((acts > 0).sum(0) >= cfg.min_fires).squeeze(1)
    a = acts[:, alive_idx]
    p = "model."
    _add(result, p, "transcoder_ev", explained_variance(x_out, x_hat))
    _add(result, p, "transcoder_l0", (acts > 0).sum(1).float().mean())
    _add(result, p, "n_rows", len(acts))
    _add(result, p, "latents_alive", len(alive_idx))
    aff = C.affinity(a, cfg.affinity)
    k = cfg.model_clusters or C.eigengap_k(aff, cfg.max_clusters)
    labels = C.cluster(aff, k, cfg.method, 0)
    _add(result, p, "n_clusters", k)
    _add(result, p, "eigengap_k", k if cfg.model_clusters is None else C.eigengap_k(aff, cfg.max_clusters))
    sizes = np.bincount(labels, minlength=k)
    _add(result, p, "cluster_size_max", sizes.max())
    _add(result, p, "cluster_size_median", float(np.median(sizes)))
    # stability: the same latents clustered on the two halves of the rows (split by text)
    text_of = acts_h.load("doc")
    half = text_of % 2 == 0
    lab_a = C.cluster(C.affinity(a[half], cfg.affinity), k, cfg.method, 0)
    lab_b = C.cluster(C.affinity(a[~half], cfg.affinity), k, cfg.method, 0)
    _add(result, p, "split_half_ari", C.scores(lab_a, lab_b)[0])
    shuffled = C.affinity(C.shuffle_columns(a[half], torch.Generator().manual_seed(1)), cfg.affinity)
    _add(result, p, "split_half_ari_shuffled", C.scores(lab_a, C.cluster(shuffled, k, cfg.method, 0))[0])
    w_dec = sae.W_dec.detach()[alive_idx]
    _add(result, p, "coact_vs_decoder_cos_ari",
         C.scores(labels, C.cluster(C.decoder_cosine(w_dec), k, cfg.method, 0))[0])
    clusters: list[dict[str, Any]] = []
    if dataset.spans is not None:
        # one purity definition for the family (common.purity): clusters are the units
        from mi_ideas_plugins.dictionary.common.purity import purity_summary, row_labels

        doc, pos, tok = text_of, acts_h.load("pos"), acts_h.load("token").tolist()
        cats = row_labels(subject.tokenizer, dataset.texts, dataset.spans, doc, pos)
        members = [alive_idx[torch.from_numpy(labels == c)] for c in range(k)]
        scores = torch.stack([acts[:, mem].sum(1) for mem in members], 1)
        summary = purity_summary(scores, scores > 0, cats, cfg.top_contexts, np.random.default_rng(0))
        for key in ("purity", "purity_shuffled", "purity_excess", "purity_excess_ci_lo",
                    "purity_excess_ci_hi"):
            _add(result, p, key, summary[key])
        _add(result, p, "clusters_scored", summary["n_units"])
        doc_l = doc.tolist()
        for c in range(k):
            top = torch.topk(scores[:, c], min(cfg.top_contexts, len(scores))).indices.numpy()
            top = top[scores[top, c].numpy() > 0]
            if len(top) == 0:
                continue
            vals, counts = np.unique([cats[r] for r in top], return_counts=True)
            ctxs = []
            for r in top[:5]:
                window = [tok[q] for q in range(max(r - 6, 0), r) if doc_l[q] == doc_l[r]]
                ctxs.append(subject.tokenizer.decode(window) + "[[" + subject.tokenizer.decode([tok[r]]) + "]]")
            clusters.append({"cluster": c, "size": int(len(members[c])), "latents": members[c].tolist()[:50],
                             "top_category": str(vals[counts.argmax()]), "purity": summary["per_unit"][c],
                             "contexts": ctxs})
        _add(result, p, "labelled_clusters", sum(c["top_category"] != "none" for c in clusters))
        _add(result, p, "none_fraction", float(np.mean([c == "none" for c in cats])))
    ctx.log(f"model {site_in} -> {site_out}: {len(alive_idx)} latents alive, k={k}")
    return {"site_in": site_in, "site_out": site_out, "sizes": sizes.tolist(), "clusters": clusters}


def run(ctx, cfg: TranscoderClusteringConfig) -> IdeaResult:
    result = IdeaResult()
    details: dict[str, Any] = {"affinity": C.AFFINITY_DEFINITIONS[cfg.affinity]}
    runners = {"toy": run_toy, "uand": run_uand, "model": run_model}
    for source in cfg.sources:
        details[source] = runners[source](result, cfg, ctx)
    result.details = details
    from .figures import figures

    for name, fig in figures(result, cfg).items():
        ctx.artifacts.save_figure(name, fig)
    result.artifacts.update(ctx.artifacts.saved)
    result.figures.update(ctx.artifacts.figures)
    return result
