"""The sweep engine's last-position path, its plan, its fallback and its memory bound.

Ground truth is the full forward from the site (``engine="full"``, the engine before the
last-position path, itself tested against the one-forward-per-row loop in test_sweep.py):
every engine and every plan must give its numbers; a clean run the fast path cannot serve
must fall back to it; and the perturbed points must never exist all at once.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import mi_ideas_plugins.plateaus.common.sweep as sweep_mod
from mi_ideas.errors import UsageError
from mi_ideas.subject import Batch, ForwardOutput, PrefixCache, Subject
from mi_ideas_plugins.plateaus.common.sweep import (
    CleanRun,
    SweepPlan,
    clean_run,
    rebase,
    sweep,
)

# prompts of different lengths: a left-padded batch
PROMPTS = ["the cat was red", "a dog ran to the big house", "one two three", "hi"]
SITE = "resid_pre.1"
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def subject(ndif_model_dir):
    from mi_ideas import load_subject

    return load_subject(f"hf:{ndif_model_dir}")


@pytest.fixture(scope="module")
def clean(subject):
    return clean_run(subject, PROMPTS, SITE)


def _paths(subject, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, m, subject.d_model, generator=g)


def _fresh(clean: CleanRun) -> CleanRun:
    """The same clean run without the engine's cached prefix."""
    return CleanRun(clean.batch, clean.resid, clean.x, clean.logprobs, clean.final)


def _close(a, b, atol):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("kind", ["direction", "target", "arc"])
def test_last_token_engine_equals_the_full_forward(subject, clean, kind):
    paths = _paths(subject, len(PROMPTS), 3, seed=1)
    steps = torch.linspace(0, 1, 6) if kind != "direction" else torch.linspace(0, 6, 6)
    fast = sweep(subject, _fresh(clean), SITE, paths, steps, kind=kind, rows_per_forward=10)
    full = sweep(subject, clean, SITE, paths, steps, kind=kind, rows_per_forward=10,
                 engine="full")
    assert (fast.engine, full.engine) == ("last_token", "full")
    assert fast.n_forwards == full.n_forwards == math.ceil(len(PROMPTS) * 3 * 6 / 10)
    assert float(full.kl[..., 1:].max()) > 1e-2  # the paths do move the output
    _close(fast.kl, full.kl, ATOL)
    _close(fast.l2, full.l2, ATOL)


def test_rebased_runs_share_the_prefix_and_match(subject, clean):
    base = _fresh(clean)
    paths = _paths(subject, len(PROMPTS), 2, seed=2)
    steps = torch.linspace(0, 4, 5)
    sweep(subject, base, SITE, paths, steps)
    new_x = clean.x.flip(0) + 0.5
    synth = rebase(subject, base, SITE, new_x)
    assert synth.last_token is base.last_token  # the prompts' prefix is reused, not rebuilt
    fast = sweep(subject, synth, SITE, paths, steps)
    full = sweep(subject, synth, SITE, paths, steps, engine="full")
    assert fast.engine == "last_token"
    _close(fast.kl, full.kl, ATOL)
    _close(fast.l2, full.l2, ATOL)
    assert float(fast.kl[..., 0].abs().max()) < ATOL  # step 0 is the rebased run itself


@pytest.mark.parametrize("engine", ["auto", "full"])
def test_plan_equals_separate_sweeps(subject, clean, engine):
    n = len(PROMPTS)
    base = _fresh(clean)
    synth = rebase(subject, base, SITE, clean.x.roll(1, 0) * 1.1)
    sub = torch.tensor([2, 0, 0])  # a subset of the prompts, with a repeat
    parts = {
        "dir": dict(paths=_paths(subject, n, 3, 3), steps=torch.linspace(0, 5, 5)),
        "target": dict(paths=_paths(subject, len(sub), 2, 4), steps=torch.linspace(0, 1, 4),
                       kind="target", prompts=sub),
        "arc": dict(paths=_paths(subject, n, 1, 5), steps=torch.linspace(0, 1, 3), kind="arc"),
        "synthetic": dict(paths=_paths(subject, n, 2, 6), steps=torch.tensor([0.0, 2.0, 4.0]),
                          clean=synth),
    }
    R = 7  # chunks straddle sub-experiments
    plan = SweepPlan(subject, base, SITE, rows_per_forward=R, engine=engine)
    handles = {name: plan.add(name, **kw) for name, kw in parts.items()}
    got = plan.run()
    total = sum(h.n_rows for h in handles.values())
    assert plan.n_forwards == math.ceil(total / R)
    assert list(got) == list(parts)
    for name, kw in parts.items():
        c = kw.get("clean", base)
        if "prompts" in kw:  # the separate sweep on the subset's own clean run
            idx = kw["prompts"]
            c = CleanRun(Batch(c.batch.input_ids[idx], c.batch.attention_mask[idx]),
                         c.resid[idx], c.x[idx], c.logprobs[idx], c.final[idx])
        alone = sweep(subject, c, SITE, kw["paths"], kw["steps"], kind=kw.get("kind", "direction"),
                      rows_per_forward=R, engine=engine)
        assert got[name] is handles[name].result
        assert got[name].engine == alone.engine == ("full" if engine == "full" else "last_token")
        _close(got[name].kl, alone.kl, 1e-6)
        _close(got[name].l2, alone.l2, 1e-6)


def test_remote_plan_is_one_request_per_batch(subject, clean, ndif_model_dir, ndif_server,
                                              ndif_config):
    from mi_ideas import load_subject

    ndif_config.APP.REMOTE_LOGGING = False
    remote = load_subject(f"hf:{ndif_model_dir}", remote=ndif_server.url)

    def plan_for(s):
        plan = SweepPlan(s, clean, SITE, rows_per_forward=16)  # 2nd chunk: both parts
        plan.add("a", _paths(subject, len(PROMPTS), 2, 7), torch.linspace(0, 3, 3))
        plan.add("b", _paths(subject, 2, 1, 8), torch.linspace(0, 1, 4), kind="target",
                 prompts=[3, 1])
        return plan

    want = plan_for(subject).run()
    plan = plan_for(remote)
    before = ndif_server.stats()["requests"]
    got = plan.run()
    assert ndif_server.stats()["requests"] - before == plan.n_forwards == 2  # 32 rows / 16
    for name in want:
        assert got[name].engine == "remote"
        _close(got[name].kl, want[name].kl, ATOL)
        _close(got[name].l2, want[name].l2, ATOL)


def _direct_js_tv(subject, clean, prompt, point):
    """JS and TV of one row from its full logits (one forward, scipy's Jensen–Shannon)."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    from mi_ideas.subject import Intervention

    one = Batch(clean.batch.input_ids[prompt:prompt + 1],
                clean.batch.attention_mask[prompt:prompt + 1])
    logits = subject.forward(one, logits=True, interventions=[
        Intervention(SITE, "replace", point[None], positions="last")]).logits[0, -1]
    q = logits.double().softmax(-1).numpy()
    p = clean.logprobs[prompt].double().exp().numpy()
    return jensenshannon(p, q) ** 2, 0.5 * np.abs(p - q).sum()


def test_js_tv_readouts_equal_across_engines_and_their_definition(
        subject, clean, ndif_model_dir, ndif_server, ndif_config):
    """js / tv asked of a plan: the same on the last-position, full and remote engines (to
    1e-6; kl / l2 to ATOL as elsewhere), equal to the direct computation from the full logits, and None where not asked;
    kl and l2 unchanged by asking."""
    from mi_ideas import load_subject
    from mi_ideas_plugins.plateaus.common.sweep import path_points

    ndif_config.APP.REMOTE_LOGGING = False
    remote = load_subject(f"hf:{ndif_model_dir}", remote=ndif_server.url)
    paths = _paths(subject, len(PROMPTS), 2, 21)
    t_paths = _paths(subject, 2, 2, 22)
    steps, t_steps = torch.linspace(0, 4, 5), torch.linspace(0, 1, 4)

    def plan_for(s, engine="auto"):
        plan = SweepPlan(s, clean if engine != "last_token" else _fresh(clean), SITE,
                         rows_per_forward=16, engine=engine if engine != "last_token" else "auto")
        plan.add("bounded", paths, steps, readouts=("kl", "l2", "js", "tv"))
        plan.add("plain", t_paths, t_steps, kind="target", prompts=[3, 1])  # shares a chunk
        return plan.run()

    got = {"last_token": plan_for(subject, "last_token"), "full": plan_for(subject, "full"),
           "remote": plan_for(remote)}
    for engine, res in got.items():
        assert res["bounded"].engine == engine
        assert res["plain"].js is None and res["plain"].tv is None
    want = got["full"]["bounded"]
    assert float(want.js[..., -1].min()) > 1e-3  # the paths do move the distribution
    assert float(want.js.max()) <= math.log(2) and float(want.tv.max()) <= 1
    for engine in ("last_token", "remote"):
        for key in ("js", "tv"):  # bounded: to 1e-6 absolute
            _close(getattr(got[engine]["bounded"], key), getattr(want, key), 1e-6)
        for key in ("kl", "l2"):  # L2 ~ 40: float32 rounding of the final residual ~4e-6
            _close(getattr(got[engine]["bounded"], key), getattr(want, key), ATOL)
        _close(got[engine]["plain"].kl, got["full"]["plain"].kl, ATOL)
    alone = sweep(subject, clean, SITE, paths, steps, rows_per_forward=16, engine="full")
    _close(alone.kl, want.kl, 1e-6)
    assert alone.js is None
    points = path_points(clean.x, paths, steps, "direction")
    for i, j, k in ((0, 0, 2), (3, 1, 4), (1, 1, 1)):
        js, tv = _direct_js_tv(subject, clean, i, points[i, j, k])
        assert float(want.js[i, j, k]) == pytest.approx(js, rel=1e-4, abs=1e-7)
        assert float(want.tv[i, j, k]) == pytest.approx(tv, rel=1e-4, abs=1e-7)
    with pytest.raises(UsageError, match="readouts must be"):
        sweep(subject, clean, SITE, paths, steps, readouts=("kl", "jsd"))


def test_the_prefix_is_the_clean_runs_own_residual_stream(subject, clean):
    """A clean run whose residual stream at the earlier positions is not what its tokens
    produce (here: noise added): the full forward from the site uses that stream, and so
    must the last-position path (its prefix cache runs from it, not from the tokens)."""
    g = torch.Generator().manual_seed(9)
    resid = clean.resid.clone()
    resid[:, :-1] += 3 * torch.randn(resid[:, :-1].shape, generator=g)
    odd = CleanRun(clean.batch, resid, clean.x, clean.logprobs, clean.final)
    paths, steps = _paths(subject, len(PROMPTS), 2, 10), torch.linspace(0, 3, 3)
    full = sweep(subject, odd, SITE, paths, steps, engine="full")
    got = sweep(subject, odd, SITE, paths, steps)
    assert got.engine == "last_token"
    _close(got.kl, full.kl, ATOL)
    _close(got.l2, full.l2, ATOL)
    # the planted difference is real: the prompts' own stream gives other numbers
    fast = sweep(subject, _fresh(clean), SITE, paths, steps)
    assert float((fast.kl - full.kl).abs().max()) > 1e-3


def test_falls_back_where_the_fast_path_is_wrong(subject, clean):
    """A back-end whose last-position path answers for the wrong prefix (what a model that
    is not causal, or a broken back-end, looks like): the check must catch it, warn, and
    run the full forward; engine='last_token' must refuse."""
    import copy

    from mi_ideas.backends.nnsight_backend import NNsightSubject

    wrong = copy.copy(subject)
    wrong._forward_last_token = lambda cache, rows, *args: NNsightSubject._forward_last_token(
        wrong, cache, rows.roll(1), *args)
    paths, steps = _paths(subject, len(PROMPTS), 2, 10), torch.linspace(0, 3, 3)
    full = sweep(subject, clean, SITE, paths, steps, engine="full")
    base = _fresh(clean)
    with pytest.warns(RuntimeWarning, match="disagrees with the full forward"):
        got = sweep(wrong, base, SITE, paths, steps)
    assert got.engine == "full"
    _close(got.kl, full.kl, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per clean run
        assert sweep(wrong, base, SITE, paths, steps).engine == "full"
    with pytest.raises(UsageError, match="cannot serve this sweep"):
        sweep(wrong, _fresh(clean), SITE, paths, steps, engine="last_token")


def test_a_back_end_without_the_path_runs_the_full_forward(subject, clean):
    import copy

    bare = copy.copy(subject)
    bare._prefix_cache = lambda batch: Subject._prefix_cache(bare, batch)
    bare._prefix_cache_from = lambda *args: Subject._prefix_cache_from(bare, *args)
    paths, steps = _paths(subject, len(PROMPTS), 2, 11), torch.linspace(0, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an expected limitation, not a surprise: no warning
        got = sweep(bare, _fresh(clean), SITE, paths, steps)
    assert got.engine == "full"
    _close(got.kl, sweep(subject, _fresh(clean), SITE, paths, steps).kl, ATOL)


# -- memory: the points are built per chunk ----------------------------------------------


class _Stub(Subject):
    """A model-free subject: the read-outs are cheap functions of the perturbed vector, the
    same on both engines, so the test measures the engine's own memory."""

    backend = "stub"

    def __init__(self, d: int):
        super().__init__(spec="stub", tokenizer=None, n_layers=2, d_model=d, d_vocab=3)
        self.rows_seen: list[int] = []

    def _prefix_cache(self, batch):
        return PrefixCache(state=None, **self._prefix_fields(batch))

    def _prefix_cache_from(self, batch, layer, resid):
        return PrefixCache(state=None, **self._prefix_fields(batch, layer))

    def _read(self, x, stats):
        self.rows_seen.append(int(x.shape[0]))
        return ForwardOutput(stats={"kl": x.sum(-1),
                                    "l2": (x - stats.l2_reference).norm(dim=-1)})

    def _forward_last_token(self, cache, rows, layer, x, stats, logits):
        return self._read(x, stats)

    def _forward(self, batch, read, positions, interventions, logits, stats, start_layer=None,
                 start_resid=None):
        return self._read(start_resid[:, -1], stats)


def _peak_rss_growth(fn) -> int:
    """Bytes the peak resident set grew by while ``fn`` ran (Linux: VmHWM, reset first)."""
    def hwm() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident set
    start = hwm()
    fn()
    return hwm() - start


@pytest.mark.parametrize("engine", ["last_token", "full"])
def test_points_are_built_per_chunk(monkeypatch, engine):
    n, m, s, d, R = 4, 32, 1024, 512, 1024
    full_bytes = n * m * s * d * 4  # 256 MiB if every point existed at once
    stub = _Stub(d)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long))
    x = torch.randn(n, d, generator=g)
    clean = CleanRun(batch, torch.cat([x[:, None], x[:, None]], 1), x, torch.zeros(n, 3),
                     torch.zeros(n, d))
    paths = torch.randn(n, m, d, generator=g)
    steps = torch.linspace(0, 1, s)
    built: list[int] = []
    points = sweep_mod._points

    def spy(x, p, a, kind):
        out = points(x, p, a, kind)
        built.append(out.numel() // d)
        return out

    def whole(*args, **kwargs):
        raise AssertionError("the sweep built every path point at once")

    monkeypatch.setattr(sweep_mod, "_points", spy)
    monkeypatch.setattr(sweep_mod, "path_points", whole)
    box = {}
    grew = _peak_rss_growth(lambda: box.setdefault(
        "res", sweep(stub, clean, "resid_pre.1", paths, steps, rows_per_forward=R,
                     engine=engine)))
    res = box["res"]
    assert res.engine == engine and res.n_forwards == n * m * s // R
    assert max(built) <= R and sum(built) == n * m * s
    assert max(stub.rows_seen) <= R
    assert grew < full_bytes / 3, f"peak memory grew by {grew / 2**20:.0f} MiB"
    # the read-outs are those of the points (the stub's kl is the sum of the point)
    i, j, k = 3, 17, 1000
    want = (x[i] + steps[k] * paths[i, j]).sum()
    torch.testing.assert_close(res.kl[i, j, k], want, atol=1e-3, rtol=1e-5)


# -- misuse ----------------------------------------------------------------------------------


def test_usage_errors(subject, clean):
    paths = _paths(subject, len(PROMPTS), 1, 12)
    steps = torch.linspace(0, 1, 2)
    with pytest.raises(UsageError, match="resid_pre"):
        SweepPlan(subject, clean, "resid_post.0")
    with pytest.raises(UsageError, match="rows_per_forward"):
        SweepPlan(subject, clean, SITE, rows_per_forward=0)
    with pytest.raises(UsageError, match="engine must be"):
        sweep(subject, clean, SITE, paths, steps, engine="fast")
    plan = SweepPlan(subject, clean, SITE)
    with pytest.raises(UsageError, match="path kind"):
        plan.add("a", paths, steps, kind="line")
    plan.add("a", paths, steps)
    with pytest.raises(UsageError, match="already has"):
        plan.add("a", paths, steps)
    with pytest.raises(UsageError, match="expected \\(2, n_paths"):
        plan.add("b", paths, steps, prompts=[0, 1])
    with pytest.raises(UsageError, match="must index"):
        plan.add("c", paths[:1], steps, prompts=[len(PROMPTS)])
    other = clean_run(subject, PROMPTS[::-1], SITE)
    with pytest.raises(UsageError, match="other prompts"):
        plan.add("d", paths, steps, clean=other)
    resid = clean.resid.clone()
    resid[:, 0] += 1.0
    with pytest.raises(UsageError, match="other prompts"):  # same tokens, another prefix
        plan.add("e", paths, steps, clean=CleanRun(clean.batch, resid, clean.x,
                                                    clean.logprobs, clean.final))
    with pytest.raises(UsageError, match="paths have shape"):
        sweep(subject, clean, SITE, paths[:2], steps)
