"""The last-position fast path: ``Subject.prefix_cache`` + ``Subject.forward_last_token``.

Ground truth is the existing exact path, ``Subject.forward`` of the same rows with a
``replace`` intervention at the last position: on tiny random models of every supported
architecture (``tests/tiny_models.py``) and on the zoo model, for a left-padded batch of
prompts of different lengths (one of them only the BOS token), random rows with repeats and
random replacements at resid_pre.L for L first, middle and last. TransformerLens's own
path must agree with it and with nnsight's.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import pytest
import torch

from mi_ideas.errors import UsageError
from mi_ideas.subject import Batch, Intervention, PrefixCache, StatsRequest, Subject
from tests.tiny_models import ARCH_NAMES, build_tiny

TEXTS = ["the cat is on the red car and the dog", "a dog", "paris is in france",
         "", "one two three four five six seven eight nine ten"]
ZOO_TEXTS = ["Once upon a time there was a little cat", "The dog ran",
             "Tom and Lily went to the park to play with a big red ball", "Sam"]
ATOL = 1e-5
TL_ATOL = 1e-4  # TransformerLens against nnsight (different kernels), as in test_architectures
#: architectures TransformerLens 3.x converts offline from a local directory
TL_CONVERTS = ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "mistral", "qwen2", "qwen3")
N_ROWS = 13


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Models:
    """Per architecture, built once for this module: nnsight and TransformerLens subjects."""

    def __init__(self, factory: pytest.TempPathFactory):
        self.factory, self.cache = factory, {}

    def _get(self, key: tuple, make):
        if key not in self.cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.cache[key] = make()
        return self.cache[key]

    def dir(self, arch: str):
        return self._get(("dir", arch), lambda: build_tiny(arch, self.factory.mktemp("tiny")))

    def nnsight(self, arch: str):
        from mi_ideas import load_subject

        if arch == "zoo":
            return self._get(("nn", arch), lambda: load_subject("zoo:stories-gpt2"))
        return self._get(("nn", arch), lambda: load_subject(f"hf:{self.dir(arch)}"))

    def tl(self, arch: str):
        from mi_ideas import load_subject

        if arch == "zoo":
            return self._get(("tl", arch), lambda: load_subject("tl:zoo:stories-gpt2"))
        return self._get(("tl", arch), lambda: load_subject(f"tl:{self.dir(arch)}"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> _Models:
    return _Models(tmp_path_factory)


def _batch(subject: Subject, arch: str) -> Batch:
    batch = subject.tokenize(ZOO_TEXTS if arch == "zoo" else TEXTS)
    lengths = batch.attention_mask.sum(-1)
    assert len(set(lengths.tolist())) > 2 and int(lengths.min()) < batch.shape[1]  # padded
    return batch


def _layers(subject: Subject) -> list[int]:
    return sorted({0, subject.n_layers // 2, subject.n_layers - 1})


def _clean(subject: Subject, batch: Batch) -> dict[str, torch.Tensor]:
    """Clean last-position log-probs, final residual and resid_pre.L of the batch."""
    final = f"resid_post.{subject.n_layers - 1}"
    sites = [f"resid_pre.{L}" for L in _layers(subject)]
    out = subject.forward(batch, read=[final, *sites], positions="last", logits=True)
    return {"logprobs": out.logits[:, -1].float().log_softmax(-1), "final": out.activations[final],
            **{s: out.activations[s] for s in sites}}


def _rows_and_x(subject: Subject, batch: Batch, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(batch), (N_ROWS,), generator=gen)
    rows[:len(batch)] = torch.arange(len(batch))  # every prompt at least once, then repeats
    rows = rows[torch.randperm(N_ROWS, generator=gen)]
    x = 3 * torch.randn(N_ROWS, subject.d_model, generator=gen)
    return rows, x


def _request(clean: dict, rows: torch.Tensor) -> StatsRequest:
    return StatsRequest(kl_reference=clean["logprobs"][rows], l2_reference=clean["final"][rows],
                        topk=5, final_norm=True, entropy=True)


def _exact(subject: Subject, batch: Batch, rows, site: str, x, request) -> Any:
    """The existing path: a full forward of the rows with a last-position replacement."""
    chunk = Batch(batch.input_ids[rows], batch.attention_mask[rows])
    return subject.forward(chunk, stats=request, logits=True,
                           interventions=[Intervention(site, "replace", x, positions="last")])


def _assert_same(got: Any, want: Any, atol: float) -> None:
    assert set(got.stats) == set(want.stats)
    assert torch.equal(got.stats["topk_ids"], want.stats["topk_ids"])
    for key in ("kl", "l2", "final_norm", "entropy", "topk_logprobs"):
        torch.testing.assert_close(got.stats[key].float(), want.stats[key].float(),
                                   atol=atol, rtol=0, msg=key)


# -- against the exact path ---------------------------------------------------------------


@pytest.mark.parametrize("arch", [*ARCH_NAMES, "zoo"])
def test_matches_forward_with_intervention(models, arch):
    subject = models.nnsight(arch)
    batch = _batch(subject, arch)
    clean = _clean(subject, batch)
    cache = subject.prefix_cache(batch)
    assert isinstance(cache, PrefixCache) and len(cache) == len(batch)
    for i, layer in enumerate(_layers(subject)):
        site = f"resid_pre.{layer}"
        rows, x = _rows_and_x(subject, batch, seed=i)
        request = _request(clean, rows)
        got = subject.forward_last_token(cache, rows, site, x, stats=request, logits=True)
        want = _exact(subject, batch, rows, site, x, request)
        _assert_same(got, want, ATOL)
        assert got.logits.shape == (N_ROWS, 1, subject.d_vocab)
        torch.testing.assert_close(got.logits[:, 0], want.logits[:, -1], atol=ATOL, rtol=0)
        assert float(got.stats["kl"].min()) > 1e-3  # the replacements do move the output

        # replacing with the clean value changes nothing
        same = subject.forward_last_token(cache, rows, site, clean[site][rows], stats=request)
        assert same.logits is None
        assert float(same.stats["kl"].abs().max()) < ATOL
        assert float(same.stats["l2"].max()) < ATOL


@pytest.mark.parametrize("arch", ["gpt2", "gemma2", "zoo"])
def test_prefix_cache_is_not_mutated(models, arch):
    subject = models.nnsight(arch)
    batch = _batch(subject, arch)
    clean = _clean(subject, batch)
    cache = subject.prefix_cache(batch)
    before = [tuple(t.clone() for t in kv) for kv in cache.state]
    rows, x = _rows_and_x(subject, batch, seed=7)
    site = f"resid_pre.{subject.n_layers - 1}"
    first = subject.forward_last_token(cache, rows, site, x, stats=_request(clean, rows),
                                       logits=True)
    # other rows and another site in between
    subject.forward_last_token(cache, rows.flip(0), "resid_pre.0", -x, stats=_request(
        clean, rows.flip(0)))
    second = subject.forward_last_token(cache, rows, site, x, stats=_request(clean, rows),
                                        logits=True)
    for k in first.stats:
        assert torch.equal(first.stats[k], second.stats[k]), k
    assert torch.equal(first.logits, second.logits)
    for (k0, v0), (k1, v1) in zip(before, cache.state):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    # and the model itself is as it was: the fast path left no hooks or bypassed blocks
    want = _exact(subject, batch, rows, site, x, _request(clean, rows))
    _assert_same(first, want, ATOL)
    for block in (subject.model.layers[i]._module for i in range(subject.n_layers)):
        assert not block._forward_pre_hooks and not block._forward_hooks
    out = subject.forward(batch, logits=True)
    torch.testing.assert_close(out.logits[:, -1].float().log_softmax(-1), clean["logprobs"],
                               atol=ATOL, rtol=0)


def test_one_token_prompts(models):
    """A batch whose prompts are all one token long has an empty prefix."""
    subject = models.nnsight("gpt2")
    batch = subject.tokenize(["", ""])
    assert batch.shape == (2, 1)
    cache = subject.prefix_cache(batch)
    rows = torch.tensor([0, 1, 1])
    x = torch.randn(3, subject.d_model, generator=torch.Generator().manual_seed(0))
    ref = subject.forward(batch, logits=True).logits[rows, -1].float().log_softmax(-1)
    request = StatsRequest(kl_reference=ref, topk=3)
    got = subject.forward_last_token(cache, rows, "resid_pre.1", x, stats=request)
    want = _exact(subject, batch, rows, "resid_pre.1", x, request)
    torch.testing.assert_close(got.stats["kl"], want.stats["kl"], atol=ATOL,
                               rtol=0)
    assert torch.equal(got.stats["topk_ids"], want.stats["topk_ids"])


# -- TransformerLens -------------------------------------------------------------------


@pytest.mark.parametrize("arch", [*TL_CONVERTS, "zoo"])
def test_transformer_lens_agrees(models, arch):
    tl, nn = models.tl(arch), models.nnsight(arch)
    batch = _batch(nn, arch)
    clean = _clean(nn, batch)
    tl_cache, nn_cache = tl.prefix_cache(batch), nn.prefix_cache(batch)
    for i, layer in enumerate(_layers(nn)):
        site = f"resid_pre.{layer}"
        rows, x = _rows_and_x(nn, batch, seed=10 + i)
        request = _request(clean, rows)
        got = tl.forward_last_token(tl_cache, rows, site, x, stats=request, logits=True)
        _assert_same(got, _exact(tl, batch, rows, site, x, request), ATOL)
        _assert_same(got, nn.forward_last_token(nn_cache, rows, site, x, stats=request), TL_ATOL)
        assert got.logits.shape == (N_ROWS, 1, nn.d_vocab)
    again = tl.forward_last_token(tl_cache, rows, site, x, stats=request)
    assert torch.equal(again.stats["kl"], got.stats["kl"])


# -- where there is no fast path, and misuse ------------------------------------------


def test_not_implemented_without_a_fast_path(models):
    nn = models.nnsight("gpt2")
    bare = Subject(spec="bare", tokenizer=nn.tokenizer, n_layers=2, d_model=nn.d_model,
                   d_vocab=nn.d_vocab)
    batch = nn.tokenize(TEXTS)
    with pytest.raises(NotImplementedError, match="no last-position fast path"):
        bare.prefix_cache(batch)
    cache = nn.prefix_cache(batch)
    with pytest.raises(NotImplementedError, match="no last-position fast path"):
        bare.forward_last_token(dataclasses.replace(cache, owner=""), [0], "resid_pre.0",
                                torch.zeros(1, nn.d_model))
    remote = copy.copy(nn)
    remote.remote = True
    with pytest.raises(NotImplementedError, match="locally only"):
        remote.prefix_cache(batch)
    with pytest.raises(NotImplementedError, match="locally only"):
        remote.forward_last_token(cache, [0], "resid_pre.0", torch.zeros(1, nn.d_model))


def test_usage_errors(models):
    nn = models.nnsight("gpt2")
    batch = nn.tokenize(TEXTS)
    cache = nn.prefix_cache(batch)
    x = torch.zeros(2, nn.d_model)
    with pytest.raises(UsageError, match="resid_pre"):
        nn.forward_last_token(cache, [0, 1], "resid_post.0", x)
    with pytest.raises(UsageError, match="x has shape"):
        nn.forward_last_token(cache, [0, 1, 2], "resid_pre.0", x)
    with pytest.raises(UsageError, match="rows must index"):
        nn.forward_last_token(cache, [0, len(batch)], "resid_pre.0", x)
    with pytest.raises(UsageError, match="last position only"):
        nn.forward_last_token(cache, [0, 1], "resid_pre.0", x,
                              stats=StatsRequest(positions="all", topk=1))
    with pytest.raises(UsageError, match="kl_reference has shape"):
        nn.forward_last_token(cache, [0, 1], "resid_pre.0", x,
                              stats=StatsRequest(kl_reference=torch.zeros(3, nn.d_vocab)))
    other = models.nnsight("llama")
    with pytest.raises(UsageError, match="another model"):
        other.forward_last_token(cache, [0, 1], "resid_pre.0", torch.zeros(2, other.d_model))
    with pytest.raises(UsageError, match="PrefixCache"):
        nn.forward_last_token(batch, [0, 1], "resid_pre.0", x)


def test_threads_sharing_a_model_wait_for_each_other(models):
    """The fast path bypasses blocks and hooks the shared modules for the length of a call;
    a forward of the same model from another thread meanwhile must not run through them
    (the back-end's model lock). Without the lock this fails within a second: shape errors
    or wrong logits in one thread or the other."""
    import threading
    import time

    subject = models.nnsight("gpt2")
    batch = _batch(subject, "gpt2")
    clean = _clean(subject, batch)
    cache = subject.prefix_cache(batch)
    rows, x = _rows_and_x(subject, batch, seed=3)
    rows, x = rows.repeat(20), x.repeat(20, 1)
    site = f"resid_pre.{subject.n_layers - 1}"
    want_fast = subject.forward_last_token(cache, rows, site, x, stats=_request(clean, rows))
    want = subject.forward(batch, logits=True).logits
    errors: list[str] = []
    counts = [0, 0]
    stop = time.monotonic() + 1.5

    def fast() -> None:
        while time.monotonic() < stop:
            try:
                got = subject.forward_last_token(cache, rows, site, x, stats=_request(clean, rows))
                if not torch.allclose(got.stats["kl"], want_fast.stats["kl"], atol=ATOL):
                    errors.append("fast path: other KL")
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(f"fast path: {exc!r}")
            counts[0] += 1

    def full() -> None:
        while time.monotonic() < stop:
            try:
                if not torch.allclose(subject.forward(batch, logits=True).logits, want,
                                      atol=ATOL):
                    errors.append("forward: other logits")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"forward: {exc!r}")
            counts[1] += 1

    threads = [threading.Thread(target=fast), threading.Thread(target=full)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert min(counts) >= 3, counts  # both really ran, interleaved


@pytest.mark.parametrize("n, vocab", [(30, 50257), (2000, 600)])
def test_blocked_stats_equal_the_whole_tensor_stats(n, vocab):
    """The fast path computes its stats a block of rows at a time: the same numbers as
    trace_ops.stats on the whole tensor (the ground truth every other path uses)."""
    from mi_ideas import trace_ops
    from mi_ideas.subject import STATS_BLOCK_ELEMENTS, last_position_stats

    assert n > STATS_BLOCK_ELEMENTS // vocab  # really more than one block
    gen = torch.Generator().manual_seed(n)
    logits = 4 * torch.randn(n, 1, vocab, generator=gen)
    final = torch.randn(n, 1, 16, generator=gen)
    request = StatsRequest(kl_reference=torch.randn(n, vocab, generator=gen).log_softmax(-1),
                           l2_reference=torch.randn(n, 16, generator=gen), topk=3,
                           entropy=True, final_norm=True)
    got = last_position_stats(logits, final, request)
    want = trace_ops.stats(logits, final, *request.args(-1))
    assert set(got) == set(want) == {"kl", "topk_ids", "topk_logprobs", "entropy",
                                     "final_norm", "l2"}
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6, msg=key)


@pytest.mark.parametrize("backend, arch", [("nn", "gpt2"), ("nn", "llama"), ("nn", "gemma2"),
                                           ("nn", "gpt_neox"), ("nn", "zoo"), ("tl", "gpt2"),
                                           ("tl", "zoo")])
def test_prefix_from_a_residual_stream(models, backend, arch):
    """``prefix_cache(start_at=site, start_resid=resid)`` runs the blocks from the site over
    ``resid``'s earlier positions: the same numbers as the full forward from the site with
    that stream, here one that is not the tokens' own (noise added), so a cache built from
    the tokens would fail; and later sites served from the same cache."""
    subject = models.tl(arch) if backend == "tl" else models.nnsight(arch)
    batch = _batch(subject, arch)
    clean = _clean(subject, batch)
    layer = max(1, subject.n_layers // 2)
    site, later = f"resid_pre.{layer}", f"resid_pre.{subject.n_layers - 1}"
    resid = subject.forward(batch, read=[site]).activations[site]
    gen = torch.Generator().manual_seed(5)
    resid[:, :-1] += 0.5 * resid.norm(dim=-1).mean() / subject.d_model ** 0.5 * torch.randn(
        resid[:, :-1].shape, generator=gen)
    cache = subject.prefix_cache(batch, start_at=site, start_resid=resid)
    assert cache.first_layer == layer
    rows, x = _rows_and_x(subject, batch, seed=4)
    request = _request(clean, rows)
    chunk = Batch(batch.input_ids[rows], batch.attention_mask[rows])
    start = resid[rows].clone()
    start[:, -1] = x
    got = subject.forward_last_token(cache, rows, site, x, stats=request)
    _assert_same(got, subject.forward(chunk, stats=request, start_at=site, start_resid=start),
                 ATOL)
    tokens = subject.forward_last_token(subject.prefix_cache(batch), rows, site, x, stats=request)
    assert float((tokens.stats["kl"] - got.stats["kl"]).abs().max()) > 1e-3  # planted: real
    if later != site:
        got = subject.forward_last_token(cache, rows, later, x, stats=request)
        want = subject.forward(chunk, stats=request, start_at=site, start_resid=resid[rows],
                               interventions=[Intervention(later, "replace", x, "last")])
        _assert_same(got, want, ATOL)
    with pytest.raises(UsageError, match="built from resid_pre"):
        subject.forward_last_token(cache, rows, "resid_pre.0", x)


# -- JS, TV and the target token's log-prob, next to the model ----------------------------

STAT_PROMPTS = ["the cat was red", "a dog ran to the big house", "one two three", "hi"]


def _direct(logits: torch.Tensor, ref: torch.Tensor, target: torch.Tensor) -> dict:
    """KL, JS, TV and log q(target) from full logits, in numpy float64 with scipy's own
    Jensen–Shannon distance (natural log; its square is the divergence)."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.special import log_softmax, rel_entr

    q = log_softmax(logits.double().numpy(), axis=-1)
    p = ref.double().numpy()
    flat_p, flat_q = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    js = np.array([jensenshannon(np.exp(a), np.exp(b)) ** 2 for a, b in zip(flat_p, flat_q)])
    out = {"kl": rel_entr(np.exp(p), np.exp(q)).sum(-1),
           "js": js.reshape(p.shape[:-1]),
           "tv": 0.5 * np.abs(np.exp(p) - np.exp(q)).sum(-1),
           "target_logprob": np.take_along_axis(q, target.numpy()[..., None], -1)[..., 0]}
    return {k: torch.as_tensor(v) for k, v in out.items()}


def _stat_case(subject: Subject, seed: int):
    """A padded batch, replacement activations at resid_pre.1's last position, references
    both far (another prompt's clean distribution) and near (the run's own, nudged), and
    random target tokens."""
    batch = subject.tokenize(STAT_PROMPTS)
    gen = torch.Generator().manual_seed(seed)
    n = len(batch)
    clean = subject.forward(batch, logits=True).logits[:, -1].double().log_softmax(-1)
    far = clean.roll(1, 0)
    x = 2 * torch.randn(n, subject.d_model, generator=gen)
    run = subject.forward(batch, logits=True, interventions=[
        Intervention("resid_pre.1", "replace", x, positions="last")]).logits[:, -1]
    near = (run.double() + 1e-3 * torch.randn(run.shape, generator=gen,
                                              dtype=torch.float64)).log_softmax(-1)
    ref = torch.cat([far[:2], near[2:]]).float()
    target = torch.randint(0, subject.d_vocab, (n,), generator=gen)
    return batch, x, ref, target


def _stat_request(ref, target, **kw) -> StatsRequest:
    return StatsRequest(kl_reference=ref, js=True, tv=True, target_ids=target, **kw)


def test_js_tv_target_logprob_are_their_definitions(local, monkeypatch):
    """The forward's stats and the blocked last-position path's equal a direct computation
    from the full logits (scipy), near the reference (JS ~1e-7) and far from it."""
    import mi_ideas.subject as subject_mod

    batch, x, ref, target = _stat_case(local, seed=11)
    iv = [Intervention("resid_pre.1", "replace", x, positions="last")]
    out = local.forward(batch, logits=True, stats=_stat_request(ref, target), interventions=iv)
    want = _direct(out.logits[:, -1], ref, target)
    assert float(want["js"][:2].min()) > 1e-2 and float(want["js"][2:].max()) < 1e-5
    for key in ("kl", "js", "tv", "target_logprob"):
        torch.testing.assert_close(out.stats[key].double(), want[key], atol=1e-7, rtol=1e-5,
                                   msg=key)
    # the last-position path, its stats in blocks of one row each
    monkeypatch.setattr(subject_mod, "STATS_BLOCK_ELEMENTS", 1)
    cache = local.prefix_cache(batch)
    rows = torch.arange(len(batch))
    fast = local.forward_last_token(cache, rows, "resid_pre.1", x,
                                    stats=_stat_request(ref, target), logits=True)
    for key in ("kl", "js", "tv", "target_logprob"):
        torch.testing.assert_close(fast.stats[key].double(), want[key], atol=1e-6, rtol=1e-4,
                                   msg=key)
    # every position: a (batch, seq) target per position
    all_ref = out.logits.double().log_softmax(-1).roll(1, 1).float()
    all_target = torch.randint(0, local.d_vocab, batch.shape,
                               generator=torch.Generator().manual_seed(12))
    got = local.forward(batch, stats=_stat_request(all_ref, all_target, positions="all"),
                        interventions=iv, logits=True)
    want = _direct(got.logits, all_ref, all_target)
    for key in ("kl", "js", "tv", "target_logprob"):
        torch.testing.assert_close(got.stats[key].double(), want[key], atol=1e-6, rtol=1e-5,
                                   msg=key)


def test_js_tv_bounds_on_planted_distributions():
    """Identical distributions: JS = TV = 0; disjoint supports: JS = ln 2, TV = 1; one
    token certain: its log-prob is 0."""
    import math

    from mi_ideas import trace_ops

    big = 60.0
    logits = torch.full((3, 1, 6), -big)
    logits[0, 0, 0] = big            # all mass on token 0
    logits[1, 0, :3] = 0.0           # uniform on 0..2
    logits[2, 0, :] = 0.0            # uniform on all 6
    ref = torch.full((3, 6), -big)
    ref[0, 3] = big                  # token 3: disjoint from row 0
    ref[1, 3:] = 0.0                 # uniform on 3..5: disjoint from row 1
    ref[2] = 0.0                     # the same as row 2
    ref = ref.log_softmax(-1)
    got = trace_ops.stats(logits, None, -1, ref, 0, False, False, None, True, True,
                          torch.tensor([0, 1, 5]))
    torch.testing.assert_close(got["js"].double(), torch.tensor([math.log(2)] * 2 + [0.0],
                                                                 dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(got["tv"], torch.tensor([1.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(got["target_logprob"],
                               torch.tensor([0.0, -math.log(3), -math.log(6)]), atol=1e-6, rtol=0)


def test_js_tv_without_a_reference_is_a_usage_error():
    with pytest.raises(UsageError, match="kl_reference"):
        StatsRequest(js=True)
    with pytest.raises(UsageError, match="tv=True"):
        StatsRequest(tv=True)


def test_js_tv_target_logprob_remote_equal_local(local, remote, ndif_server):
    """Through the loopback server (trace_ops shipped by value): the same numbers, and no
    vocabulary-sized tensor comes back."""
    batch, x, ref, target = _stat_case(local, seed=13)
    iv = [Intervention("resid_pre.1", "replace", x, positions="last")]
    request = _stat_request(ref, target)
    want = local.forward(batch, stats=request, interventions=iv).stats
    before = ndif_server.stats()["requests"]
    got = remote.forward(batch, stats=request, interventions=iv).stats
    assert ndif_server.stats()["requests"] == before + 1
    assert set(got) == set(want) == {"kl", "js", "tv", "target_logprob"}
    for key in want:
        assert got[key].shape == (len(batch),), key
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6, msg=key)


def test_shared_references_equal_per_row_references(local, remote, ndif_server):
    """``reference_rows``: rows that share a reference send it once; every path (forward,
    the last-position path, the server) gives the numbers of one reference row per row."""
    batch, x, ref, target = _stat_case(local, seed=14)
    final = torch.randn(len(batch), local.d_model, generator=torch.Generator().manual_seed(15))
    rows = torch.tensor([2, 0, 2, 1])  # row 0 and row 2 share reference 2
    compact = torch.cat([ref[1:2], ref[3:4], ref[0:1]])  # compact[rows] = ref[[0, 3, 0, 1]]
    compact_final = torch.cat([final[1:2], final[3:4], final[0:1]])
    per_row = StatsRequest(kl_reference=compact[rows], l2_reference=compact_final[rows],
                           js=True, tv=True)
    shared = StatsRequest(kl_reference=compact, l2_reference=compact_final, js=True, tv=True,
                          reference_rows=rows)
    iv = [Intervention("resid_pre.1", "replace", x, positions="last")]
    want = local.forward(batch, stats=per_row, interventions=iv).stats
    assert float(want["js"].max()) > 1e-3
    got = {"forward": local.forward(batch, stats=shared, interventions=iv).stats,
           "last_token": local.forward_last_token(local.prefix_cache(batch),
                                                  torch.arange(len(batch)), "resid_pre.1", x,
                                                  stats=shared).stats,
           "remote": remote.forward(batch, stats=shared, interventions=iv).stats}
    for path, stats in got.items():
        for key in ("kl", "js", "tv", "l2"):
            torch.testing.assert_close(stats[key], want[key], atol=1e-5, rtol=1e-5,
                                       msg=f"{path} {key}")
    with pytest.raises(UsageError, match="reference_rows"):
        local.forward_last_token(local.prefix_cache(batch), torch.arange(len(batch)),
                                 "resid_pre.1", x, stats=StatsRequest(
                                     kl_reference=compact, reference_rows=rows[:2]))
