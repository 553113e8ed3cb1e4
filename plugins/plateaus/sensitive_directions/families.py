"""Direction families of the sensitive-directions idea (pure torch).

Every family gives unit directions ``(n_prompts, n_paths, d)`` at the references ``x``;
the sweep then perturbs ``x + t·d``. Where :mod:`..common.directions` has a family it is
used as is; the families new here are the dead / alive-inactive SAE latents, PCA
components, the isotropic direction that does *not* subtract x, and the SAE
reconstruction error.

| family | direction d | paths per prompt |
|---|---|---|
| ``sae_active`` | unit decoder row w_i of a latent active at x (+w_i: more of the latent) | ``n_paths`` |
| ``sae_active_minus`` | −w_i for a latent active at x (less of it: the reconstruction loses it at t ≈ a_i‖w_i‖) | ``n_paths`` |
| ``sae_inactive`` | unit decoder row of a latent inactive at x but alive on the pool | ``n_paths`` |
| ``sae_dead`` | unit decoder row of a latent that never fires on the pool | ``n_paths`` (none if no latent is dead) |
| ``real`` | unit(x' − x), x' a real pool activation | ``n_paths`` |
| ``pca`` | ± the top ``n_paths`` principal components of the pool (random sign) | ``n_paths`` |
| ``cov_random`` | unit(Σ^{1/2} z), z ~ N(0, I): covariance-shaped, x not subtracted | ``n_paths`` |
| ``cov_gauss`` | unit(g − x), g ~ N(μ, Σ): Heimersheim's first baseline, which subtracts x | ``n_paths`` |
| ``isotropic`` | unit(z), z ~ N(0, I): uniform on the sphere, x not subtracted | ``n_paths`` |
| ``sae_error`` | unit(x̂ − x), x̂ the SAE reconstruction: t = ‖x − x̂‖ lands on x̂ | 1 |
"""

from __future__ import annotations

from typing import Any

from mi_ideas.errors import UsageError

from ..common.directions import Pool, _unit, directions, sae_directions

FAMILIES = ("sae_active", "sae_active_minus", "sae_inactive", "sae_dead", "real", "pca", "cov_random",
            "cov_gauss", "isotropic", "sae_error")
SINGLE_PATH = ("sae_error", "optimised")

DEFINITIONS = {
    "sae_active": "unit SAE decoder direction +w_i of a latent active at x (random active latent)",
    "sae_active_minus": "minus the unit SAE decoder direction, -w_i, of a latent active at x "
                        "(random active latent): less of that latent",
    "sae_inactive": "unit SAE decoder direction +w_i of a latent inactive at x but alive "
                    "(fires at least once) on the pool",
    "sae_dead": "unit SAE decoder direction +w_i of a latent that never fires on the pool",
    "real": "unit(x' - x), x' a random real activation from the pool (other stories)",
    "pca": "a top principal component of the pool activations (component k = path k), "
           "random sign",
    "cov_random": "unit(Sigma^(1/2) z), z ~ N(0, I), Sigma the pool covariance; x is not "
                  "subtracted (Lee & Heimersheim 2024's baseline)",
    "cov_gauss": "unit(g - x), g ~ N(mu, Sigma) fitted to the pool: the baseline that "
                 "subtracts x (Heimersheim 2024), kept as a control of that choice",
    "isotropic": "unit(z), z ~ N(0, I): uniformly random on the sphere, x not subtracted",
    "sae_error": "unit(x_hat - x), x_hat = SAE decode(encode(x)): stepping t = ||x - x_hat|| "
                 "splices in the reconstruction (Gurnee 2024)",
    "optimised": "unit direction maximising KL(clean || x + t_opt d) by gradient ascent "
                 "(best of opt_restarts), one per prompt",
}


def reconstruction(sae: Any, x: Any) -> Any:
    """The SAE's reconstruction x̂ = decode(encode(x)) of ``x`` ``(n, d)``."""
    import torch

    with torch.no_grad():
        return sae.decode(sae.encode(x.to(sae.W_dec.dtype))).to(x.dtype)


def latent_frequency(sae: Any, acts: Any, chunk: int = 4096) -> Any:
    """Fraction of pool rows on which each latent fires (encoded in chunks)."""
    import torch

    counts = torch.zeros(sae.W_dec.shape[0])
    with torch.no_grad():
        for start in range(0, len(acts), chunk):
            codes = sae.encode(acts[start:start + chunk].to(sae.W_dec.dtype))
            counts += (codes > 0).float().sum(0)
    return counts / max(len(acts), 1)


def _pick_latents(sae: Any, x: Any, n_paths: int, gen: Any, allowed: Any) -> Any:
    """Unit decoder rows of latents in ``allowed`` (n, n_latents) bool, per prompt."""
    import torch

    w = _unit(sae.W_dec.detach().float())
    out = torch.empty(len(x), n_paths, w.shape[1])
    for i in range(len(x)):
        choices = allowed[i].nonzero().flatten()
        if len(choices) == 0:
            raise UsageError("no SAE latent fits this family at one of the prompts.")
        out[i] = w[choices[torch.randint(len(choices), (n_paths,), generator=gen)]]
    return out


def family_directions(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *,
                      sae: Any, freq: Any, pca: Any = None) -> Any:
    """Unit directions ``(n, n_paths, d)`` of ``family`` (``(n, 1, d)`` for sae_error)."""
    import torch

    n, d = x.shape
    if family in ("sae_active", "sae_active_minus"):
        d = sae_directions(sae, x, n_paths, gen, which="active")
        return -d if family == "sae_active_minus" else d
    if family in ("sae_inactive", "sae_dead"):
        alive = freq > 0
        if family == "sae_dead":
            if not (~alive).any():
                raise UsageError("the SAE has no dead latents on this pool.")
            return _pick_latents(sae, x, n_paths, gen, (~alive).expand(n, -1))
        with torch.no_grad():
            active = sae.encode(x.to(sae.W_dec.dtype)) > 0
        return _pick_latents(sae, x, n_paths, gen, ~active & alive)
    if family == "real":
        return directions("real", x, pool, n_paths, gen)
    if family == "pca":
        comps = principal_components(pool) if pca is None else pca
        if n_paths > len(comps):
            raise UsageError(f"pca has only {len(comps)} components, not {n_paths}.")
        sign = torch.randint(0, 2, (n, n_paths, 1), generator=gen).float() * 2 - 1
        return sign * comps[:n_paths][None]
    if family in ("cov_random", "cov_gauss"):
        return directions(family, x, pool, n_paths, gen)
    if family == "isotropic":
        return _unit(torch.randn(n, n_paths, d, generator=gen))
    if family == "sae_error":
        return _unit(reconstruction(sae, x) - x)[:, None]
    raise UsageError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}.")


def principal_components(pool: Pool) -> Any:
    """Unit principal components of the pool, by decreasing variance, ``(d, d)`` rows."""
    import torch

    evals, evecs = torch.linalg.eigh(pool.cov.double())
    order = torch.argsort(evals, descending=True)
    return evecs[:, order].T.float().contiguous()
