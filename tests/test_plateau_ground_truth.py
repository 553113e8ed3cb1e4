"""Ground truth for the plateau metrics: planted plateaus, a metric that cannot see them, the
endpoint floor, and prompt-level statistics (plugins/plateaus/common/{curves,stats}.py).

Each test plants the answer and checks that the metric recovers it; each would fail if the
metric were computed wrongly (or, for the old max-slope sharpness, documents that it fails).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mi_ideas.metrics import js_divergence, total_variation
from mi_ideas_plugins.plateaus.common.curves import (
    DEFINITIONS,
    FLOORS,
    exclude_small,
    loglog_slope,
    onset,
    sharpness,
    sharpness_with_floor,
    valid_paths,
)
from mi_ideas.stats import (
    DEFINITIONS as STATS_DEFINITIONS,
    paired_comparison,
    per_unit,
)

# --- 1. Planted plateaus ---------------------------------------------------------------------
#
# A prototype model: logits_j(x) = −β ‖x − c_j‖², one output "token" per prototype centre.
# β = 50 is a near-hard Voronoi assignment: the output is constant inside each cell and
# jumps at the planted boundaries (perpendicular bisectors). β = 0.1 is the same prototypes
# with a smooth read-out: no plateau anywhere.

CENTRES = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.5, 0.5], [1.0, 4.0], [-2.0, -2.0]],
                       dtype=torch.float64)
STEEP, SMOOTH = 50.0, 0.1
GRID = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)  # step 0.01
TOL = 0.01  # one grid step; the steep model's transition is ~1/(β·D) ≈ 0.001–0.003 wide


def _logprobs(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.log_softmax(-beta * ((x[..., None, :] - CENTRES) ** 2).sum(-1), dim=-1)


def _js_curve(i: int, j: int, beta: float, steps: torch.Tensor = GRID):
    """JS(p(x_a) ‖ p(x(α))) and TV along x(α) = c_i + α(c_j − c_i)."""
    xa, xb = CENTRES[i], CENTRES[j]
    lp = _logprobs(xa + steps[:, None] * (xb - xa), beta)
    ref = lp[:1].expand_as(lp)
    return js_divergence(ref, lp), total_variation(ref, lp)


def planted_boundaries(i: int, j: int) -> tuple[list[int], list[float]]:
    """Cells visited by the path c_i → c_j and the α of each boundary crossing, analytically.

    ‖x(α) − c_k‖² = α²‖v‖² + 2α (x_a − c_k)·v + ‖x_a − c_k‖² (v = x_b − x_a); the α² term
    is common to every k, so the nearest centre is the lowest of the lines
    g_k(α) = ‖x_a − c_k‖² + 2α (x_a − c_k)·v, and the crossings are where the lower envelope
    switches line (each one a perpendicular-bisector crossing).
    """
    xa, xb = CENTRES[i].tolist(), CENTRES[j].tolist()
    v = [b - a for a, b in zip(xa, xb)]
    icpt = [sum((a - c) ** 2 for a, c in zip(xa, ck)) for ck in CENTRES.tolist()]
    slope = [2 * sum((a - c) * vv for a, c, vv in zip(xa, ck, v)) for ck in CENTRES.tolist()]
    cells, alphas, here = [min(range(len(icpt)), key=icpt.__getitem__)], [], 0.0
    while True:
        k0 = cells[-1]
        cand = [((icpt[k] - icpt[k0]) / (slope[k0] - slope[k]), k)
                for k in range(len(icpt)) if slope[k] < slope[k0]]
        cand = [(a, k) for a, k in cand if a > here]
        if not cand or min(cand)[0] >= 1.0:
            return cells, alphas
        here, k = min(cand)
        cells.append(k)
        alphas.append(here)


def test_planted_boundaries_are_the_bisector_crossings():
    # c0 → c4: only cells 0 and 4, the bisector of two centres crosses at α = 0.5
    assert planted_boundaries(0, 4) == ([0, 4], [pytest.approx(0.5)])
    # c0 → c1 passes through c2's cell: x = 0.8333 (bisector of c0, c2) and x = 2.7 (c2, c1)
    cells, alphas = planted_boundaries(0, 1)
    assert cells == [0, 2, 1]
    assert alphas == [pytest.approx(2.5 / 3 / 4), pytest.approx(2.7 / 4)]
    # the planted model agrees: its argmax switches exactly there
    x = CENTRES[0] + GRID[:, None] * (CENTRES[1] - CENTRES[0])
    winner = _logprobs(x, STEEP).argmax(-1)
    assert winner[GRID < alphas[0] - TOL].eq(0).all()
    assert winner[(GRID > alphas[0] + TOL) & (GRID < alphas[1] - TOL)].eq(2).all()
    assert winner[GRID > alphas[1] + TOL].eq(1).all()


def test_onset_finds_a_planted_plateau_and_not_a_smooth_response():
    (b,) = planted_boundaries(0, 4)[1]
    js, tv = _js_curve(0, 4, STEEP)
    # steep model: JS (and TV) reach 10% and 50% of their endpoint at the planted boundary
    for curve in (js, tv):
        assert abs(float(onset(curve, GRID, 0.1)) - b) < TOL
        assert abs(float(onset(curve, GRID, 0.5)) - b) < TOL
    # Decision for the log–log exponent of the steep model: the curve is ~0 until the
    # boundary. With β·D = 400 the probability of leaving cell a is exp(−β·D·(1 − 2α)) —
    # far below float32 resolution (js_divergence computes in float32) until within ~0.01
    # of the boundary, so there is no power-law start to fit. loglog_slope answers NaN
    # ("flat at the start"), never a number near 2. (An exponent ≫ 2 is only visible for
    # β·D ≈ 10–20, where float32 still resolves the exponential tail, and even there the
    # first grid points are quadratic: any smooth model is quadratic close enough to 0.)
    assert float(js[GRID < b - 0.05].abs().max()) <= 1e-6 * float(js[-1])
    assert math.isnan(float(loglog_slope(js, GRID)))
    assert js[-1] == pytest.approx(math.log(2), rel=1e-4)

    # smooth model, same prototypes: the rise starts at α = 0 (quadratic in JS, linear in
    # TV), long before the boundary, and spreads over the whole path
    js_s, tv_s = _js_curve(0, 4, SMOOTH)
    on10, on50 = float(onset(js_s, GRID, 0.1)), float(onset(js_s, GRID, 0.5))
    assert on10 < b - 0.15 and on50 - on10 > 0.3
    assert float(onset(tv_s, GRID, 0.1)) < 0.3 * b  # TV starts linearly: ≈ 0.1
    assert float(loglog_slope(js_s, GRID)) == pytest.approx(2.0, abs=0.1)
    assert float(loglog_slope(tv_s, GRID)) == pytest.approx(1.0, abs=0.1)
    # max-slope sharpness on the same curves, for the record: it does see a hard step on a
    # fine grid (≫ 2); what it cannot see is test 2's flat-then-ramp curve
    assert float(sharpness(js, GRID)[0]) > 10 > float(sharpness(js_s, GRID)[0])


def test_onset_on_a_three_cell_path_crossing_two_planted_boundaries():
    cells, (b1, b2) = planted_boundaries(0, 1)
    assert cells == [0, 2, 1]
    js, _ = _js_curve(0, 1, STEEP)
    # From x_a the bounded read-out rises at the first boundary and is then flat at ln 2:
    # JS(one-hot a ‖ one-hot c) = JS(one-hot a ‖ one-hot b), so the second boundary is
    # invisible from this end (saturation of a bounded read-out).
    assert abs(float(onset(js, GRID, 0.1)) - b1) < TOL
    assert abs(float(onset(js, GRID, 0.5)) - b1) < TOL
    assert float(js[GRID > b1 + 0.02].min()) > 0.99 * float(js[-1])
    # From the other end, the read-out rises at the second boundary (α' = 1 − b2)
    js_back, _ = _js_curve(1, 0, STEEP)
    assert abs(float(onset(js_back, GRID, 0.1)) - (1 - b2)) < TOL
    assert abs(float(onset(js_back, GRID, 0.5)) - (1 - b2)) < TOL
    # batched: both curves at once give the same answers
    both = onset(torch.stack([js, js_back]), GRID, 0.5)
    assert both.shape == (2,)
    assert abs(float(both[0]) - b1) < TOL and abs(float(both[1]) - (1 - b2)) < TOL
    # the smooth model on the same path: no boundary, a quadratic start
    for i, j in ((0, 1), (1, 0)):
        js_s, _ = _js_curve(i, j, SMOOTH)
        on10, on50 = float(onset(js_s, GRID, 0.1)), float(onset(js_s, GRID, 0.5))
        assert on50 - on10 > 0.3
        assert float(loglog_slope(js_s, GRID)) == pytest.approx(2.0, abs=0.1)


# --- 2. Max-slope sharpness cannot tell a plateau from a quadratic; onset can ---------------

@pytest.mark.parametrize("n_steps", [10, 20, 40])
def test_sharpness_cannot_tell_flat_then_steep_from_quadratic_but_onset_can(n_steps):
    a = torch.linspace(0.0, 1.0, n_steps, dtype=torch.float64)
    quad = a ** 2
    ramp = ((a - 0.6) / 0.4).clamp(0.0, 1.0)  # flat until α = 0.6, then a linear rise
    linear = a.clone()
    s_quad, s_ramp = float(sharpness(quad, a)[0]), float(sharpness(ramp, a)[0])
    # The failure of the old metric: both ≈ 2 (quadratic: 2; ramp: 1/0.4 = 2.5)
    assert max(s_quad, s_ramp) / min(s_quad, s_ramp) < 1.5
    # Onset separates them: α² reaches 10% at √0.1 ≈ 0.316, the ramp at 0.6 + 0.04
    on_q, on_r = float(onset(quad, a, 0.1)), float(onset(ramp, a, 0.1))
    assert on_q == pytest.approx(math.sqrt(0.1), abs=0.02)
    assert on_r == pytest.approx(0.64, abs=0.03)
    assert on_r - on_q > 0.25
    assert float(onset(quad, a, 0.5)) == pytest.approx(math.sqrt(0.5), abs=0.02)
    assert float(onset(ramp, a, 0.5)) == pytest.approx(0.8, abs=0.03)
    assert float(onset(linear, a, 0.5)) == pytest.approx(0.5, abs=1e-9)
    # ... and so does the log–log exponent near 0: 2 for α², 1 for α, none for the ramp
    assert float(loglog_slope(quad, a)) == pytest.approx(2.0, abs=1e-9)
    assert float(loglog_slope(linear, a)) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(float(loglog_slope(ramp, a)))


def test_loglog_slope_recovers_a_power_law_over_its_window():
    a = torch.linspace(0.01, 1.0, 30, dtype=torch.float64)  # a grid that starts at a small α
    for p in (0.5, 1.5, 3.0):
        assert float(loglog_slope(0.7 * a ** p, a)) == pytest.approx(p, abs=1e-9)
    # only the first n_fit points with α > 0 count: α² there, α⁴ beyond
    g = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    curve = torch.where(g <= g[5], g ** 2, 10 * g ** 4)
    assert float(loglog_slope(curve, g, n_fit=5)) == pytest.approx(2.0, abs=1e-9)
    assert float(loglog_slope(curve, g, n_fit=40)) > 2.5
    # values at or below the resolution are not fitted (float32 noise floor)
    noisy = torch.where(g < 0.3, torch.full_like(g, 1e-8), g ** 2)
    assert float(loglog_slope(noisy, g)) == pytest.approx(0.0, abs=1e-9)  # fits the noise
    assert math.isnan(float(loglog_slope(noisy, g, resolution=1e-6)))
    # first point already at the target: the onset is the first α of the grid
    assert float(onset(torch.ones(5), torch.linspace(0.1, 1.0, 5), 0.1)) == pytest.approx(0.1)


# --- 3. The endpoint floor: excluded and counted, never clamped ------------------------------

def test_curves_below_the_floor_are_excluded_and_counted_not_clamped():
    a = torch.linspace(0.0, 1.0, 20, dtype=torch.float64)
    noise = 1e-11 * torch.sin(7 * a) ** 2  # rounding-level read-out ...
    noise[-1] = 1e-13                      # ... whose endpoint is 1e-13
    curves = torch.stack([
        noise,
        a ** 2 * 5e-4,                                   # below the JS floor (1e-3)
        a ** 2 * FLOORS["js"],                           # exactly at the floor: kept
        a ** 2 * 0.5,
        torch.zeros_like(a),                             # no response at all
    ])
    floor = FLOORS["js"]
    mask, n_excluded = exclude_small(curves, floor)
    assert mask.tolist() == [False, False, True, True, False] and n_excluded == 3
    assert valid_paths(curves[:, -1], floor).tolist() == mask.tolist()
    # the old metric divides by the clamped endpoint: the noise curve looks hugely "sharp"
    old = sharpness(curves, a)[0]
    assert float(old[0]) > 20  # ~68; a smooth response gives ~2
    value, where, n = sharpness_with_floor(curves, a, floor)
    assert n == 3
    assert torch.isnan(value[~mask]).all() and torch.isnan(where[~mask]).all()
    assert torch.equal(value[mask], old[mask])  # kept paths: exactly the old values
    for f in (0.1, 0.5):
        on = onset(curves, a, f, floor=floor)
        assert torch.isnan(on[~mask]).all() and torch.isfinite(on[mask]).all()
    assert torch.isnan(loglog_slope(curves, a, floor=floor)[~mask]).all()
    # without a floor only non-positive endpoints are excluded
    assert torch.isnan(onset(curves, a, 0.5)).tolist() == [False, False, False, False, True]


def test_every_new_metric_has_a_definition():
    for key in ("onset", "onset10_js", "onset50_js", "onset10_tv", "onset50_tv",
                "loglog_slope", "loglog_slope_js", "loglog_slope_tv", "sharpness_floored",
                "n_excluded"):
        assert len(DEFINITIONS[key]) > 80, key
    assert "1e-03" in DEFINITIONS["onset10_js"] or "0.001" in DEFINITIONS["onset10_js"]
    for key in ("per_unit", "n_units", "mean_diff", "median_diff", "ci95", "wilcoxon_p",
                "bootstrap_p", "significant"):
        assert STATS_DEFINITIONS[key], key


# --- 4. Paired statistics over prompts -------------------------------------------------------

def _planted(delta: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, n)  # per-prompt values: large prompt-to-prompt spread
    return a, a + delta + rng.normal(0.0, 0.3, n)


@pytest.mark.parametrize("test", ["wilcoxon", "bootstrap"])
def test_a_planted_effect_is_found_with_its_interval(test):
    a, b = _planted(0.3, 30, seed=0)
    r = paired_comparison(a, b, test=test, rng=0)
    assert r.n_units == 30 and r.test == test
    assert r.ci_low > 0 and r.ci_low < 0.3 < r.ci_high  # excludes 0, covers the truth
    assert r.p_wilcoxon < 0.01 and r.significant()
    assert r.ci_low <= r.mean_diff <= r.ci_high
    assert "30 units" in r.describe() and test in r.describe()


def test_the_interval_is_calibrated_under_no_effect():
    # 95% percentile interval of the mean difference, 40 prompts, 50 seeded repetitions.
    # (Over 1,000 repetitions it covers ~93%; ≥ 45 of 50 is the binomial margin.)
    covered = 0
    for seed in range(50):
        a, b = _planted(0.0, 40, seed=100 + seed)
        r = paired_comparison(a, b, test="bootstrap", n_boot=1000, rng=seed)
        covered += not r.ci_excludes_zero
    assert covered >= 45


def test_degenerate_differences_and_missing_units():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    r = paired_comparison(a, a.copy(), rng=0)  # every difference is 0
    assert r.p_wilcoxon == 1.0 and r.ci_low == r.ci_high == 0.0 and not r.significant()
    r = paired_comparison([1.0, np.nan, 3.0, 4.0], [1.5, 2.0, np.nan, 4.5], rng=0)
    assert r.n_units == 2 and r.n_dropped == 2
    pu = per_unit([1.0, 3.0, np.nan, 10.0, np.nan], [7, 7, 7, 2, 5])
    assert pu.units.tolist() == [2, 5, 7] and pu.n_paths.tolist() == [1, 0, 2]
    assert pu.values[0] == 10.0 and math.isnan(pu.values[1]) and pu.values[2] == 2.0
    with pytest.raises(ValueError):
        paired_comparison(per_unit([1.0, 2.0], [0, 1]), per_unit([1.0, 2.0], [0, 2]))
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0])


def test_paths_that_share_a_prompt_are_not_independent():
    """5 prompts × 40 paths, no condition effect; each prompt's paths share a prompt effect
    and a prompt × condition effect (zero mean). A Mann–Whitney over paths counts 200
    observations per condition and often calls the 5 prompts' quirks significant; the paired
    comparison over the 5 prompts does not."""
    from scipy.stats import mannwhitneyu

    n_prompts, n_paths, reps = 5, 40, 20
    ids = np.repeat(np.arange(n_prompts), n_paths)
    mw_claims = paired_claims = boot_claims = expanded_claims = paths_as_units_claims = 0
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        prompt = rng.normal(0.0, 1.0, n_prompts)[:, None]
        quirk = rng.normal(0.0, 0.5, (2, n_prompts, 1))
        a = (prompt + quirk[0] + rng.normal(0.0, 0.3, (n_prompts, n_paths))).ravel()
        b = (prompt + quirk[1] + rng.normal(0.0, 0.3, (n_prompts, n_paths))).ravel()
        mw_claims += mannwhitneyu(a, b).pvalue < 0.05
        pa, pb = per_unit(a, ids), per_unit(b, ids)
        assert pa.units.tolist() == list(range(n_prompts)) and (pa.n_paths == n_paths).all()
        r = paired_comparison(pa, pb, rng=seed)
        assert r.n_units == n_prompts
        paired_claims += r.significant()
        boot_claims += paired_comparison(pa, pb, test="bootstrap", rng=seed).significant()
        expanded_claims += paired_comparison(pa, pb, test="bootstrap", rng=seed,
                                             interval="expanded").significant()
        # the mistake per_unit prevents: treating the 200 paths as paired units
        paths_as_units_claims += paired_comparison(a, b, rng=seed).significant()
    assert mw_claims >= 0.4 * reps  # pseudo-replication: "significant" in about half
    assert paths_as_units_claims >= 0.4 * reps
    # Over 5 prompts the Wilcoxon signed-rank test cannot claim at 5% at all (smallest
    # exact two-sided p = 2/2⁵ = 0.0625): with 5 independent units there is no evidence.
    assert paired_claims == 0
    # The plain percentile bootstrap is too narrow with 5 units (it claims in ~19% of such
    # data over 200 repetitions); the expanded percentile interval keeps closer to 5–10%.
    assert expanded_claims <= boot_claims < mw_claims
