"""saes-vs-clustering: planted ground truths first (exact clusters, planted 1-sparse lines,
sparse superposition), then the pieces checked against an independent computation
(scikit-learn's k-means, a TransformerLens CE, token labels against span text), then one
small zoo run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDEA = "saes-vs-clustering"


def _save(tmp_path, x, key="activations", name="acts.safetensors"):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file({key: x.contiguous()}, str(path))
    return str(path)


def _blobs(n=4000, d=16, k=8, noise=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 3
    lab = torch.randint(k, (n,), generator=g)
    return centres[lab] + noise * torch.randn(n, d, generator=g)


def _superposition(n=8000, d=32, n_features=64, active=3, seed=0):
    """Each row a sum of `active` of `n_features` > d unit features, coefficients in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_features, d, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) + 0.5
    return (coef[:, :, None] * w[idx]).sum(1) + 0.01 * torch.randn(n, d, generator=g)


# --------------------------------------------------------------------------- ground truth


def test_exact_clusters_kmeans_at_that_k_explains_99_percent(tmp_path):
    """K planted clusters plus small noise: k-means at K explains >= 0.99 of the held-out
    variance (through the idea, from a user's activations file); at K/4 it cannot."""
    import mi_ideas

    path = _save(tmp_path, _blobs())
    rec = mi_ideas.run(IDEA, quiet=True, out=tmp_path / "runs", activations=path,
                       sizes=[2, 8], methods=["kmeans", "random"], kmeans_iters=20)
    m = rec.metrics
    assert m["kmeans.8.ev"] >= 0.99
    assert m["kmeans.2.ev"] < 0.8                      # too few clusters: structure left over
    assert m["random.8.ev"] < m["kmeans.8.ev"] - 0.2   # unfitted directions do not explain it
    assert "kmeans.8.ce_increase" not in m              # no model produced these rows
    assert not any(k.endswith(".purity") for k in m)    # no labels came with them


def test_sparse_superposition_sae_beats_kmeans(tmp_path):
    """Rows that are sparse sums of more features (64) than dimensions (32): a TopK SAE with
    K = 64 latents (trained with SAELens) explains far more than k-means with 64 centroids."""
    import mi_ideas

    path = _save(tmp_path, _superposition())
    rec = mi_ideas.run(IDEA, quiet=True, out=tmp_path / "runs", activations=path, sizes=[64],
                       methods=["kmeans", "sae"], sae_k=3, sae_steps=400, kmeans_iters=20)
    m = rec.metrics
    assert m["sae.64.ev"] >= 0.8
    assert m["sae.64.ev"] >= m["kmeans.64.ev"] + 0.25
    assert m["sae.64.l0"] == pytest.approx(3.0)
    saved = json.loads((Path(rec.run_dir) / "artifacts" / "saebench-sae.64.json").read_text())
    assert set(saved) >= {"eval_type_id", "eval_config", "eval_result_metrics", "sae_cfg_dict"}
    assert saved["eval_result_metrics"]["reconstruction_quality"]["explained_variance"] == \
        pytest.approx(m["sae.64.ev"])
    assert saved["eval_result_metrics"]["sparsity"]["l0"] == pytest.approx(3.0)
    assert saved["sae_cfg_dict"]["d_sae"] == 64


def test_scaled_kmeans_recovers_planted_lines():
    """Rows = mean + a·u_j with a of either sign and any size (K planted lines): the 1-sparse
    dictionary at K explains >= 0.99, plain k-means at the same K cannot (it has no scale)."""
    from mi_ideas.metrics import explained_variance
    from mi_ideas_plugins.dictionary.common.kmeans import kmeans, scaled_kmeans
    from mi_ideas_plugins.dictionary.common.rows import RowSource

    g = torch.Generator().manual_seed(1)
    k, d, n = 6, 20, 6000
    u = torch.randn(k, d, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    mu = torch.randn(d, generator=g)
    a = torch.randn(n, generator=g) * 3
    x = mu + a[:, None] * u[torch.randint(k, (n,), generator=g)] + 0.01 * torch.randn(n, d, generator=g)
    train, held = RowSource.of(x[:5000]), x[5000:]
    sk = scaled_kmeans(train, k, mean=x[:5000].mean(0), n_iter=20)
    km = kmeans(train, k, n_iter=20)
    assert explained_variance(held, sk.reconstruct(held)) >= 0.99
    assert explained_variance(held, km.reconstruct(held)) < 0.9
    # the fitted directions are the planted ones (up to sign and order)
    assert (sk.directions @ u.T).abs().max(0).values.min() > 0.99


def test_torch_kmeans_equals_sklearn_from_the_same_start():
    """Same data, same k-means++ start, same iteration count: the streamed torch Lloyd
    reaches scikit-learn's centroids and inertia (and faiss's, when installed); streaming
    in small batches changes nothing."""
    import numpy as np
    from sklearn.cluster import KMeans

    from mi_ideas_plugins.dictionary.common.kmeans import kmeans, kmeans_pp, lloyd
    from mi_ideas_plugins.dictionary.common.rows import RowSource

    x = _blobs(n=3000, d=8, k=12, noise=1.0, seed=3)
    src = RowSource.of(x)
    c0 = kmeans_pp(x, 12, torch.Generator().manual_seed(0))
    ours = lloyd(src, c0, 15)
    sk = KMeans(12, init=c0.numpy(), n_init=1, max_iter=15, tol=0.0, algorithm="lloyd").fit(x.numpy())
    assert ours.inertia == pytest.approx(float(sk.inertia_), rel=1e-4)
    assert torch.allclose(ours.centroids, torch.from_numpy(sk.cluster_centers_).float(), atol=1e-3)
    small = lloyd(src, c0, 15, batch_size=97)
    assert small.inertia == pytest.approx(ours.inertia, rel=1e-6)
    via_sklearn = kmeans(src, 12, n_iter=15, backend="sklearn", init=c0)
    assert via_sklearn.inertia == pytest.approx(ours.inertia, rel=1e-4)
    try:
        import faiss  # noqa: F401 - optional back-end
    except ImportError:
        return
    via_faiss = kmeans(src, 12, n_iter=15, backend="faiss", init=c0)
    assert via_faiss.inertia == pytest.approx(ours.inertia, rel=1e-3)
    assert np.isfinite(via_faiss.inertia)


def test_purity_recovers_planted_units_and_not_random_ones():
    """Units that fire exactly on one label's rows have purity 1, far above the shuffled
    baseline; units with random scores are no purer than shuffled labels (the bootstrap
    interval of the excess covers 0)."""
    import numpy as np

    from mi_ideas_plugins.dictionary.common.purity import purity_summary

    g = torch.Generator().manual_seed(0)
    n = 3000
    names = ["none", "colour", "animal", "food"]
    lab_idx = torch.randint(4, (n,), generator=g)
    labels = [names[i] for i in lab_idx.tolist()]
    planted = torch.stack([(lab_idx == j).float() + 0.1 * torch.rand(n, generator=g)
                           for j in range(4)], 1)
    s = purity_summary(planted, planted > 0.5, labels, 20, np.random.default_rng(0))
    assert s["purity"] == 1.0 and s["n_units"] == 4
    assert s["purity_shuffled"] < 0.7 and s["purity_excess_ci_lo"] > 0.2
    assert s["concept_units"] == pytest.approx(0.75)   # 3 of 4 units are concept units
    noise = torch.randn(n, 64, generator=g)
    r = purity_summary(noise, torch.ones_like(noise, dtype=torch.bool), labels, 20,
                       np.random.default_rng(0))
    assert r["purity_excess_ci_lo"] < 0 < r["purity_excess_ci_hi"]
    # units active on fewer rows than `top` are not scored
    few = torch.zeros(n, 2)
    few[:5, 0] = 1.0
    few[:, 1] = torch.rand(n, generator=g)
    f = purity_summary(few, few > 0, labels, 20, np.random.default_rng(0))
    assert f["n_units"] == 1 and f["per_unit"][0] is None


def test_in_memory_rows_reach_the_array_backends_without_a_copy():
    """sklearn / faiss need one array: an in-memory source hands over its own rows (same
    storage), a transformed one a single concatenation of the mapped batches."""
    from mi_ideas_plugins.dictionary.common.rows import RowSource

    x = torch.randn(100, 6)
    src = RowSource.of(x)
    assert src.materialize().data_ptr() == src._tensor.data_ptr()
    torch.testing.assert_close(src.mapped(lambda b: b * 2).materialize(), x * 2)


def test_paired_text_bootstrap_separates_planted_units_from_random_ones():
    """The paired SAE-vs-clustering comparison: planted pure units against random ones give
    an excess-purity difference whose interval excludes 0; two equally random dictionaries
    give one that covers 0; the vectorised bootstrap scorer equals unit_purity."""
    import numpy as np

    from mi_ideas_plugins.dictionary.common.purity import (
        _replicate_purity,
        _text_candidates,
        _top_rows,
        paired_text_bootstrap,
        unit_purity,
    )

    g = torch.Generator().manual_seed(1)
    n_texts, per = 40, 50
    doc = torch.arange(n_texts).repeat_interleave(per)
    names = ["none", "colour", "animal", "food"]
    lab_idx = torch.randint(4, (len(doc),), generator=g)
    labels = [names[i] for i in lab_idx.tolist()]
    planted = torch.stack([(lab_idx == j).float() + 0.1 * torch.rand(len(doc), generator=g)
                           for j in range(4)], 1)
    noise = torch.randn(len(doc), 16, generator=g)
    noise2 = torch.randn(len(doc), 16, generator=g)
    every = torch.ones_like(noise, dtype=torch.bool)
    c = paired_text_bootstrap((planted, planted > 0.5), (noise, every), labels, doc, 20,
                              np.random.default_rng(0), n_boot=200)
    assert c["n_texts"] == n_texts
    assert c["purity_excess_diff"] > 0.3 and c["purity_excess_diff_ci_lo"] > 0.2
    assert c["purity_excess_diff_p"] < 0.01
    null = paired_text_bootstrap((noise, every), (noise2, every), labels, doc, 20,
                                 np.random.default_rng(0), n_boot=200)
    assert null["purity_excess_diff_ci_lo"] < 0 < null["purity_excess_diff_ci_hi"]
    # top contexts: ties (repeated contexts) go to the earlier row, as a stable sort orders them
    tied = torch.randint(-3, 4, (57, 9), generator=g).float()
    tied[torch.rand(57, 9, generator=g) < 0.2] = float("-inf")
    assert torch.equal(_top_rows(tied, 10), torch.sort(tied, dim=0, descending=True, stable=True).indices[:10])
    # a replicate's purity (from per-text candidates) is unit_purity on the picked texts' rows,
    # a text picked twice counting twice
    lab = lab_idx.numpy()
    rows_of = [torch.nonzero(doc == t)[:, 0] for t in range(n_texts)]
    cand = _text_candidates(noise, every, (lab_idx,), rows_of, 20)
    for picks in (torch.arange(n_texts), torch.tensor([3, 3, 7, 11, 11, 11, 20, 39])):
        rows = torch.cat([rows_of[i] for i in picks])
        p, _ = unit_purity(noise[rows], every[rows], lab[rows.numpy()], 20)
        assert _replicate_purity(cand, picks, 20, 4)[0] == pytest.approx(float(np.nanmean(p)))


# --------------------------------------------------------------------------- pieces vs independent


@pytest.fixture(scope="module")
def zoo():
    from mi_ideas import load_dataset, load_subject

    return load_subject("zoo:stories-gpt2"), load_dataset("zoo:stories:12")


def test_row_labels_match_the_span_text(zoo):
    """Every row labelled with a concept is a token inside that span's word; every span word
    of a harvested text yields at least one labelled row."""
    from mi_ideas.harvest import harvest_to_cache
    from mi_ideas_plugins.dictionary.common.purity import row_labels

    subject, ds = zoo
    acts = harvest_to_cache(subject, ds, ["resid_pre.2"], max_length=48)
    doc, pos, tok = acts.load("doc"), acts.load("pos"), acts.load("token")
    labels = row_labels(subject.tokenizer, ds.texts, ds.spans, doc, pos)
    assert len(labels) == acts.n_rows
    n_concept = 0
    for lab, d, t in zip(labels, doc.tolist(), tok.tolist()):
        if lab == "none":
            continue
        n_concept += 1
        word = subject.tokenizer.decode([t]).strip().lower()
        assert any(s.category == lab and word and word in s.text.lower() for s in ds.spans[d]), (lab, word)
    assert n_concept > 0.1 * len(labels)


def test_splice_of_the_activation_itself_is_the_clean_ce(zoo):
    """Writing x back over the site changes nothing (CE equal to 1e-5); the clean CE equals
    one computed independently with TransformerLens; zero ablation costs loss."""
    from mi_ideas import load_subject
    from mi_ideas.harvest import harvest_to_cache
    from mi_ideas_plugins.dictionary.common.evaluate import SpliceSet

    subject, ds = zoo
    texts = ds.texts[:6]
    acts = harvest_to_cache(subject, texts, ["resid_pre.2"], max_length=40, batch_size=4)
    splice = SpliceSet(subject, texts, "resid_pre.2", max_length=40, batch_size=4)
    assert splice.n_rows == acts.n_rows
    clean = splice.ce(None)
    assert splice.ce(acts.load("resid_pre.2")) == pytest.approx(clean, abs=1e-5)
    assert splice.ce(torch.zeros(subject.d_model)) > clean + 0.5
    tl = load_subject("tl:zoo:stories-gpt2")
    total, count = 0.0, 0
    for t in texts:
        ids = tl.tokenize([t], max_length=40).input_ids
        logp = tl.forward(ids, logits=True).logits[0].float().log_softmax(-1)
        # scored: positions 1 .. n-2 (after BOS, not the last), predicting the next token
        tgt = ids[0, 2:]
        total += float(-logp[1:-1].gather(1, tgt[:, None]).sum())
        count += len(tgt)
    assert clean == pytest.approx(total / count, abs=1e-4)


def test_activation_file_errors_name_the_problem(tmp_path):
    from mi_ideas.errors import UsageError
    from mi_ideas_plugins.dictionary.common.rows import load_activations_file

    with pytest.raises(UsageError, match="no such file"):
        load_activations_file(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UsageError, match="no tensor named 'activations'.*'acts'"):
        load_activations_file(_save(tmp_path, torch.randn(10, 4), key="acts", name="k.st"))
    with pytest.raises(UsageError, match=r"shape \(2, 5, 4\).*\(n_rows, d\)"):
        load_activations_file(_save(tmp_path, torch.randn(2, 5, 4), name="s.st"))
    with pytest.raises(UsageError, match="floating point"):
        load_activations_file(_save(tmp_path, torch.ones(10, 4, dtype=torch.long), name="i.st"))
    (tmp_path / "junk.st").write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match="not a readable safetensors"):
        load_activations_file(str(tmp_path / "junk.st"))
    bad = torch.randn(10, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(UsageError, match="NaN"):
        load_activations_file(_save(tmp_path, bad, name="nan.st"))


def test_a_bad_activations_file_is_refused_before_the_run(tmp_path):
    """The config check reads the file's header: nothing is loaded or written."""
    import mi_ideas
    from mi_ideas.errors import ConfigError

    with pytest.raises(ConfigError, match="activations.*no tensor named 'activations'"):
        mi_ideas.run(IDEA, quiet=True, out=tmp_path / "runs",
                     activations=_save(tmp_path, torch.randn(10, 4), key="x"))
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the zoo


def test_zoo_run(tmp_path):
    """A small run on the zoo model: every method at every K, sensible orderings that hold
    for any correct implementation, the given zoo SAE scored, the SAEBench export, and
    headlines that name existing metrics."""
    import mi_ideas
    from mi_ideas.host import Host

    rec = mi_ideas.run(IDEA, quiet=True, out=tmp_path / "runs", data="zoo:stories:60",
                       sizes=[8, 32], n_eval_texts=12, sae_steps=150, kmeans_iters=10,
                       purity_size=32)
    m = rec.metrics
    for meth in ("kmeans", "kmeans_scaled", "pca_kmeans", "sae", "random"):
        for k in (8, 32):
            for key in ("ev", "mse", "l0", "ce_increase", "ce_loss_score"):
                assert math.isfinite(m[f"{meth}.{k}.{key}"]), (meth, k, key)
    assert m["kmeans.32.ev"] > m["kmeans.8.ev"]
    assert m["kmeans.32.ev"] > m["random.32.ev"]
    # the zoo's own SAE (d_sae 1024, k 16) is a good reconstruction of resid_pre.2
    assert m["sae_given.1024.ev"] > 0.9 and m["sae_given.1024.ce_loss_score"] > 0.9
    # ablating the site costs loss (which of zero / mean ablation costs more is a fact about
    # the model, not the method: the corpus-v2 zoo has mean ablation worse than zero)
    assert min(m["ce_zero_ablation"], m["ce_mean_ablation"]) > m["ce_clean"]
    # a worse reconstruction (lower EV) costs more loss than the zoo SAE's
    assert m["kmeans.8.ce_increase"] > m["sae_given.1024.ce_increase"]
    assert m["sae.32.purity_shuffled"] == pytest.approx(m["sae.32.purity"] - m["sae.32.purity_excess"])
    for k in (8, 32):  # purity at every K, and the paired SAE-vs-clustering comparison
        for meth in ("kmeans", "kmeans_scaled", "pca_kmeans", "sae", "random"):
            assert f"{meth}.{k}.purity" in m
        c = f"cmp.sae_vs_kmeans.{k}.purity_excess_diff"
        assert m[c + "_ci_lo"] <= m[c] <= m[c + "_ci_hi"] and m[f"cmp.sae_vs_kmeans.{k}.n_texts"] == 12
        assert m[c] == pytest.approx(m[f"sae.{k}.purity_excess"] - m[f"kmeans.{k}.purity_excess"], abs=1e-9)
    export = json.loads((Path(rec.run_dir) / "artifacts" / "saebench-sae_given.1024.json").read_text())
    mpp = export["eval_result_metrics"]["model_performance_preservation"]
    assert mpp["ce_loss_score"] == pytest.approx(m["sae_given.1024.ce_loss_score"])
    assert (Path(rec.run_dir) / "figures" / "ev-curves.png").is_file()
    cls = Host().ideas[IDEA]
    heads = cls.headlines(rec)
    assert heads and all(h.metric in m and (h.control is None or h.control in m) for h in heads
                         if ".32." in h.metric or ".8." in h.metric)
    assert "K=32" in cls.answer(rec)
    items = cls.estimate_memory(cls.Config(), None, None)
    assert items and all(i.bytes >= 0 for i in items)
