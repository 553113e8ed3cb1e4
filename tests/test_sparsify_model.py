"""sparsify-model: the k x k Jacobian against autograd, planted sparse edges recovered,
lambda > 0 sparser than lambda = 0 at a small reconstruction cost."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The compiled Jacobian kernel needs a C compiler (the development and CI machines have gcc);
# without one the idea falls back to the torch kernel, and these tests say why they skip.
needs_cc = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CC", "cc"), "gcc", "clang")),
    reason="no C compiler: the compiled Jacobian kernel cannot be built here")


@pytest.mark.parametrize("kernel", [pytest.param("c", marks=needs_cc), "torch"])
@pytest.mark.parametrize("act", ["relu", "gelu_new", "gelu"])
def test_active_jacobian_equals_autograd(act, kernel):
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import (
        MLP,
        act_and_grad,
        active_jacobian,
        make_pair,
    )
    from mi_ideas_plugins.dictionary.sparsify_model.run import autograd_error

    gen = torch.Generator().manual_seed(0)
    d, dm = 16, 40
    mlp = MLP(torch.randn(d, dm, generator=gen) / 3, torch.randn(dm, generator=gen) / 3,
              torch.randn(dm, d, generator=gen) / 3, torch.zeros(d), act)
    pair = make_pair(mlp, d_sae=48, k=5, lam=0.1, seed=0, kernel=kernel)
    x = torch.randn(8, d, generator=gen)
    assert autograd_error(pair, x) <= 1e-5
    # the closed-form derivative is the activation's derivative (torch's own activation,
    # differentiated by autograd), and its backward (closed-form phi'') is the second one
    ref = {"relu": torch.relu, "gelu": torch.nn.functional.gelu,
           "gelu_new": lambda p: torch.nn.functional.gelu(p, approximate="tanh")}[act]
    pre = torch.linspace(-3, 3, 100, dtype=torch.float64, requires_grad=True)  # 0 not on the grid
    h, dphi = act_and_grad(act, pre)
    torch.testing.assert_close(h, ref(pre))
    (g,) = torch.autograd.grad(ref(pre).sum(), pre, create_graph=True)
    torch.testing.assert_close(dphi, g)
    (g2,) = torch.autograd.grad(g.sum(), pre) if g.requires_grad else (torch.zeros_like(pre),)
    (g2_ours,) = torch.autograd.grad(dphi.sum(), pre)
    torch.testing.assert_close(g2_ours, g2)
    # and the check has power: a Jacobian without phi' is far from autograd
    o = pair.pair_forward(x)
    a = pair.W_dec @ pair.mlp_w_in
    b = pair.mlp_w_out @ pair.sae2.W_enc
    with torch.no_grad():
        wrong = active_jacobian(a, b, torch.ones_like(o["x_hat"] @ pair.mlp_w_in), o["idx_in"],
                                o["idx_out"]) * (o["z2"].gather(1, o["idx_out"]) > 0)[..., None]
        assert float((wrong - o["jacobian"]).abs().max()) > 1e-3


def _jacobian_inputs(dtype, t=37, k1=6, k2=7, dm=43, s1=50, s2=61, seed=0):
    """Random A, B^T, phi' and distinct active indices; sizes chosen so that nothing is a
    multiple of the C kernel's vector width or block sizes (every tail path runs)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(s1, dm, generator=gen, dtype=dtype, requires_grad=True)
    bt = torch.randn(s2, dm, generator=gen, dtype=dtype, requires_grad=True)
    dphi = torch.rand(t, dm, generator=gen, dtype=dtype, requires_grad=True)
    ii = torch.stack([torch.randperm(s1, generator=gen)[:k1] for _ in range(t)]) if t else \
        torch.zeros(0, k1, dtype=torch.long)
    oo = torch.stack([torch.randperm(s2, generator=gen)[:k2] for _ in range(t)]) if t else \
        torch.zeros(0, k2, dtype=torch.long)
    return a, bt, dphi, ii, oo


@needs_cc
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_kernel_equals_einsum(dtype, threads, monkeypatch):
    """The compiled kernel's J and its three gradients equal the einsum definition
    differentiated by autograd (and the torch kernel, in CPU-sized blocks and as one block
    as off the CPU), with tails in every dimension and
    with per-thread gradient accumulators; gradcheck passes in float64."""
    from mi_ideas_plugins.dictionary.sparsify_model import jsae
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import _ActiveJacobian
    from mi_ideas_plugins.dictionary.sparsify_model.kernel import ActiveJacobianC

    a, bt, dphi, ii, oo = _jacobian_inputs(dtype)
    g = torch.randn(ii.shape[0], oo.shape[1], ii.shape[1], dtype=dtype,
                    generator=torch.Generator().manual_seed(1))
    ref = torch.einsum("tjm,tm,tim->tji", bt[oo], dphi, a[ii])
    ref_grads = torch.autograd.grad(ref, (a, bt, dphi), g)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fn in (ActiveJacobianC, _ActiveJacobian, "torch, one block"):
            if fn == "torch, one block":  # the block size used off the CPU: the whole batch
                monkeypatch.setattr(jsae, "CHUNK", 10**9)
                fn = _ActiveJacobian
            out = fn.apply(a, bt, dphi, ii, oo)
            torch.testing.assert_close(out, ref, **tol)
            for got, want in zip(torch.autograd.grad(out, (a, bt, dphi), g), ref_grads):
                torch.testing.assert_close(got, want, **tol)
        if dtype == torch.float64:
            small = _jacobian_inputs(dtype, t=5, k1=3, k2=5, dm=11, s1=9, s2=8)
            assert torch.autograd.gradcheck(lambda *x: ActiveJacobianC.apply(*x, *small[3:]), small[:3])
    finally:
        torch.set_num_threads(before)


@needs_cc
@pytest.mark.parametrize("shape", [dict(t=1, k1=1, k2=1, dm=3, s1=2, s2=2),    # tails only
                                   dict(t=2, k1=5, k2=1, dm=9, s1=7, s2=3),    # t < threads
                                   dict(t=40, k1=9, k2=33, dm=17, s1=40, s2=50),
                                   dict(t=0, k1=4, k2=4, dm=8, s1=6, s2=6)])   # no tokens
def test_c_kernel_edge_shapes_and_bad_inputs(shape, monkeypatch):
    """Degenerate and odd shapes on three threads (the accumulator cap lifted so every
    thread gets tokens) equal the einsum definition; inputs the C code cannot trust are
    refused (mixed dtypes, indices out of range, mismatched widths), never read."""
    from mi_ideas_plugins.dictionary.sparsify_model import kernel
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import active_jacobian

    monkeypatch.setattr(kernel, "MIN_TOKENS_PER_THREAD", 1)
    a, bt, dphi, ii, oo = _jacobian_inputs(torch.float64, **shape)
    g = torch.randn(ii.shape[0], oo.shape[1], ii.shape[1], dtype=torch.float64)
    ref = torch.einsum("tjm,tm,tim->tji", bt[oo], dphi, a[ii])
    ref_grads = torch.autograd.grad(ref, (a, bt, dphi), g, allow_unused=True)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        out = kernel.ActiveJacobianC.apply(a, bt, dphi, ii, oo)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        got = torch.autograd.grad(out, (a, bt, dphi), g, allow_unused=True)
        for x, want, name in zip(got, ref_grads, ("a", "bt", "dphi")):
            want = torch.zeros_like(x) if want is None else want
            torch.testing.assert_close(x, want, rtol=1e-12, atol=1e-12, msg=name)
    finally:
        torch.set_num_threads(before)
    if shape["t"] == 0:
        return
    with pytest.raises(ValueError, match="one dtype"):
        active_jacobian(a.float(), bt.T, dphi, ii, oo, kernel="c")
    bad = ii.clone()
    bad[0, 0] = a.shape[0]
    with pytest.raises(ValueError, match="idx_in has indices outside"):
        kernel.ActiveJacobianC.apply(a, bt, dphi, bad, oo)
    with pytest.raises(ValueError, match="idx_out has indices outside"):
        kernel.ActiveJacobianC.apply(a, bt, dphi, ii, -1 - oo)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        kernel.ActiveJacobianC.apply(a, bt, dphi[:, :-1], ii, oo)


@needs_cc
def test_c_kernel_build_and_fallback(tmp_path, monkeypatch):
    """The kernel builds into $MI_IDEAS_CACHE once and is reused; where it cannot be built,
    'auto' falls back to the torch kernel with one warning and 'c' refuses with the reason;
    'c' on an unsupported dtype is refused, and an unknown kernel name too."""
    from mi_ideas_plugins.dictionary.sparsify_model import kernel

    monkeypatch.setenv("MI_IDEAS_CACHE", str(tmp_path))
    kernel._build()
    built = list((tmp_path / "kernels").glob("*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    kernel._build()
    assert [p.stat().st_mtime_ns for p in (tmp_path / "kernels").glob("*.so")] == [mtime]

    x = torch.zeros(2, 3)
    monkeypatch.setattr(kernel, "_LIB", None)
    monkeypatch.setattr(kernel, "_BUILD_ERROR", None)

    def broken():
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang)")

    monkeypatch.setattr(kernel, "_build", broken)
    with pytest.warns(RuntimeWarning, match="runs on torch ops instead"):
        assert kernel.usable("auto", x) is False
    assert kernel.usable("auto", x) is False  # the warning is given once
    with pytest.raises(RuntimeError, match="could not be built: no C compiler"):
        kernel.usable("c", x)
    with pytest.raises(ValueError, match="float32 / float64 tensors of one dtype only"):
        kernel.usable("c", x.half())
    with pytest.raises(ValueError, match="not one of"):
        kernel.usable("fast", x)
    assert kernel.usable("torch", x) is False


def test_mlp_read_through_either_backend_is_the_model_mlp():
    """mlp_of reads the same MLP through the nnsight and the TransformerLens subject, and it
    is the model's MLP: applied to the subject's own mlp_in rows it gives its mlp_out rows."""
    from mi_ideas import load_subject
    from mi_ideas_plugins.dictionary.sparsify_model.run import mlp_of

    hf, tl = load_subject("zoo:stories-gpt2"), load_subject("tl:zoo:stories-gpt2")
    batch = hf.tokenize(["Mia saw a red ball.", "Tom was very sad."])
    for L in (0, 2):
        a, b = mlp_of(hf, L), mlp_of(tl, L)
        for name in ("w_in", "b_in", "w_out", "b_out"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
        assert a.act == b.act == "gelu_new"
        out = hf.forward(batch, read=[f"mlp_in.{L}", f"mlp_out.{L}"])
        torch.testing.assert_close(a(out.activations[f"mlp_in.{L}"].float()),
                                   out.activations[f"mlp_out.{L}"].float(), rtol=1e-4, atol=1e-5)


def test_saved_dictionaries_are_the_trained_pair(tmp_path):
    """The SAELens directories a run writes are the trained pair: reloaded through the
    project's loader, SAE 1 gives the pair's latents and reconstruction of x, SAE 2 those
    of the MLP's output, and their hook names map to the MLP's input and output sites."""
    from mi_ideas.dictionaries import load_sae_directory, site_of
    from mi_ideas.sites import to_hook_name
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import MLP, fit_pair

    gen = torch.Generator().manual_seed(0)
    d, dm = 16, 48
    mlp = MLP(torch.randn(d, dm, generator=gen) / 4, torch.zeros(dm),
              torch.randn(dm, d, generator=gen) / 7, torch.zeros(d), "gelu_new")
    x = torch.randn(2048, d, generator=gen)
    pair = fit_pair(mlp, x[:1536], d_sae=40, k=4, lam=0.3, steps=40, batch_size=128, lr=3e-3, seed=0)
    dirs = pair.save_inference_saes(tmp_path, hook_in=to_hook_name("mlp_in.1"),
                                    hook_out=to_hook_name("mlp_out.1"), model_name="toy")
    s1, s2 = load_sae_directory(dirs["in"]), load_sae_directory(dirs["out"])
    xe = x[1536:]
    with torch.no_grad():
        o = pair.pair_forward(xe, jacobian=False)
        z1, z2 = s1.encode(xe), s2.encode(o["y"])
        for got, want in ((z1, o["z1"]), (s1.decode(z1), o["x_hat"]), (z2, o["z2"]),
                          (s2.decode(z2), o["y_hat"])):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (site_of(s1), site_of(s2)) == ("mlp_in.1", "mlp_out.1")
    assert float((o["z1"] > 0).sum(1).float().mean()) > 1  # the check compares live latents


def test_transformer_lens_and_nnsight_runs_agree(tmp_path):
    """The same run on the zoo model through TransformerLens and through nnsight (the same
    weights, other code for every forward, the MLP read and the splices) gives the same
    numbers: every metric but the wall-clock ones within 1e-4 relative."""
    import mi_ideas

    kw = dict(quiet=True, out=tmp_path, layers=[1], lambdas=[1.0], steps=30, toy=False,
              reinit_control=False, data="zoo:stories:30")
    hf = mi_ideas.run("sparsify-model", model="zoo:stories-gpt2", **kw).metrics
    tl = mi_ideas.run("sparsify-model", model="tl:zoo:stories-gpt2", **kw).metrics
    assert hf.keys() == tl.keys()
    for key, value in hf.items():
        if not key.endswith((".train_seconds", ".time_ratio")):
            assert tl[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.fixture(scope="module")
def one_layer_run(tmp_path_factory):
    """One run shared by the two tests below: the planted toy and zoo layer 1, lambda 0 and
    1, 120 steps, with the re-initialised control (fixed seed 0)."""
    import mi_ideas

    torch.set_num_threads(1)
    return mi_ideas.run("sparsify-model", quiet=True, out=tmp_path_factory.mktemp("sm"),
                        layers=[1], lambdas=[1.0], steps=120, data="zoo:stories:30",
                        reinit_control=True)


def test_planted_sparse_map_edges_recovered(one_layer_run):
    """A toy MLP whose feature-to-feature map is a known permutation: with the Jacobian
    penalty, the recovered edges are the planted ones (and fewer spurious edges than at 0)."""
    m = one_layer_run.metrics
    print({k: round(v, 3) for k, v in m.items() if k.startswith("toy.")})
    assert m["toy.lambda_0.05.edge_recall"] >= 0.9
    assert m["toy.lambda_0.05.edge_precision"] >= 0.9
    assert m["toy.lambda_0.05.edge_precision"] > m["toy.lambda_0.edge_precision"]
    assert m["toy.lambda_0.05.jacobian_density"] < m["toy.lambda_0.jacobian_density"]
    assert m["toy.lambda_0.05.ev"] >= 0.95


def test_zoo_lambda_sparsifies_at_small_cost(one_layer_run):
    """One zoo layer, fixed seed 0: lambda = 1 gives a sparser Jacobian than lambda = 0, with
    little loss of reconstruction; the result carries the issue's metric names, per layer
    and as the mean over layers; the re-initialised control is scale-matched (its reported
    raw norms differ from the model's, its scales are not 1)."""
    r = one_layer_run
    m = r.metrics
    print({k: round(v, 4) for k, v in m.items() if not k.startswith("toy.")})
    for lam in ("lambda_0", "lambda_1"):
        for key in ("jacobian_density", "ev", "ce_increase", "edges_per_feature", "time_ratio"):
            assert f"{lam}.{key}" in m and f"reinit.{lam}.{key}" in m
        for key in ("jacobian_density", "ev", "ce_increase", "edges_per_feature"):
            # one layer: its own metric is the mean over layers
            assert m[f"layer1.{lam}.{key}"] == pytest.approx(m[f"{lam}.{key}"])
            assert f"reinit.layer1.{lam}.{key}" in m
    assert not any(k.startswith("layer0.") for k in m)
    assert m["reinit.mlp_out_scale"] == pytest.approx(m["reinit.mlp_out_norm"] / m["mlp_out_norm"], rel=0.1)
    assert m["jacobian_autograd_max_abs_err"] <= 1e-5
    assert m["lambda_1.jacobian_density"] <= 0.8 * m["lambda_0.jacobian_density"]
    assert m["lambda_1.ev"] >= m["lambda_0.ev"] - 0.05
    assert m["lambda_1.ce_increase"] <= m["lambda_0.ce_increase"] + 0.05
    assert m["lambda_0.ce_increase"] >= 0  # splicing a reconstruction does not help the model
    assert "sweep" in r.figures
    # every (layer, lambda) pair of the model is written as two SAELens directories
    saved = r.details["dictionaries"]
    assert sorted(saved) == ["1/0", "1/1"]
    for dirs in saved.values():
        assert all((Path(r.run_dir) / dirs[w] / "cfg.json").is_file() for w in ("in", "out"))


def test_scale_matched_control_has_the_models_norms_and_the_same_function():
    """The re-initialised control is rescaled to the trained model's activation norms: the
    rescaled rows have exactly the target mean norms, and the rescaled MLP maps them to the
    rescaled outputs (the same function in other units), so only the weights differ."""
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import MLP
    from mi_ideas_plugins.dictionary.sparsify_model.run import scale_matched

    gen = torch.Generator().manual_seed(0)
    d, dm = 12, 30
    mlp = MLP(torch.randn(d, dm, generator=gen), torch.randn(dm, generator=gen),
              torch.randn(dm, d, generator=gen) * 0.01, torch.randn(d, generator=gen) * 0.01, "gelu_new")
    x = torch.randn(500, d, generator=gen, dtype=torch.float64) * 0.2
    mlp = MLP(*(w.double() for w in (mlp.w_in, mlp.b_in, mlp.w_out, mlp.b_out)), act="gelu_new")
    y = mlp(x)
    scaled, s_x, s_y = scale_matched(mlp, x, y, (7.0, 3.0))
    assert float((x / s_x).norm(dim=1).mean()) == pytest.approx(7.0)
    assert float((y / s_y).norm(dim=1).mean()) == pytest.approx(3.0)
    torch.testing.assert_close(scaled(x / s_x), y / s_y)
    assert s_x != pytest.approx(1.0) and s_y != pytest.approx(1.0)


def test_bad_layers_and_unreadable_mlps_are_refused_before_the_run(tmp_path):
    """Layers out of range and a model whose MLP is not GPT-2's (GPT-NeoX: nn.Linear, another
    layout) are usage errors raised by the idea's check: no run directory is made."""
    import mi_ideas
    from mi_ideas.errors import UsageError
    from tests.tiny_models import build_tiny

    with pytest.raises(UsageError, match="outside"):
        mi_ideas.run("sparsify-model", quiet=True, out=tmp_path / "a", layers=[9], toy=False,
                     data="zoo:stories:8")
    neox = build_tiny("gpt_neox", tmp_path / "neox")
    with pytest.raises(UsageError, match="GPT-2-architecture"):
        mi_ideas.run("sparsify-model", quiet=True, out=tmp_path / "b", model=f"hf:{neox}",
                     toy=False, data="zoo:stories:8")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_spliced_ce_rows_are_the_mlp_rows():
    """ce_losses splices each pair's y_hat at the rows its x came from: a 'pair' that returns
    the true MLP output gives the clean CE exactly, and the same rows shuffled do not."""
    from mi_ideas import load_subject
    from mi_ideas.data.stories import generate_stories
    from mi_ideas_plugins.dictionary.sparsify_model.run import ce_losses, mlp_of

    subject = load_subject("zoo:stories-gpt2")
    texts = [s.text for s in generate_stories(6, seed=3)]

    class Exact:
        def __init__(self, mlp, shuffle=False):
            self.mlp, self.shuffle = mlp, shuffle

        def pair_forward(self, x, jacobian=False):
            y = self.mlp(x)
            return {"y_hat": y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
                    if self.shuffle else y}

    mlp = mlp_of(subject, 1)
    clean, ce = ce_losses(subject, texts, [1], {(1, 0.0): Exact(mlp), (1, 1.0): Exact(mlp, True)},
                          64, {1: (1.0, 1.0)})
    assert ce[(1, 0.0)] == pytest.approx(clean, abs=1e-5)
    assert ce[(1, 1.0)] > clean + 0.05


def test_answer_follows_the_numbers():
    from mi_ideas import IdeaResult
    from mi_ideas_plugins.dictionary.sparsify_model.idea import SparsifyModel as S

    def result(d0, d1):
        r = IdeaResult(details={"lambdas": [0.0, 1.0]})
        for lam, d in (("lambda_0", d0), ("lambda_1", d1)):
            for key, v in (("jacobian_density", d), ("ev", 0.8), ("ce_increase", 0.1), ("time_ratio", 2.0)):
                r.add(f"{lam}.{key}", v, "d")
        return r

    assert "not clearly sparser" in S.answer(result(0.4, 0.38))
    assert "is sparser than" in S.answer(result(0.4, 0.07))
    assert S.headlines(result(0.4, 0.07))[0].metric == "lambda_1.jacobian_density"
