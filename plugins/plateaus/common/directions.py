"""Where perturbations go: target and direction families of the plateau ideas (pure torch).

Names are definitions, the same in all three plateau ideas (:data:`FAMILY_DEFINITIONS`).

**Target families** — a path x → t (interpolation (1 − α)x + αt); as a direction, unit(t − x):

| family | target t |
|---|---|
| ``toward_real`` | another, distinct prompt's real activation at the same site and position class |
| ``toward_cov_sample`` | a sample of N(μ, Σ) fitted to the pool |
| ``toward_iso_sample`` | a sample of N(μ, (tr Σ / d) I) |
| ``toward_sae_synthetic`` | a real activation's active SAE latents swapped for latents of similar firing frequency, values kept, decoded (accumulating scatter) |
| ``toward_sae_recon`` | the SAE reconstruction decode(encode(x_j)) of another real activation x_j |

**Direction families** — unit vectors d, a path x + s·d:

| family | direction d |
|---|---|
| ``dir_isotropic`` | unit(z), z ~ N(0, I): truly isotropic |
| ``dir_cov`` | unit(Σ^{1/2} z): covariance-shaped, x not subtracted (Lee & Heimersheim's baseline) |
| ``dir_sae_latent`` | ±w_i, the unit decoder direction of a latent active at x (sign: ``sae_sign``) |
| ``dir_sae_inactive`` | ±w_i of a latent inactive at x (and alive on the pool when its firing frequencies are given) |
| ``dir_real_diff`` | unit(x_j − x_k), two other distinct real pool activations |

Every direction then goes through :func:`apply_radial` (``radial``: ``project`` — the
default — removes its component along x; ``match`` gives every family the same cos(d, x)
distribution; ``keep`` leaves it): downstream LayerNorms absorb growth along x, so without
it a family's sensitivity mostly measures its cos(d, x) (the radial confound).

The pool never holds an exact duplicate of itself or (with ``Pool.fit(acts, exclude=x)``)
of a reference, and a reference is never paired with a pool row equal to it.
Every draw comes from the generator passed in.

The old family names (``real``, ``cov_gauss``, ``isotropic``, ``sae_latent``,
``sae_synthetic``, ``cov_random``, and each idea's other old names) are refused, by the
functions here and by configs, with :func:`family_error`: the new family they correspond
to and what the old one actually was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mi_ideas.errors import UsageError

TARGET_FAMILIES = ("toward_real", "toward_cov_sample", "toward_iso_sample",
                   "toward_sae_synthetic", "toward_sae_recon")
DIRECTION_FAMILIES = ("dir_isotropic", "dir_cov", "dir_sae_latent", "dir_sae_inactive",
                      "dir_real_diff")
ALL_FAMILIES = (*TARGET_FAMILIES, *DIRECTION_FAMILIES)
SAE_FAMILIES = ("toward_sae_synthetic", "toward_sae_recon", "dir_sae_latent", "dir_sae_inactive")
RADIAL_MODES = ("project", "match", "keep")
SAE_SIGNS = ("random", "plus", "minus")

FAMILY_DEFINITIONS: dict[str, str] = {
    "toward_real": "target path toward another, distinct prompt's real activation at the same "
                   "site and position class (never an exact copy of x); as a direction unit(t - x)",
    "toward_cov_sample": "target path toward a sample of N(mu, Sigma), mu and Sigma fitted to the "
                         "pool; as a direction unit(t - x)",
    "toward_iso_sample": "target path toward a sample of N(mu, (tr Sigma / d) I) (pool mean, "
                         "same total variance); as a direction unit(t - x), which points at the "
                         "pool mean: NOT an isotropic direction (that is dir_isotropic)",
    "toward_sae_synthetic": "target path toward an SAE-synthetic activation: another real "
                            "activation's active latents each swapped for a latent within "
                            "+-window firing-frequency ranks (values kept), decoded with an "
                            "accumulating scatter (colliding latents keep their mass); as a "
                            "direction unit(t - x)",
    "toward_sae_recon": "target path toward the SAE reconstruction decode(encode(x_j)) of another "
                        "real activation x_j; as a direction unit(t - x)",
    "dir_isotropic": "unit(z), z ~ N(0, I): uniformly random on the sphere (truly isotropic)",
    "dir_cov": "unit(Sigma^(1/2) z), z ~ N(0, I), Sigma the pool covariance: covariance-shaped, "
               "x not subtracted (Lee & Heimersheim 2024's baseline)",
    "dir_sae_latent": "s * w_i, w_i the unit decoder direction of a latent active at x (uniform "
                      "over the active latents), s = +-1 by sae_sign (random: a fair coin per path)",
    "dir_sae_inactive": "s * w_i, w_i the unit decoder direction of a latent inactive at x (and "
                        "alive on the pool where firing frequencies are known), s by sae_sign",
    "dir_real_diff": "unit(x_j - x_k), x_j != x_k two real pool activations, both different "
                     "from x",
}

RADIAL_DEFINITIONS: dict[str, str] = {
    "project": "radial=project: the component of d along x removed and d renormalised, "
               "d' = unit(d - (d.x^) x^), so cos(d', x) = 0 for every family",
    "match": "radial=match: d' = c x^ + sqrt(1 - c^2) unit(d - (d.x^) x^), c drawn per path from "
             "the stated reference cosines (target_cos), so every family has the same cos(d', x) "
             "distribution",
    "keep": "radial=keep: d used as the family defines it (its cos(d, x) differs by family; "
            "downstream LayerNorms absorb growth along x, so compare with care)",
}

COS_X_DEFINITION = ("cos(d, x) between the path's unit direction d (after the radial option) and "
                    "its reference activation x, over all paths of the family")

# What the old names were, per idea (their definitions differed between ideas).
_OLD_AP = {
    "real": ("toward_real", "the target path toward another real activation (unit(t - x) for "
             "absolute steps)"),
    "real_arc": ("toward_real with arc interpolation", "the norm-keeping (arc) path toward another "
                 "real activation"),
    "cov_gauss": ("toward_cov_sample", "the path toward a sample of N(mu, Sigma): unit(t - x) "
                  "points at the pool mean, it is not a covariance-shaped direction (that is "
                  "dir_cov)"),
    "isotropic": ("toward_iso_sample", "unit(t - x) toward an isotropic sample of "
                  "N(mu, (tr Sigma / d) I), so it pointed at the pool mean (cos about -0.6 with "
                  "x); a truly isotropic direction is dir_isotropic"),
    "sae_latent": ("dir_sae_latent", "+w_i of a latent active at x, always the plus sign and with "
                   "its x-component kept (cos about +0.4 with x): dir_sae_latent now has a random "
                   "sign and radial=project by default"),
    "sae_synthetic": ("toward_sae_synthetic", "the path toward an SAE-synthetic activation, decoded "
                      "with a scatter that dropped colliding latents (lost mass)"),
    "cov_random": ("dir_cov", "unit(Sigma^(1/2) z), the covariance-shaped direction"),
}
_OLD_SD = {
    "sae_active": ("dir_sae_latent", "+w_i of a latent active at x, always the plus sign, "
                   "x-component kept (so it looked insensitive for a radial reason); use "
                   "dir_sae_latent with sae_sign=plus and radial=keep to reproduce it"),
    "sae_active_minus": ("dir_sae_latent with sae_sign=minus", "-w_i of a latent active at x"),
    "sae_inactive": ("dir_sae_inactive", "+w_i of a latent inactive at x but alive on the pool"),
    "sae_dead": ("dir_sae_dead", "+w_i of a latent that never fires on the pool"),
    "real": ("toward_real", "unit(x' - x) toward another real activation (a target path used as "
             "a direction; dir_real_diff is unit(x_j - x_k) without x)"),
    "pca": ("dir_pca", "a top principal component of the pool, random sign"),
    "cov_random": ("dir_cov", "unit(Sigma^(1/2) z), the covariance-shaped direction"),
    "cov_gauss": ("toward_cov_sample", "unit(g - x), g ~ N(mu, Sigma): it subtracts x, so it "
                  "points at the pool mean"),
    "isotropic": ("dir_isotropic", "unit(z), z ~ N(0, I) (it was truly isotropic in this idea)"),
    "sae_error": ("dir_sae_error", "unit(x_hat - x), toward the SAE reconstruction of x"),
}
OLD_NAMES: dict[str, dict[str, tuple[str, str]]] = {
    "activation-plateaus": _OLD_AP,
    "sensitive-directions": _OLD_SD,
}


def family_error(name: str, idea: str, allowed: tuple[str, ...]) -> str | None:
    """The one-paragraph message for a family name ``idea`` does not take (None if allowed).

    An old name gets the new family it corresponds to and what the old one actually was.
    """
    if name in allowed:
        return None
    old = OLD_NAMES.get(idea, {}).get(name) or _OLD_AP.get(name) or _OLD_SD.get(name)
    if old is not None:
        new, was = old
        return (f"family {name!r} was renamed: use {new}. The old {name!r} was {was}. Families "
                f"are now named by what they are (toward_* = a path toward a target, dir_* = a "
                f"unit direction); {idea} takes: {', '.join(allowed)}")
    return f"unknown family {name!r}; {idea} takes: {', '.join(allowed)}"


def check_family(name: str, idea: str, allowed: tuple[str, ...]) -> str:
    """``name`` if ``idea`` takes it, else a :class:`UsageError` from :func:`family_error`."""
    msg = family_error(name, idea, allowed)
    if msg is not None:
        raise UsageError(msg + ".")
    return name


def _unit(v: Any) -> Any:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def unit(v: Any) -> Any:
    """``v`` divided by its norm along the last axis."""
    return _unit(v)


def distinct_rows(rows: Any) -> Any:
    """Indices (ascending) of the first occurrence of every distinct row of ``rows`` (exact)."""
    import torch

    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(rows), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(rows)), reduce="amin")
    return first.sort().values


def same_rows(x: Any, acts: Any) -> Any:
    """``(len(x), len(acts))`` bool: exact equality of rows of ``x`` and rows of ``acts``."""
    import torch

    both = torch.cat([x.to(acts.dtype), acts])
    _, inverse = torch.unique(both, dim=0, return_inverse=True)
    return inverse[: len(x), None] == inverse[None, len(x):]


@dataclass
class Pool:
    """Real activations at a site (distinct rows) and their Gaussian fit."""

    acts: Any   # (N, d)
    mean: Any   # (d,)
    cov: Any    # (d, d)
    chol: Any   # (d, d) Cholesky factor of cov (+ jitter)
    n_duplicates: int = 0       # exact duplicate rows dropped
    n_reference_copies: int = 0  # rows dropped because they equal a reference

    @classmethod
    def fit(cls, acts: Any, exclude: Any = None) -> "Pool":
        """Pool of the distinct rows of ``acts``, without rows equal to a row of ``exclude``."""
        import torch

        acts = acts.float()
        keep = distinct_rows(acts)
        n_dup = len(acts) - len(keep)
        acts = acts[keep]
        n_ref = 0
        if exclude is not None and len(exclude):
            copy = same_rows(exclude.float(), acts).any(0)
            n_ref = int(copy.sum())
            acts = acts[~copy]
        if len(acts) < 2:
            raise UsageError(f"the activation pool has {len(acts)} distinct rows that are not "
                             f"copies of a reference ({n_dup} duplicates and {n_ref} reference "
                             f"copies dropped); a pool needs at least 2: use more pool texts.")
        a = acts.double()
        mean = a.mean(0)
        centred = a - mean
        cov = centred.T @ centred / max(len(a) - 1, 1)
        jitter = 1e-6 * cov.diagonal().mean().clamp_min(1e-30)
        chol = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
        return cls(acts, mean.float(), cov.float(), chol.float(), n_dup, n_ref)

    def gaussian(self, n: int, gen: Any) -> Any:
        import torch

        z = torch.randn(n, len(self.mean), generator=gen)
        return self.mean + z @ self.chol.T

    def isotropic(self, n: int, gen: Any) -> Any:
        import torch

        scale = (self.cov.diagonal().sum() / len(self.mean)).sqrt()
        return self.mean + scale * torch.randn(n, len(self.mean), generator=gen)

    def median_pair_distance(self, gen: Any, n: int = 512) -> float:
        """Median distance between two distinct random pool rows."""
        import torch

        i = torch.randint(len(self.acts), (n,), generator=gen)
        j = (i + torch.randint(1, len(self.acts), (n,), generator=gen)) % len(self.acts)
        return float((self.acts[i] - self.acts[j]).norm(dim=-1).median())


def _others(pool: Pool, x: Any, m: int, gen: Any, k: int = 1) -> Any:
    """``(n, m)`` (or ``(n, m, k)`` distinct per path) pool indices, never a row equal to x[i]."""
    import torch

    allowed = ~same_rows(x, pool.acts)  # (n, N)
    if (allowed.sum(-1) < k).any():
        raise UsageError(f"the pool has fewer than {k} rows different from one of the "
                         f"references; use more pool texts.")
    if k == 1:
        return torch.multinomial(allowed.float(), m, replacement=True, generator=gen)
    # k distinct rows per path: k draws without replacement, m times
    w = allowed.float().repeat_interleave(m, 0)
    return torch.multinomial(w, k, replacement=False, generator=gen).reshape(len(x), m, k)


def firing_frequency(sae: Any, acts: Any, chunk: int = 4096) -> Any:
    """Fraction of ``acts`` rows on which each SAE latent is active (encoded in chunks)."""
    import torch

    counts = torch.zeros(sae.W_dec.shape[0])
    with torch.no_grad():
        for start in range(0, len(acts), chunk):
            codes = sae.encode(acts[start:start + chunk].to(sae.W_dec.dtype))
            counts += (codes > 0).float().sum(0)
    return counts / max(len(acts), 1)


def synthetic(sae: Any, acts: Any, freq: Any, gen: Any, window: int = 8) -> Any:
    """SAE-synthetic activations: swap each active latent for one of similar firing frequency.

    Latents are ranked by firing frequency; an active latent at rank r is replaced by a
    random alive latent within ``window`` ranks of r (its value kept), then the codes decode
    back (Giglemiani et al. 2024). Two latents of one row mapped to the same new latent add
    up (``index_put_(..., accumulate=True)``): plain ``t[rows, idx] += v`` keeps only one
    of them and loses code mass.
    """
    import torch

    with torch.no_grad():
        codes = sae.encode(acts.to(sae.W_dec.dtype))
        order = torch.argsort(freq, descending=True)
        alive = int((freq > 0).sum())
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        new = torch.zeros_like(codes)
        rows, cols = codes.nonzero(as_tuple=True)
        shift = torch.randint(-window, window + 1, (len(cols),), generator=gen)
        target_rank = (rank[cols] + shift).clamp(0, max(alive - 1, 0))
        new.index_put_((rows, order[target_rank]), codes[rows, cols], accumulate=True)
        return sae.decode(new).to(acts.dtype)


def reconstruction(sae: Any, acts: Any) -> Any:
    """The SAE's reconstruction decode(encode(acts))."""
    import torch

    with torch.no_grad():
        return sae.decode(sae.encode(acts.to(sae.W_dec.dtype))).to(acts.dtype)


def _need_sae(sae: Any, family: str) -> None:
    if sae is None:
        raise UsageError(f"the {family} family needs a dictionary at the site (--sae).")


def make_targets(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *, sae: Any = None,
                 freq: Any = None, window: int = 8) -> Any:
    """Targets ``(n, n_paths, d)`` of a target family for references ``x`` ``(n, d)``."""
    n, d = x.shape
    if family == "toward_real":
        return pool.acts[_others(pool, x, n_paths, gen)]
    if family == "toward_cov_sample":
        return pool.gaussian(n * n_paths, gen).reshape(n, n_paths, d)
    if family == "toward_iso_sample":
        return pool.isotropic(n * n_paths, gen).reshape(n, n_paths, d)
    if family in ("toward_sae_synthetic", "toward_sae_recon"):
        _need_sae(sae, family)
        base = pool.acts[_others(pool, x, n_paths, gen)].reshape(n * n_paths, d)
        if family == "toward_sae_recon":
            return reconstruction(sae, base).reshape(n, n_paths, d).to(x.dtype)
        freq = firing_frequency(sae, pool.acts) if freq is None else freq
        return synthetic(sae, base, freq, gen, window).reshape(n, n_paths, d).to(x.dtype)
    if family in DIRECTION_FAMILIES:
        raise UsageError(f"{family} is a direction family (a unit vector, x + s d), not a target "
                         f"path; target families: {', '.join(TARGET_FAMILIES)}.")
    raise UsageError(check_family_message(family))


def check_family_message(family: str) -> str:
    return (family_error(family, "the plateau family", ALL_FAMILIES) or "") + "."


def _signs(shape: tuple[int, ...], sae_sign: str, gen: Any) -> Any:
    import torch

    if sae_sign == "plus":
        return torch.ones(shape)
    if sae_sign == "minus":
        return -torch.ones(shape)
    if sae_sign == "random":
        return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
    raise UsageError(f"sae_sign must be one of {', '.join(SAE_SIGNS)}, not {sae_sign!r}.")


def latent_directions(sae: Any, x: Any, n_paths: int, gen: Any, *, which: str = "active",
                      sae_sign: str = "random", freq: Any = None) -> Any:
    """``s * w_i`` ``(n, n_paths, d)``: unit decoder rows of latents active / inactive at x.

    ``which="inactive"`` draws only latents alive on the pool when ``freq`` is given. Each
    path draws its latent uniformly from the allowed ones of its prompt, then its sign.
    """
    import torch

    if which not in ("active", "inactive"):
        raise UsageError(f"which must be active or inactive, not {which!r}.")
    with torch.no_grad():
        w = _unit(sae.W_dec.detach().float())
        active = sae.encode(x.to(sae.W_dec.dtype)) > 0
    allowed = active if which == "active" else ~active
    if which == "inactive" and freq is not None:
        allowed = allowed & (torch.as_tensor(freq) > 0)[None]
    empty = (allowed.sum(-1) == 0).nonzero().flatten()
    if len(empty):
        raise UsageError(f"no SAE latent is {which} at {len(empty)} of the {len(x)} references "
                         f"(first: reference {int(empty[0])}); dir_sae_"
                         f"{'latent' if which == 'active' else 'inactive'} needs one per "
                         f"reference: use another dictionary or drop the family.")
    idx = torch.multinomial(allowed.float(), n_paths, replacement=True, generator=gen)
    return w[idx] * _signs((len(x), n_paths, 1), sae_sign, gen)


def raw_directions(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *, sae: Any = None,
                   freq: Any = None, sae_sign: str = "random", window: int = 8) -> Any:
    """Unit directions ``(n, n_paths, d)`` of any family, before the radial option.

    Target families give unit(t − x).
    """
    import torch

    n, d = x.shape
    if family == "dir_isotropic":
        return _unit(torch.randn(n, n_paths, d, generator=gen))
    if family == "dir_cov":
        z = torch.randn(n * n_paths, d, generator=gen)
        return _unit(z @ pool.chol.T).reshape(n, n_paths, d)
    if family in ("dir_sae_latent", "dir_sae_inactive"):
        _need_sae(sae, family)
        which = "active" if family == "dir_sae_latent" else "inactive"
        return latent_directions(sae, x, n_paths, gen, which=which, sae_sign=sae_sign, freq=freq)
    if family == "dir_real_diff":
        jk = _others(pool, x, n_paths, gen, k=2)
        return _unit(pool.acts[jk[..., 0]] - pool.acts[jk[..., 1]])
    if family in TARGET_FAMILIES:
        t = make_targets(family, x, pool, n_paths, gen, sae=sae, freq=freq, window=window)
        return _unit(t - x[:, None])
    raise UsageError(check_family_message(family))


def cos_with_x(d: Any, x: Any) -> Any:
    """cos(d, x) ``(n, m)`` of directions ``d`` ``(n, m, dim)`` at references ``x`` ``(n, dim)``."""
    return (_unit(d) * _unit(x)[:, None]).sum(-1)


def apply_radial(d: Any, x: Any, mode: str, gen: Any = None, *, target_cos: Any = None) -> Any:
    """Directions ``d`` ``(n, m, dim)`` after the radial option ``mode`` (see the module doc).

    ``project``: unit(d − (d·x̂)x̂). ``match``: c x̂ + √(1 − c²) unit(d − (d·x̂)x̂), c drawn
    uniformly (with ``gen``) from the 1-D ``target_cos``. ``keep``: ``d`` unchanged.
    """
    import torch

    if mode == "keep":
        return d
    if mode not in RADIAL_MODES:
        raise UsageError(f"radial must be one of {', '.join(RADIAL_MODES)}, not {mode!r}.")
    xh = _unit(x.to(d.dtype))[:, None]
    perp = _unit(d - (d * xh).sum(-1, keepdim=True) * xh)
    if mode == "project":
        return perp
    if target_cos is None or len(target_cos) == 0:
        raise UsageError("radial=match needs reference cosines (target_cos), e.g. the cos(d, x) "
                         "of every family's paths pooled; none were given.")
    ref = torch.as_tensor(target_cos, dtype=d.dtype).reshape(-1).clamp(-1, 1)
    c = ref[torch.randint(len(ref), d.shape[:-1], generator=gen)][..., None]
    return c * xh + (1 - c * c).clamp_min(0).sqrt() * perp


def directions(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *, sae: Any = None,
               freq: Any = None, radial: str = "project", sae_sign: str = "random",
               target_cos: Any = None, window: int = 8) -> Any:
    """Unit directions ``(n, n_paths, d)`` of ``family`` at ``x``, after the radial option."""
    d = raw_directions(family, x, pool, n_paths, gen, sae=sae, freq=freq, sae_sign=sae_sign,
                       window=window)
    return apply_radial(d, x, radial, gen, target_cos=target_cos)


def cos_x_stats(d: Any, x: Any) -> tuple[float, float]:
    """(mean, std) of cos(d, x) over every path of ``d``."""
    c = cos_with_x(d, x).double().reshape(-1)
    return float(c.mean()), (float(c.std()) if c.numel() > 1 else 0.0)


def add_cos_x(result: Any, family: str, d: Any, x: Any, radial: str) -> tuple[float, float]:
    """Add ``FAMILY.cos_x_mean`` / ``FAMILY.cos_x_std`` (after the radial option) to ``result``."""
    mean, std = cos_x_stats(d, x)
    where = f"; family {family}; {RADIAL_DEFINITIONS[radial]}"
    result.add(f"{family}.cos_x_mean", mean, "mean of " + COS_X_DEFINITION + where)
    result.add(f"{family}.cos_x_std", std if math.isfinite(std) else 0.0,
               "standard deviation of " + COS_X_DEFINITION + where)
    return mean, std
