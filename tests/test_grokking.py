"""activation-plateaus through grokking: the metrics on planted data, and grokking itself.

The metric tests check each function against an answer computed independently (a brute-force
grid, a closed form); the training tests check the phenomenon the question stands on
(memorisation first, generalisation later, none without weight decay) and only the structure
of the path metrics, whose direction is a finding reported in the docs, not asserted here.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from mi_ideas_plugins.plateaus.activation_plateaus import grokking as G  # noqa: E402

# ----------------------------------------------------------------- ReLU crossings


def _brute_force_crossings(weight, bias, x_a, x_b, n_grid=100_001):
    """Sign changes of every pre-activation between consecutive points of an α grid,
    evaluating the layer at each x(α) (not interpolating pre-activations)."""
    alphas = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
    xs = x_a[None, :] + alphas[:, None] * (x_b - x_a)[None, :]
    active = (xs @ weight.T + bias) > 0                      # (n_grid, H)
    changes = active[1:] != active[:-1]                      # (n_grid - 1, H)
    where = [alphas[torch.nonzero(changes[:, i]).reshape(-1)] for i in range(weight.shape[0])]
    return int(changes.sum()), where, 1.0 / (n_grid - 1)


def test_crossing_counter_equals_a_brute_force_grid_count_on_a_planted_layer():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 12, generator=g, dtype=torch.float64)
    bias = 0.5 * torch.randn(96, generator=g, dtype=torch.float64)
    x_a = torch.randn(4, 12, generator=g, dtype=torch.float64)
    x_b = torch.randn(4, 12, generator=g, dtype=torch.float64)
    counts, alphas = G.relu_crossings(weight, bias, x_a, x_b)
    assert counts.shape == (4,) and alphas.shape == (4, 96)
    for k in range(4):
        total, where, h = _brute_force_crossings(weight, bias, x_a[k], x_b[k])
        assert 10 < total < 96                                 # a non-trivial path
        assert int(counts[k]) == total                         # exact equality of counts
        for i in range(96):
            if len(where[i]) == 0:
                assert math.isnan(float(alphas[k, i]))
            else:
                assert len(where[i]) == 1                      # a line crosses a plane once
                # the analytic α lies inside the grid cell where the sign changed
                assert float(where[i][0]) - 1e-12 <= float(alphas[k, i]) <= float(where[i][0]) + h


def test_no_sign_change_gives_zero_crossings():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 32, generator=g, dtype=torch.float64)  # wide: has a null space
    bias = torch.randn(16, generator=g, dtype=torch.float64)
    x_a = torch.randn(32, generator=g, dtype=torch.float64)
    # along a null-space direction no pre-activation moves at all
    null = torch.linalg.svd(weight).Vh[-1]
    counts, alphas = G.relu_crossings(weight, bias, x_a, x_a + 7.0 * null)
    assert int(counts) == 0 and bool(torch.isnan(alphas).all())
    # to a point whose pre-activations are 3× those of x_a: every unit moves, none changes sign
    h_a = weight @ x_a + bias
    x_b = torch.linalg.lstsq(weight, (3.0 * h_a - bias)[:, None]).solution[:, 0]
    assert torch.allclose(weight @ x_b + bias, 3.0 * h_a)
    assert int(G.relu_crossings(weight, bias, x_a, x_b)[0]) == 0
    assert _brute_force_crossings(weight, bias, x_a, x_b, n_grid=10_001)[0] == 0


def test_crossing_alpha_is_where_the_pre_activation_is_zero():
    h_a = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    h_b = torch.tensor([[-2.0, 3.0, 1.0, 0.5]])
    counts, alphas = G.crossing_alphas(h_a, h_b)
    assert int(counts) == 2
    assert torch.allclose(alphas[0, :2], torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert bool(torch.isnan(alphas[0, 2:]).all())


# ----------------------------------------------------------------- curve metrics

ALPHAS = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
H = 1.0 / 40  # grid spacing


def test_onset_of_a_step_like_curve_is_at_the_step():
    step = (ALPHAS >= 0.6).double()
    for frac in (0.1, 0.5, 0.9):
        assert abs(float(G.onset(step, ALPHAS, frac)) - 0.6) <= H      # within one grid cell
    assert float(G.max_slope_sharpness(step, ALPHAS)) == pytest.approx(40.0)  # one jump


def test_onset_and_slope_of_a_quadratic_curve():
    quad = ALPHAS**2
    assert float(G.onset(quad, ALPHAS, 0.1)) == pytest.approx(math.sqrt(0.1), abs=5e-3)
    assert float(G.onset(quad, ALPHAS, 0.5)) == pytest.approx(math.sqrt(0.5), abs=5e-3)
    assert float(G.loglog_slope(quad, ALPHAS, 4)) == pytest.approx(2.0, abs=1e-9)
    # max slope of α² on the last segment: (1 − (39/40)²) · 40
    assert float(G.max_slope_sharpness(quad, ALPHAS)) == pytest.approx(1.975, abs=1e-9)


def test_onset_and_slope_of_a_linear_curve():
    lin = 0.3 * ALPHAS
    assert float(G.onset(lin, ALPHAS, 0.1)) == pytest.approx(0.1, abs=1e-9)
    assert float(G.onset(lin, ALPHAS, 0.5)) == pytest.approx(0.5, abs=1e-9)
    assert float(G.loglog_slope(lin, ALPHAS, 4)) == pytest.approx(1.0, abs=1e-9)
    assert float(G.max_slope_sharpness(lin, ALPHAS)) == pytest.approx(1.0, abs=1e-9)
    # a cubic start gives 3; batches of curves are handled row by row
    both = torch.stack([ALPHAS**3, ALPHAS])
    assert G.loglog_slope(both, ALPHAS, 4).tolist() == pytest.approx([3.0, 1.0], abs=1e-9)


def test_onset_is_the_first_crossing_of_a_non_monotone_curve_and_nan_for_a_flat_one():
    # 2α up to 0.25, then 1 up to 0.5, then 0.5 to the end
    bump = torch.where(ALPHAS < 0.5, 2.0 * ALPHAS, torch.full_like(ALPHAS, 0.5))
    bump = torch.where((ALPHAS >= 0.25) & (ALPHAS < 0.5), torch.ones_like(ALPHAS), bump)
    # endpoint 0.5: 50% of it is 0.25, first reached at α = 0.125 on the rising part
    assert float(G.onset(bump, ALPHAS, 0.5)) == pytest.approx(0.125, abs=1e-9)
    assert math.isnan(float(G.onset(torch.zeros(41, dtype=torch.float64), ALPHAS, 0.1)))


def test_bunching_is_one_for_uniform_crossings_and_large_for_bunched_ones():
    g = torch.Generator().manual_seed(2)
    uniform = torch.rand(200, 5000, generator=g, dtype=torch.float64)
    lo = torch.full((200,), 0.3, dtype=torch.float64)
    hi = torch.full((200,), 0.5, dtype=torch.float64)
    assert float(G.bunching(uniform, lo, hi).median()) == pytest.approx(1.0, abs=0.05)
    bunched = 0.3 + 0.2 * torch.rand(200, 50, generator=g, dtype=torch.float64)
    assert G.bunching(bunched, lo, hi).tolist() == pytest.approx([5.0] * 200)  # all inside / 0.2
    # NaN marks "no crossing": those entries are ignored, a path without any gives NaN
    half = torch.tensor([[0.1, 0.4, float("nan")], [float("nan")] * 3], dtype=torch.float64)
    out = G.bunching(half, lo[:2], hi[:2])
    assert float(out[0]) == pytest.approx(0.5 / 0.2) and math.isnan(float(out[1]))


# ----------------------------------------------------------------- grokking


@pytest.fixture(scope="module")
def runs():
    return G.run_grokking_with_control(seed=0)


def test_default_run_groks_after_memorising(runs):
    grok, _ = runs
    mem = grok.memorised_step
    assert mem is not None
    at_mem = grok.test_acc[list(grok.step).index(mem)]
    assert at_mem <= 0.5                      # memorised first, not yet generalising
    assert grok.test_acc[-1] >= 0.95          # ... then generalises
    assert grok.grok_step is not None and grok.grok_step > mem


def test_without_weight_decay_the_same_schedule_only_memorises(runs):
    _, control = runs
    assert control.config["weight_decay"] == 0.0
    assert control.train_acc[-1] >= 0.99
    assert control.test_acc[-1] <= 0.5
    assert control.grok_step is None


def test_control_shares_split_initialisation_and_paths(runs):
    grok, control = runs
    assert torch.equal(grok.split["test"], control.split["test"])
    assert torch.equal(grok.pairs, control.pairs)
    assert grok.per_path["crossings"][0].tolist() == control.per_path["crossings"][0].tolist()


def test_path_metrics_are_aligned_and_in_range(runs):
    for r in runs:
        n = len(r.step)
        assert r.step[0] == 0 and r.step[-1] == r.config["steps"]
        assert n == r.config["steps"] // r.config["eval_every"] + 1
        for arr in (r.train_acc, r.test_acc, r.train_loss, r.test_loss, r.weight_norm):
            assert arr.shape == (n,)
        assert set(G.PATH_METRICS) <= set(r.metrics)
        for k in G.PATH_METRICS:
            assert r.metrics[k].shape == (n,)
            assert r.per_path[k].shape == (n, r.config["n_paths"])
        assert r.js_curve_median.shape == (n, r.config["n_steps"])
        pp = r.per_path
        for k in ("onset10", "onset50", "onset90"):
            assert np.all((pp[k] >= 0) & (pp[k] <= 1))      # endpoints differ: never NaN here
        assert np.all(pp["onset10"] <= pp["onset50"]) and np.all(pp["onset50"] <= pp["onset90"])
        c = pp["crossings"]
        assert np.all(c >= 0) and np.all(c <= r.config["hidden"]) and np.all(c == np.round(c))
        assert np.all(pp["sharpness"] >= 1 - 1e-9)          # the max slope is ≥ the mean slope
        assert np.all((pp["js_end"] > 0) & (pp["js_end"] <= math.log(2) + 1e-6))
        b = pp["bunching"][~np.isnan(pp["bunching"])]
        assert b.size and np.all(b >= 0)
        # the path pairs have different correct answers
        p = r.config["p"]
        y = (r.pairs // p + r.pairs % p) % p
        assert bool((y[:, 0] != y[:, 1]).all())
        assert set(r.weights) == {"E", "W1", "b1", "W2"}
        assert r.weights["W1"].shape == (r.config["hidden"], 2 * r.config["embed_dim"])


def test_crossings_in_the_run_match_a_grid_count_on_the_trained_weights(runs):
    grok, _ = runs
    w, p = grok.weights, grok.config["p"]
    pairs = grok.pairs[:3]
    x = [G.site_activations(pairs[:, j] // p, pairs[:, j] % p, w).double() for j in (0, 1)]
    for k in range(3):
        total, _, _ = _brute_force_crossings(w["W1"].double(), w["b1"].double(), x[0][k], x[1][k],
                                             n_grid=20_001)
        assert grok.per_path["crossings"][-1, k] == total


def test_a_generator_reproduces_the_run():
    def short(seed):
        return G.run_grokking(steps=60, eval_every=20, n_paths=8,
                              generator=torch.Generator().manual_seed(seed))

    a, b, c = short(5), short(5), short(6)
    assert np.array_equal(a.test_loss, b.test_loss)
    assert np.array_equal(a.per_path["onset50"], b.per_path["onset50"])
    assert torch.equal(a.weights["W1"], b.weights["W1"])
    assert not torch.equal(a.weights["W1"], c.weights["W1"])


def test_importing_the_module_does_not_import_torch():
    code = ("import sys, mi_ideas_plugins.plateaus.activation_plateaus.grokking as g; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
