"""SAELens training through mi-ideas: activation_provider (a DataProvider over the harvest
cache) and evaluator (mi-ideas metrics inside SAETrainer), locally and through the loopback
NDIF server."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from mi_ideas.data import Dataset
from mi_ideas.errors import UsageError
from mi_ideas.integrations.sae_lens import (
    DEFAULT_IDEAS,
    DEFAULT_METRICS,
    METRICS,
    ActivationProvider,
    Evaluator,
    KMeansBaseline,
    activation_provider,
    evaluator,
    explained_variance,
    register_metric,
    row_mask,
    split_dataset,
)
from tests.tiny_models import WORDS

SITE = "resid_pre.1"
MAX_LEN = 40
BATCH = 64


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) for _ in range(n)]


DATA = Dataset("tiny-words", _texts(160, 0))
TRAIN, HELD_OUT = split_dataset(DATA, 40)


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("sae-lens-cache")
    mp.setenv("MI_IDEAS_CACHE", str(path))
    mp.setenv("WANDB_MODE", "disabled")
    yield path
    mp.undo()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _direct_rows(subject, texts):
    """Activations read one text at a time (no padding), BOS dropped: what harvest stores."""
    rows = []
    for t in texts:
        batch = subject.tokenize([t], max_length=MAX_LEN)
        rows.append(subject.forward(batch, read=[SITE]).activations[SITE][0, 1:])
    return torch.cat(rows)


def _take(provider, n_rows):
    out, have = [], 0
    while have < n_rows:
        b = next(provider)
        out.append(b)
        have += len(b)
    return out


# -- the provider --------------------------------------------------------------------------


def test_provider_batches_are_the_subjects_activations_epoch_after_epoch(local):
    texts = TRAIN.texts[:12]
    want = _direct_rows(local, texts)
    prov = activation_provider(local, SITE, Dataset("p", texts), 50, max_length=MAX_LEN)
    assert prov.n_rows == len(want)
    batches = _take(prov, 2 * len(want) + 10)  # past the end of two epochs
    assert all(b.shape == (50, local.d_model) and b.dtype == torch.float32 for b in batches)
    got = torch.cat(batches)
    expect = torch.cat([want, want, want])[: len(got)]  # harvest order, looping
    assert torch.allclose(got, expect, atol=1e-5)
    assert prov.epochs == 3 and prov.rows_served == len(got)


def test_shuffled_provider_permutes_each_epoch_and_one_pass_stops(local):
    texts = TRAIN.texts[:12]
    plain = activation_provider(local, SITE, Dataset("p", texts), 10_000, max_length=MAX_LEN,
                                loop=False)
    (whole,) = list(plain)  # loop=False: one pass, the last (here only) batch is what is left
    n = len(whole)
    key = torch.randn(local.d_model, generator=torch.Generator().manual_seed(0))

    def canon(x):  # rows as a multiset
        return x[torch.argsort(x @ key)]

    # in memory: every epoch is a permutation of all rows, fixed by the seed
    a = ActivationProvider(plain.activations, SITE, n, shuffle_seed=1)
    b = ActivationProvider(plain.activations, SITE, n, shuffle_seed=1)
    e1, e2 = next(a), next(a)
    assert torch.equal(e1, next(b))
    assert torch.allclose(canon(e1), canon(whole)) and torch.allclose(canon(e2), canon(whole))
    assert not torch.equal(e1, whole) and not torch.equal(e1, e2)
    # too big for the budget: a mixing buffer streams from the shards
    mixing = ActivationProvider(plain.activations, SITE, 16, shuffle_seed=2, loop=False,
                                budget_mb=1e-4)
    assert not mixing._in_memory and mixing.buffer_rows == 32
    rows = torch.cat(list(mixing))
    assert len(rows) == n and torch.allclose(canon(rows), canon(whole))
    assert not torch.equal(rows, whole)


def test_second_provider_over_the_same_specs_reads_the_cache(ndif_model_dir, tmp_path,
                                                             monkeypatch):
    from mi_ideas.backends.nnsight_backend import NNsightSubject

    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TRAIN.texts[:20]))
    first = activation_provider(f"hf:{ndif_model_dir}", SITE, f"text:{data}", 32,
                                max_length=MAX_LEN)
    want = _take(first, 3 * 32)
    calls = []
    monkeypatch.setattr(NNsightSubject, "_forward",
                        lambda *a, **k: calls.append(1) or pytest.fail("the model was called"))
    monkeypatch.setattr(NNsightSubject, "check_renaming", lambda self, run=True: None)
    again = activation_provider(f"hf:{ndif_model_dir}", SITE, f"text:{data}", 32,
                                max_length=MAX_LEN)
    assert again.activations.path == first.activations.path
    for w, g in zip(want, _take(again, 3 * 32)):
        assert torch.equal(w, g)
    assert not calls


# -- k-means baseline and metric registry --------------------------------------------------


def test_kmeans_baseline_is_perfect_on_clusters_and_poor_on_a_gaussian():
    g = torch.Generator().manual_seed(0)
    k, d = 12, 16
    centers = torch.randn(k, d, generator=g) * 10

    def clusters(n):
        noise = 1e-3 * torch.randn(n, d, generator=g)
        return centers[torch.randint(0, k, (n,), generator=g)] + noise

    km = KMeansBaseline.fit(clusters(600), k, seed=0)
    assert km.k == k
    assert km.explained_variance(clusters(400)) > 0.999  # held-out rows, same clusters
    gauss = KMeansBaseline.fit(torch.randn(600, d, generator=g), k, seed=0)
    assert gauss.explained_variance(torch.randn(400, d, generator=g)) < 0.3
    # k >= rows: every row is its own centroid, so the fitting rows are reproduced exactly
    x = torch.randn(5, d, generator=g)
    assert torch.equal(KMeansBaseline.fit(x, 8).reconstruct(x), x)
    # the definition: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²
    y = torch.randn(50, d, generator=g)
    assert explained_variance(y, y.mean(0).expand_as(y)) == pytest.approx(0.0, abs=1e-9)
    assert explained_variance(y, y) == 1.0


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(UsageError) as err:
        evaluator(["explained-variance", "plateau-preservatoin"], subject="hf:x", dataset=["a"])
    msg = str(err.value)
    assert "'plateau-preservatoin'" in msg
    assert all(name in msg for name in METRICS)
    # a dictionary that maps one site to another is refused before any work
    from types import SimpleNamespace

    transcoder = SimpleNamespace(cfg=SimpleNamespace(d_in=32, d_out=16))
    with pytest.raises(UsageError, match="maps one site to another"):
        evaluator(subject="hf:/nowhere", dataset=["a b"])(transcoder)


def test_ideas_is_the_deprecated_name_of_metrics():
    kw = dict(subject="hf:/nowhere", dataset=["a b"])  # nothing is loaded before a call
    with pytest.warns(DeprecationWarning, match="use metrics=") as caught:
        ev = evaluator(ideas=["sparsity", "explained-variance"], **kw)
    assert ev.metrics == ["sparsity", "explained-variance"]
    assert caught[0].filename == __file__  # the warning points at the caller
    with pytest.warns(DeprecationWarning, match="use metrics="):
        assert Evaluator(ideas="sparsity", **kw).metrics == ["sparsity"]
    with pytest.warns(DeprecationWarning, match="Evaluator.metrics"):
        assert ev.ideas == ev.metrics
    # the old name still checks the names, and passing both names is refused
    with pytest.warns(DeprecationWarning), pytest.raises(UsageError, match="'nope'"):
        evaluator(ideas=["nope"], **kw)
    with pytest.raises(UsageError, match="both metrics=... and ideas=..."):
        evaluator(metrics=["sparsity"], ideas=["sparsity"], **kw)
    with pytest.raises(UsageError, match="both metrics=... and ideas=..."):
        Evaluator(["sparsity"], ideas=["sparsity"], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluator(metrics="sparsity", **kw).metrics == ["sparsity"]
        assert Evaluator(**kw).metrics == list(DEFAULT_METRICS)
    assert DEFAULT_IDEAS == DEFAULT_METRICS


# -- training with SAELens's own trainer ---------------------------------------------------


def _sae(d_in: int, seed: int = 0):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(seed)
    return TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=d_in, d_sae=64, k=4, normalize_activations="expected_average_only_in"))


def _train(sae, provider, ev, steps: int, monkeypatch):
    """SAETrainer.fit with wandb disabled, recording what the trainer logs."""
    import wandb
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=3e-3,
        lr_end=3e-4, dead_feature_window=50, feature_sampling_window=100,
        n_batches_for_norm_estimate=20,
        logger=LoggingConfig(log_to_wandb=True, wandb_log_frequency=10,
                             eval_every_n_wandb_logs=5))
    logged: list[tuple[int, dict]] = []
    run = wandb.init(mode="disabled")
    monkeypatch.setattr(wandb, "log", lambda data, step=None, **kw: logged.append((step, data)))
    try:
        SAETrainer(cfg, sae, provider, ev).fit()
    finally:
        monkeypatch.undo()
        run.finish()
    return [(step, d) for step, d in logged if any(k.startswith("mi_ideas/") for k in d)]


def test_train_a_topk_sae_locally_with_the_evaluator(local, monkeypatch, cache_dir):
    prov = activation_provider(local, SITE, TRAIN, BATCH, max_length=MAX_LEN, shuffle_seed=0)
    ev = evaluator(subject=local, dataset=HELD_OUT, site=SITE, n_eval_tokens=400,
                   max_length=MAX_LEN)
    sae = _sae(local.d_model)
    before = ev(sae, prov, None)
    evals = _train(sae, prov, ev, 300, monkeypatch)
    # the trainer called the evaluator every 10 * 5 steps and logged its metrics
    assert [s for s, _ in evals] == [49, 99, 149, 199, 249, 299]
    last = evals[-1][1]
    assert set(last) >= {"mi_ideas/" + k for n in DEFAULT_METRICS for k in METRICS[n].keys}
    assert prov.epochs > 2  # SAETrainer pulled more than the harvest: the provider looped
    ev0, ev1 = before["mi_ideas/explained_variance"], last["mi_ideas/explained_variance"]
    assert ev0 < 0 and ev1 > 0.5  # the SAE learned
    assert [d["mi_ideas/explained_variance"] for _, d in evals][0] < ev1
    assert last["mi_ideas/l0"] == pytest.approx(4.0)
    assert 0 <= last["mi_ideas/dead_latents_fraction"] < 0.5
    assert last["mi_ideas/kmeans_k"] == 64 and 0 < last["mi_ideas/kmeans_explained_variance"] < 1
    # splicing the trained reconstruction hurts the output less than the untrained one,
    # and less than erasing the site to its mean
    assert last["mi_ideas/spliced_kl"] < before["mi_ideas/spliced_kl"]
    assert last["mi_ideas/spliced_kl"] < last["mi_ideas/mean_ablation_kl"]
    assert last["mi_ideas/spliced_kl_fraction"] == pytest.approx(
        last["mi_ideas/spliced_kl"] / last["mi_ideas/mean_ablation_kl"])
    # after fit() folded SAELens's norm scaling into the SAE, evaluating with no scaler
    # gives the numbers logged at the last step: the scaler was applied and undone
    after = ev(sae)
    for key in ("mi_ideas/explained_variance", "mi_ideas/spliced_kl", "mi_ideas/l0"):
        assert after[key] == pytest.approx(last[key], abs=1e-5), key
    # splicing the harvested activations themselves changes nothing: rows and positions align
    assert ev.spliced_kl(ev.x_eval) < 1e-6
    assert ev.spliced_kl(ev.x_eval.roll(1, 0)) > 1e-3
    # k-means was fitted once (cached on disk), on rows disjoint from the eval set
    assert len(list((cache_dir / "kmeans").glob("*.safetensors"))) == 1
    assert len(ev.x_eval) >= 400 and len(ev.x_fit) == 400
    assert not any(torch.equal(r, ev.x_fit[0]) for r in ev.x_eval)
    # the EV reported is the documented formula on the eval set
    ctx_hat = sae.decode(sae.encode(ev.x_eval)).detach()
    assert after["mi_ideas/explained_variance"] == pytest.approx(
        explained_variance(ev.x_eval, ctx_hat), abs=1e-5)


def test_registered_metrics_slot_in(local):
    @register_metric("test-mean-norm", keys=("mean_norm",),
                     description="mean ‖x̂‖ over the eval set (test only)")
    def mean_norm(ctx):
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return {"mean_norm": ctx.x_hat.norm(dim=-1).mean(), "calls": ctx.state["calls"]}

    try:
        ev = evaluator(metrics=["test-mean-norm", "sparsity"], subject=local,
                       dataset=HELD_OUT, site=SITE, n_eval_tokens=100, max_length=MAX_LEN,
                       prefix="x/")
        sae = _sae(local.d_model)
        out = ev(sae)
        assert set(out) == {"x/mean_norm", "x/calls", "x/l0", "x/dead_latents_fraction"}
        assert ev(sae)["x/calls"] == 2  # state persists between calls
        with pytest.raises(UsageError, match="already registered"):
            register_metric("sparsity", description="again")(mean_norm)
    finally:
        METRICS.pop("test-mean-norm", None)


def test_train_through_the_loopback_ndif_server(local, remote, ndif_server, monkeypatch):
    n_train = 60
    train = Dataset("remote-train", TRAIN.texts[:n_train])
    before = ndif_server.stats()["requests"]
    prov = activation_provider(remote, SITE, train, BATCH, max_length=MAX_LEN,
                               harvest_batch_size=32, shuffle_seed=0)
    assert ndif_server.stats()["requests"] == before + 2  # one request per harvest batch
    again = activation_provider(remote, SITE, train, BATCH, max_length=MAX_LEN)
    assert ndif_server.stats()["requests"] == before + 2  # the second provider: cache only
    # the rows NDIF returned are the local model's
    local_prov = activation_provider(local, SITE, train, BATCH, max_length=MAX_LEN)
    assert torch.allclose(next(again), next(local_prov), atol=1e-5)

    ev = evaluator(subject=remote, dataset=HELD_OUT, site=SITE, n_eval_tokens=200,
                   max_length=MAX_LEN, batch_size=32)
    sae = _sae(remote.d_model, seed=1)
    start = ev(sae, prov, None)
    n_batches = len(ev.eval_batches())
    mark = ndif_server.stats()["requests"]
    ev(sae, prov, None)
    assert ndif_server.stats()["requests"] == mark + n_batches  # spliced KL: one per batch
    evals = _train(sae, prov, ev, 150, monkeypatch)
    assert [s for s, _ in evals] == [49, 99, 149]
    last = evals[-1][1]
    assert start["mi_ideas/explained_variance"] < 0 < last["mi_ideas/explained_variance"] - 0.3
    assert last["mi_ideas/spliced_kl"] < start["mi_ideas/spliced_kl"]
    # the same SAE evaluated on the local subject gives the same numbers
    local_ev = evaluator(subject=local, dataset=HELD_OUT, site=SITE, n_eval_tokens=200,
                         max_length=MAX_LEN, batch_size=32)
    here, there = local_ev(sae), ev(sae)
    for key, value in there.items():
        assert here[key] == pytest.approx(value, abs=1e-4), key


def test_row_mask_matches_harvest_rows(local):
    batch = local.tokenize(["one two three", "a"], max_length=MAX_LEN)
    mask = row_mask(batch)
    assert mask.sum().item() == batch.attention_mask.sum().item() - 2  # BOS of each text
    assert row_mask(batch, "last")[:, -1].all() and row_mask(batch, "last").sum() == 2


def test_plateau_preservation_of_a_perfect_and_a_broken_reconstruction(local):
    """x̂ = x stays in every plateau; x̂ = x + large noise leaves them, like isotropic noise."""
    import torch

    ev = evaluator(["plateau-preservation"], subject=local, dataset=HELD_OUT, site=SITE,
                   n_eval_tokens=200, max_length=MAX_LEN)

    class Recon(torch.nn.Module):
        def __init__(self, noise: float):
            super().__init__()
            self.noise = noise
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.cfg = type("Cfg", (), {"d_sae": local.d_model})()

        def encode(self, x):
            return x

        def decode(self, f):
            g = torch.Generator().manual_seed(1)
            return f + self.noise * torch.randn(f.shape, generator=g)

    perfect = ev(Recon(0.0))
    assert perfect["mi_ideas/plateau_in_fraction"] == 1.0
    assert perfect["mi_ideas/plateau_in_fraction_isotropic"] == 1.0  # zero-length errors
    broken = ev(Recon(20.0))
    assert broken["mi_ideas/plateau_in_fraction"] < 0.5
    assert 0.2 < broken["mi_ideas/plateau_kl_ratio"] < 5  # Gaussian noise ~ isotropic noise
