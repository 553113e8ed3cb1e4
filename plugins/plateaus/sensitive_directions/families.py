"""Direction families of the sensitive-directions idea (pure torch).

Every family gives unit directions ``(n_prompts, n_paths, d)`` at the references ``x``;
the sweep then perturbs ``x + t·d``. The plateau family's shared families come from
:mod:`..common.directions` (same names, same definitions in all three plateau ideas);
three are this idea's own: ``dir_sae_dead``, ``dir_pca`` and ``dir_sae_error``.

Every family but ``dir_sae_error`` then goes through the radial option
(:func:`..common.directions.apply_radial`; ``project`` by default): a direction's
component along x decides much of how fast the output moves (downstream LayerNorms absorb
growth along x), so without it the comparison measures cos(d, x), not the direction.
"""

from __future__ import annotations

from typing import Any

from mi_ideas.errors import UsageError

from ..common import directions as C
from .config import ALL_FAMILIES as FAMILIES

SINGLE_PATH = ("dir_sae_error", "optimised")
#: Families the radial option does not apply to (their length and direction are the point).
NO_RADIAL = ("dir_sae_error", "optimised")

DEFINITIONS = {
    **{f: C.FAMILY_DEFINITIONS[f] for f in FAMILIES if f in C.FAMILY_DEFINITIONS},
    "toward_real": "unit(x' - x), x' another prompt's real activation from the pool (never an "
                   "exact copy of x): the target-path family toward_real used as a direction",
    "toward_cov_sample": "unit(g - x), g ~ N(mu, Sigma) fitted to the pool: the target-path "
                         "family toward_cov_sample used as a direction (it subtracts x, so it "
                         "points at the pool mean; Heimersheim 2024's first baseline)",
    "dir_sae_dead": "s * w_i, w_i the unit SAE decoder direction of a latent that never fires on "
                    "the pool, s by sae_sign",
    "dir_pca": "a top principal component of the pool activations (component k = path k), "
               "random sign",
    "dir_sae_error": "unit(x_hat - x), x_hat = SAE decode(encode(x)): stepping t = ||x - x_hat|| "
                     "splices in the reconstruction (Gurnee 2024); never radially adjusted",
    "optimised": "unit direction maximising KL(clean || x + t_opt d) by gradient ascent "
                 "(best of opt_restarts), one per prompt; never radially adjusted",
}

reconstruction = C.reconstruction
latent_frequency = C.firing_frequency


def _pick_latents(sae: Any, n: int, n_paths: int, gen: Any, allowed: Any, sae_sign: str) -> Any:
    """``s * w_i`` for latents in ``allowed`` ``(n, n_latents)`` bool, per prompt."""
    import torch

    w = C.unit(sae.W_dec.detach().float())
    if (allowed.sum(-1) == 0).any():
        raise UsageError("no SAE latent fits this family at one of the prompts.")
    idx = torch.multinomial(allowed.float(), n_paths, replacement=True, generator=gen)
    return w[idx] * C._signs((n, n_paths, 1), sae_sign, gen)


def raw_family_directions(family: str, x: Any, pool: C.Pool, n_paths: int, gen: Any, *,
                          sae: Any, freq: Any, pca: Any = None, sae_sign: str = "random") -> Any:
    """Unit directions ``(n, n_paths, d)`` of ``family`` before the radial option
    (``(n, 1, d)`` for dir_sae_error)."""
    import torch

    n, d = x.shape
    if family == "dir_sae_dead":
        alive = freq > 0
        if not (~alive).any():
            raise UsageError("the SAE has no dead latents on this pool.")
        return _pick_latents(sae, n, n_paths, gen, (~alive).expand(n, -1), sae_sign)
    if family == "dir_pca":
        comps = principal_components(pool) if pca is None else pca
        if n_paths > len(comps):
            raise UsageError(f"dir_pca has only {len(comps)} components, not {n_paths}.")
        sign = torch.randint(0, 2, (n, n_paths, 1), generator=gen).float() * 2 - 1
        return sign * comps[:n_paths][None]
    if family == "dir_sae_error":
        return C.unit(reconstruction(sae, x) - x)[:, None]
    if family in C.ALL_FAMILIES:
        return C.raw_directions(family, x, pool, n_paths, gen, sae=sae, freq=freq,
                                sae_sign=sae_sign)
    raise UsageError(C.family_error(family, "sensitive-directions", FAMILIES) + ".")


def family_directions(family: str, x: Any, pool: C.Pool, n_paths: int, gen: Any, *,
                      sae: Any, freq: Any, pca: Any = None, sae_sign: str = "random",
                      radial: str = "project", target_cos: Any = None) -> Any:
    """Unit directions of ``family`` after the radial option (kept for :data:`NO_RADIAL`)."""
    d = raw_family_directions(family, x, pool, n_paths, gen, sae=sae, freq=freq, pca=pca,
                              sae_sign=sae_sign)
    if family in NO_RADIAL:
        return d
    return C.apply_radial(d, x, radial, gen, target_cos=target_cos)


def principal_components(pool: C.Pool) -> Any:
    """Unit principal components of the pool, by decreasing variance, ``(d, d)`` rows."""
    import torch

    evals, evecs = torch.linalg.eigh(pool.cov.double())
    order = torch.argsort(evals, descending=True)
    return evecs[:, order].T.float().contiguous()
