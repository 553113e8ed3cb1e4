"""activation-plateaus on planted plateaus, run through the idea itself (mi_ideas.run).

A one-block toy subject whose residual stream at ``resid_pre.0`` is read by a prototype
block: logits_j = −β ‖h − c_j‖² over K prototype centres c_j. With β large (steep) the
next-token distribution is constant inside each Voronoi cell and jumps at the planted
boundaries (perpendicular bisectors, located analytically below); the same model with a
smooth linear-softmax read-out (logits = W h) has no plateau anywhere. The idea's onset
metrics must put the jump where it was planted, find every path of the steep model
step-like and none of the smooth model's, and exclude (and count) exactly the paths
whose endpoint is in x's own cell (JS endpoint below the floor). The dataset holds
exact duplicate prompts: references and pool must be deduplicated.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.toy_subjects import IdentityBlockSubject

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K, D, V = 5, 6, 37
BETA = 40.0
N_STEPS = 41
GRID = 1.0 / (N_STEPS - 1)


class PlantedPlateaus(IdentityBlockSubject):
    """h_t = e(token_t) + 0.5 e(token_{t−1}); logits from h at each position (steep
    prototypes or linear-softmax); final residual = softmax(logits) @ P."""

    backend = "planted"

    def __init__(self, steep: bool, seed: int = 0):
        super().__init__(spec=f"planted-{'steep' if steep else 'smooth'}", tokenizer=None,
                         n_layers=1, d_model=D, d_vocab=K)
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(V, D, generator=g) * 1.5
        self.centres = torch.randn(K, D, generator=g) * 1.5
        self.W = torch.randn(K, D, generator=g) * 0.7
        self.P = torch.randn(K, D, generator=g)
        self.steep = steep

    @property
    def pad_token_id(self) -> int:
        return 0

    def tokenize(self, texts, *, prepend_bos=True, max_length=None):
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for t in texts:
            ids = ([1] if prepend_bos else []) + [2 + (ord(c) % (V - 2)) for c in t]
            rows.append(ids[:max_length] if max_length else ids)
        return self.batch_from_ids(rows, texts=texts)

    def logits_of(self, h):
        if self.steep:
            return -BETA * ((h[..., None, :] - self.centres) ** 2).sum(-1)
        return h @ self.W.T

    def cell(self, h):
        return ((h[..., None, :] - self.centres) ** 2).sum(-1).argmin(-1)

    def embed(self, batch):
        e = self.emb[batch.input_ids]
        return e + 0.5 * torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], dim=1)

    def final_of(self, h, logits):
        return logits.softmax(-1) @ self.P

    def read_of(self, site, h, final):
        return h if site.kind == "resid_pre" else final


def first_boundary(centres: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> float:
    """α of the first Voronoi-boundary crossing on x + α(t − x) (inf if none before 1).

    ‖x(α) − c_k‖² = α²‖v‖² + 2α (x − c_k)·v + ‖x − c_k‖²: the α² term is shared, so the
    nearest centre is the lowest line g_k(α) = ‖x − c_k‖² + 2α (x − c_k)·v."""
    x, t, c = x.double(), t.double(), centres.double()
    v = t - x
    icpt = ((x - c) ** 2).sum(-1)
    slope = 2 * ((x - c) * v).sum(-1)
    k0 = int(icpt.argmin())
    best = math.inf
    for k in range(len(c)):
        if slope[k] < slope[k0]:
            a = float((icpt[k] - icpt[k0]) / (slope[k0] - slope[k]))
            if 0 < a < best:
                best = a
    return best if best < 1 else math.inf


def texts(n: int = 80, seed: int = 3) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 26, (9,), generator=g)
        out.append("".join(chr(97 + int(i)) for i in ids))
    return out[:20] + out[:12] + out[20:]  # 12 exact duplicates of the first prompts


CONFIG = dict(site="resid_pre.0", n_prompts=14, n_pool=40, n_paths=3, n_steps=N_STEPS,
              families=["toward_real"], step_modes=["relative"], layers=[], steering=False,
              sae_reconstruction=False, reinit_control=False, compare_bases=False)


def _run(tmp_path, steep: bool):
    import mi_ideas
    from safetensors.torch import load_file

    from mi_ideas_plugins.plateaus.activation_plateaus.e2e_sae import topk_sae

    subject = PlantedPlateaus(steep)
    # a dictionary at the toy's site (the SAE families are not run; the zoo's does not fit)
    sae = topk_sae(D, 12, 2, seed=0, hook_name="blocks.0.hook_resid_pre")
    r = mi_ideas.run("activation-plateaus", out=tmp_path, quiet=True, model=subject,
                     saes=[sae], data=texts(), **CONFIG)
    art = load_file(str(Path(r.run_dir) / r.artifacts["relative_toward_real"]))
    return subject, r, art


@pytest.fixture(scope="module")
def steep(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("steep"), True)


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smooth"), False)


def test_references_and_pool_are_deduplicated(steep):
    _, r, art = steep
    assert r.details["duplicates_skipped"] == 12
    x, t = art["x"], art["targets"]
    assert len(torch.unique(x, dim=0)) == len(x) == 14
    # no target is its own reference (no zero-length path)
    assert float((t - x[:, None]).norm(dim=-1).min()) > 1e-3


def test_onsets_sit_on_the_planted_boundaries(steep):
    subject, r, art = steep
    x, t = art["x"], art["targets"]
    o10, o50 = art["onset10"], art["onset50"]
    n_checked = 0
    for i in range(len(x)):
        for j in range(t.shape[1]):
            a = first_boundary(subject.centres, x[i], t[i, j])
            if math.isinf(a):
                continue
            n_checked += 1
            # the JS curve jumps at the first boundary (to ~ln 2: the cells' outputs are
            # disjoint), so both onsets are within a grid step and a half of it
            assert abs(float(o50[i, j]) - a) <= 1.5 * GRID, (i, j, a, float(o50[i, j]))
            assert abs(float(o10[i, j]) - a) <= 1.5 * GRID
    assert n_checked >= 25
    assert r.metrics["toward_real.step_like_fraction"] >= 0.95


def test_paths_inside_one_cell_are_excluded_and_counted_not_clamped(steep):
    subject, r, art = steep
    x, t = art["x"], art["targets"]
    same = (subject.cell(x)[:, None] == subject.cell(t))  # a segment in a convex cell stays in it
    assert int(same.sum()) >= 2  # the planted data has such paths
    assert r.metrics["toward_real.n_excluded"] == int(same.sum())
    assert bool(torch.isnan(art["onset50"][same]).all())
    assert bool(torch.isfinite(art["onset50"][~same]).all())


def test_the_smooth_model_has_no_plateau(smooth):
    _, r, art = smooth
    m = r.metrics
    assert m["toward_real.step_like_fraction"] <= 0.05
    assert m["toward_real.n_excluded"] == 0
    gap = (art["onset50"] - art["onset10"]).flatten()
    assert float(gap.median()) > 0.15
    # a smooth start: JS ∝ α² near α = 0
    assert 1.7 < m["toward_real.loglog_slope_js_median"] < 2.3


def test_the_steep_model_starts_flat(steep, smooth):
    ms, mm = steep[1].metrics, smooth[1].metrics
    # flat before the boundary: the log–log exponent is far above the smooth model's 2 (or
    # undefined: JS below float resolution at the start)
    slope = ms["toward_real.loglog_slope_js_median"]
    assert math.isnan(slope) or slope > 4
    assert ms["toward_real.onset50_js_median"] - ms["toward_real.onset10_js_median"] < 0.05
    assert (mm["toward_real.onset50_js_median"] - mm["toward_real.onset10_js_median"]) > 0.15
