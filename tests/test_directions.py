"""The shared direction families (plugins/plateaus/common/directions.py), on planted data:
each test states a property the family's definition implies and the old code violated."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.errors import UsageError
from mi_ideas_plugins.plateaus.common import directions as D


class ToySAE:
    """A ReLU SAE with known decoder rows: encode = relu(W x - b), decode = z W + b_dec."""

    def __init__(self, w_dec, threshold=0.0, b_dec=None):
        self.W_dec = w_dec
        self.threshold = threshold
        self.b_dec = torch.zeros(w_dec.shape[1]) if b_dec is None else b_dec

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T - self.threshold)

    def decode(self, z):
        return z @ self.W_dec + self.b_dec


def _data(n=6, n_pool=200, d=16, offset=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(d)
    shift[0] = offset  # activations sit far from the origin, like a residual stream
    pool = torch.randn(n_pool, d, generator=g) + shift
    x = torch.randn(n, d, generator=g) + shift
    return x, pool, g


def _toy_sae(d=16, n_latents=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return ToySAE(D.unit(torch.randn(n_latents, d, generator=g)), threshold=0.3)


def test_every_family_is_defined_and_every_old_name_says_what_it_was():
    assert set(D.FAMILY_DEFINITIONS) == set(D.ALL_FAMILIES)
    msg = D.family_error("isotropic", "activation-plateaus", D.ALL_FAMILIES)
    assert "toward_iso_sample" in msg and "dir_isotropic" in msg and "pool mean" in msg
    msg = D.family_error("isotropic", "sensitive-directions", D.DIRECTION_FAMILIES)
    assert "use dir_isotropic" in msg
    for old in ("real", "cov_gauss", "sae_latent", "sae_synthetic", "cov_random"):
        msg = D.family_error(old, "activation-plateaus", D.ALL_FAMILIES)
        assert "renamed" in msg and "\n" not in msg
    with pytest.raises(UsageError, match="use toward_cov_sample"):
        D.check_family("cov_gauss", "activation-plateaus", D.ALL_FAMILIES)
    assert D.family_error("dir_cov", "x", D.ALL_FAMILIES) is None


def test_truly_isotropic_directions_do_not_point_at_the_pool_mean():
    # The old "isotropic" (unit(t - x) toward an isotropic sample) points at the pool mean,
    # i.e. against x when x sits away from the origin; dir_isotropic does not.
    x, acts, g = _data()
    pool = D.Pool.fit(acts)
    toward = D.raw_directions("toward_iso_sample", x, pool, 200, g)
    iso = D.raw_directions("dir_isotropic", x, pool, 200, g)
    assert D.cos_with_x(toward, x).mean() < -0.3
    assert abs(float(D.cos_with_x(iso, x).mean())) < 0.03
    # uniform on the sphere: the mean direction vanishes, each coordinate has variance 1/d
    assert iso.mean((0, 1)).abs().max() < 0.03
    assert iso.var((0, 1)).sub(1 / x.shape[1]).abs().max() < 0.02


@pytest.mark.parametrize("family", D.ALL_FAMILIES)
def test_radial_project_leaves_no_component_along_x(family):
    x, acts, g = _data()
    sae = _toy_sae()
    pool = D.Pool.fit(acts, exclude=x)
    d = D.directions(family, x, pool, 32, g, sae=sae)  # radial defaults to project
    assert d.shape == (len(x), 32, x.shape[1])
    assert torch.allclose(d.norm(dim=-1), torch.ones(len(x), 32), atol=1e-5)
    mean, _ = D.cos_x_stats(d, x)
    assert abs(mean) < 0.05 and D.cos_with_x(d, x).abs().max() < 1e-5


def test_radial_match_gives_every_family_the_reference_cosines():
    x, acts, g = _data()
    pool = D.Pool.fit(acts, exclude=x)
    ref = torch.tensor([-0.6, 0.1, 0.5])
    for fam in ("dir_isotropic", "toward_iso_sample", "dir_cov"):
        raw = D.raw_directions(fam, x, pool, 300, g)
        d = D.apply_radial(raw, x, "match", g, target_cos=ref)
        c = D.cos_with_x(d, x)
        assert torch.allclose(d.norm(dim=-1), torch.ones_like(c), atol=1e-5)
        # every cosine is one of the reference values, each about a third of the time
        assert torch.isclose(c[..., None], ref, atol=1e-5).any(-1).all()
        share = torch.isclose(c[..., None], ref, atol=1e-5).float().mean((0, 1))
        assert (share - 1 / 3).abs().max() < 0.05
        # the part orthogonal to x is the family's own (projected) direction
        perp = D.apply_radial(raw, x, "project")
        assert torch.allclose(D.apply_radial(d, x, "project"), perp, atol=1e-4)
    with pytest.raises(UsageError, match="target_cos"):
        D.apply_radial(raw, x, "match", g)
    assert D.apply_radial(raw, x, "keep") is raw


def test_sae_latent_sign_is_random_and_signs_have_opposite_cosines_with_radial_keep():
    x, acts, g = _data()
    sae = _toy_sae()
    pool = D.Pool.fit(acts, exclude=x)
    active = sae.encode(x) > 0
    w = D.unit(sae.W_dec)
    d = D.directions("dir_sae_latent", x, pool, 400, g, sae=sae, radial="keep")
    # every path is +w_i or -w_i of a latent active at its reference
    cos_w = d @ w.T  # (n, m, L)
    best = cos_w.abs().argmax(-1)
    assert torch.allclose(cos_w.abs().amax(-1), torch.ones(best.shape), atol=1e-5)
    assert active.gather(1, best).all()
    sign = cos_w.gather(-1, best[..., None])[..., 0].sign()
    assert abs(float((sign > 0).float().mean()) - 0.5) < 0.05
    plus = D.directions("dir_sae_latent", x, pool, 100, torch.Generator().manual_seed(3),
                        sae=sae, radial="keep", sae_sign="plus")
    minus = D.directions("dir_sae_latent", x, pool, 100, torch.Generator().manual_seed(3),
                         sae=sae, radial="keep", sae_sign="minus")
    assert torch.equal(plus, -minus)
    c_plus, c_minus = D.cos_x_stats(plus, x)[0], D.cos_x_stats(minus, x)[0]
    assert c_plus > 0.1 and c_minus == pytest.approx(-c_plus)  # active latents point along x
    # random sign: the family's cos(d, x) is centred even with radial=keep
    assert abs(D.cos_x_stats(d, x)[0]) < 0.5 * c_plus
    inactive = D.directions("dir_sae_inactive", x, pool, 50, g, sae=sae, radial="keep")
    best = (inactive @ w.T).abs().argmax(-1)
    assert (~active).gather(1, best).all()


def test_synthetic_activations_keep_the_mass_of_colliding_latents():
    # One alive latent: every active latent maps to it, so they all collide. An accumulating
    # scatter keeps their summed value; `new[rows, idx] += v` kept only one of them.
    d, n_lat = 8, 6
    w = torch.eye(n_lat, d)
    sae = ToySAE(w)
    acts = torch.tensor([[1.0, 2.0, 3.0, 0, 0, 0, 0, 0], [0.5, 0, 0, 4.0, 0, 0, 0, 0]])
    freq = torch.tensor([0.5, 0, 0, 0, 0, 0])
    syn = D.synthetic(sae, acts, freq, torch.Generator().manual_seed(0), window=3)
    expected = torch.zeros(2, d)
    expected[0, 0], expected[1, 0] = 1.0 + 2.0 + 3.0, 0.5 + 4.0
    assert torch.allclose(syn, expected)
    assert torch.allclose(syn.sum(-1), sae.encode(acts).sum(-1))


def test_sae_recon_targets_are_reconstructions_of_other_real_activations():
    x, acts, g = _data()
    sae = _toy_sae()
    pool = D.Pool.fit(acts, exclude=x)
    t = D.make_targets("toward_sae_recon", x, pool, 5, g, sae=sae)
    recon = D.reconstruction(sae, pool.acts)
    dist = (t.reshape(-1, 1, x.shape[1]) - recon[None]).norm(dim=-1)
    assert dist.min(-1).values.max() < 1e-5


def test_duplicates_are_dropped_and_a_reference_is_never_paired_with_itself():
    x, acts, g = _data(n=4, n_pool=30)
    # a pool full of copies: each reference three times, and its rows repeated
    dirty = torch.cat([acts, acts[:10], x, x, x])
    pool = D.Pool.fit(dirty, exclude=x)
    assert len(pool.acts) == 30 and pool.n_duplicates == 10 + 8 and pool.n_reference_copies == 4
    assert not D.same_rows(x, pool.acts).any()
    # even a pool that kept the copies never pairs x with itself: no zero-length path
    raw = D.Pool.fit(torch.cat([acts, x]))
    t = D.make_targets("toward_real", x, raw, 200, g)
    assert (t - x[:, None]).norm(dim=-1).min() > 1e-3
    diff = D.raw_directions("dir_real_diff", x, D.Pool.fit(torch.cat([acts[:3], acts[:3]])), 50,
                            g)
    assert torch.isfinite(diff).all() and torch.allclose(diff.norm(dim=-1), torch.ones(4, 50))
    assert D.distinct_rows(torch.tensor([[1.0], [2.0], [1.0], [3.0], [2.0]])).tolist() == [0, 1, 3]


def test_target_and_direction_families_are_not_confused():
    x, acts, g = _data()
    pool = D.Pool.fit(acts)
    with pytest.raises(UsageError, match="direction family"):
        D.make_targets("dir_cov", x, pool, 2, g)
    with pytest.raises(UsageError, match="renamed"):
        D.make_targets("cov_gauss", x, pool, 2, g)
    with pytest.raises(UsageError, match="needs a dictionary"):
        D.directions("dir_sae_latent", x, pool, 2, g)
    for old in ("real", "isotropic", "cov_random", "sae_latent"):
        with pytest.raises(UsageError, match="renamed"):
            D.directions(old, x, pool, 2, g)
