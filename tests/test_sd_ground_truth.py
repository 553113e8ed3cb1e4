"""sensitive-directions on planted models, through the idea's own pipeline
(``run.experiment``: families, radial option, sweeps, paired statistics, answer).

- A model whose output depends on a few known directions (behind an RMS norm, as in a
  transformer): the SAE latents that *are* those directions must be the most sensitive
  family with radial=project.
- A model whose output depends only on ||x||: after projection every family must show no
  difference (the answer says so); with radial=keep the SAE family, which points along x,
  differs — the radial confound the old code (no radial option, +w_i only) reported as a
  finding.
- Symmetry: after radial=project |mean cos(d, x)| < 0.05 for every family; with
  radial=keep the reported cos(d, x) of +w_i and -w_i have opposite signs.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from tests.toy_subjects import IdentityBlockSubject
from mi_ideas_plugins.plateaus.common.directions import Pool, unit
from mi_ideas_plugins.plateaus.common.sweep import clean_run, rebase
from mi_ideas_plugins.plateaus.sensitive_directions.config import SensitiveDirectionsConfig
from mi_ideas_plugins.plateaus.sensitive_directions.run import experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, K, VOCAB = 24, 3, 12
FAMILIES = ("dir_sae_latent", "dir_sae_inactive", "dir_real_diff", "toward_real", "dir_pca",
            "dir_cov", "dir_isotropic")


class ToySubject(IdentityBlockSubject):
    """One identity block; the next-token logits are ``readout(h)`` at every position."""

    backend = "toy"

    def __init__(self, readout, seed=0):
        super().__init__(spec="toy", tokenizer=None, n_layers=1, d_model=D, d_vocab=VOCAB)
        self.readout = readout
        self.emb = torch.randn(VOCAB, D, generator=torch.Generator().manual_seed(seed))

    def embed(self, batch):
        return self.emb[batch.input_ids]

    def logits_of(self, h):
        return self.readout(h)


class ToySAE:
    """Decoder rows: the K planted directions (active where x has them) and random latents
    with a high threshold (inactive at x, alive on a few pool rows)."""

    def __init__(self, planted, n_other=29, seed=2):
        g = torch.Generator().manual_seed(seed)
        self.W_dec = torch.cat([planted, unit(torch.randn(n_other, D, generator=g))])
        self.threshold = torch.cat([torch.full((len(planted),), 0.5),
                                    torch.full((n_other,), 2.0)])

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T - self.threshold)

    def decode(self, z):
        return z @ self.W_dec


def _planted_world(seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(D, K, generator=g)).Q.T  # K orthonormal directions
    w_out = 3 * torch.randn(VOCAB, K, generator=g)

    def acts(n):  # activations: strong components along u plus isotropic noise
        a = 1.0 + torch.rand(n, K, generator=g)
        return a @ u + 0.6 * torch.randn(n, D, generator=g)

    return u, w_out, acts, g


def _rms(h):
    return h / h.norm(dim=-1, keepdim=True) * math.sqrt(D)


def _setup(readout, seed=0, n_prompts=10):
    u, w_out, acts, g = _planted_world(seed)
    subject = ToySubject(readout(u, w_out))
    ids = torch.randint(0, VOCAB, (n_prompts, 4), generator=g)
    x_new = acts(n_prompts)
    # the references: activations of the planted process at the last position
    clean = rebase(subject, clean_run(subject, ids, "resid_pre.0"), "resid_pre.0", x_new)
    pool = Pool.fit(acts(300), exclude=clean.x)
    return subject, clean, pool, ToySAE(u)


def _run(subject, clean, pool, sae, **overrides):
    config = SensitiveDirectionsConfig(**{
        "families": FAMILIES, "n_paths": 6, "n_steps": 20, "t_max_rel": 1.5,
        "small_t_rel": 0.01, "kl_threshold": 0.05, **overrides})
    result, _ = experiment(subject, clean, "resid_pre.0", pool, sae, config,
                           lambda name: torch.Generator().manual_seed(zlib.crc32(name.encode())))
    return result


def _directions_readout(u, w_out):
    return lambda h: (_rms(h) @ u.T) @ w_out.T


def _norm_readout(u, w_out):
    w = w_out[:, 0]
    return lambda h: h.norm(dim=-1, keepdim=True) * w / 3


def test_planted_directions_are_the_most_sensitive_family_with_radial_project():
    result = _run(*_setup(_directions_readout))
    m = result.metrics
    t = {f: m[f"{f}.t_cross_median"] for f in FAMILIES}
    assert min(t, key=t.get) == "dir_sae_latent", t
    # and it beats every other family at the prompt level (paired, significant)
    for f in FAMILIES:
        if f not in ("dir_sae_latent", "dir_cov"):
            assert t["dir_sae_latent"] < 0.8 * t[f]
    assert m["sae_more_sensitive"] == 1.0 and m["sae_vs_baseline.ratio_ci_high"] < 1.0
    assert m["sae_vs_baseline.wilcoxon_p"] < 0.01
    assert result.details["answer"].startswith("dir_sae_latent directions are MORE sensitive")
    # symmetry: nothing of any family is left along x
    for f in FAMILIES:
        assert abs(m[f"{f}.cos_x_mean"]) < 0.05 and m[f"{f}.cos_x_std"] < 1e-4


def test_a_norm_only_model_shows_no_family_difference_after_projection():
    world = _setup(_norm_readout)
    result = _run(*world)
    m = result.metrics
    # every projected direction changes ||x + t d|| = sqrt(||x||^2 + t^2) identically
    medians = [m[f"{f}.t_cross_median"] for f in FAMILIES]
    assert max(medians) == pytest.approx(min(medians), rel=1e-4)
    assert m["sae_more_sensitive"] == 0.0 and m["sae_vs_baseline.ratio"] == pytest.approx(1.0)
    assert result.details["answer"].startswith("No difference")
    # With radial=keep and +w_i only (the old sae_active), the SAE family points along x
    # (its latents are active because x has them) and "differs": the radial confound.
    keep = _run(*world, radial="keep", sae_sign="plus")
    km = keep.metrics
    assert km["dir_sae_latent.cos_x_mean"] > 0.2
    assert km["sae_more_sensitive"] != 0.0 and km["sae_vs_baseline.wilcoxon_p"] < 0.01
    assert "No difference" not in keep.details["answer"]


def test_radial_keep_reports_opposite_cosines_for_plus_and_minus_latents():
    world = _setup(_directions_readout)
    plus = _run(*world, radial="keep", sae_sign="plus").metrics
    minus = _run(*world, radial="keep", sae_sign="minus").metrics
    assert plus["dir_sae_latent.cos_x_mean"] > 0.2
    assert minus["dir_sae_latent.cos_x_mean"] == pytest.approx(-plus["dir_sae_latent.cos_x_mean"])
    # radial=match: every family gets the same cos(d, x) distribution (pooled raw cosines)
    match = _run(*world, radial="match").metrics
    means = [match[f"{f}.cos_x_mean"] for f in FAMILIES]
    stds = [match[f"{f}.cos_x_std"] for f in FAMILIES]
    assert max(means) - min(means) < 0.15 and max(stds) - min(stds) < 0.1
