"""Where perturbations go: target and direction families for the plateau ideas (pure torch).

Targets ``t`` (for interpolation x → t) and unit directions ``d`` (for x + s·d) of shape
``(n_prompts, n_paths, d_model)``, from a pool of real activations at the same site:

| family | target | direction |
|---|---|---|
| ``real`` | another prompt's real activation | unit(t − x) |
| ``cov_gauss`` | a sample of N(μ, Σ) fitted to the pool (covariance-matched) | unit(t − x) |
| ``isotropic`` | a sample of N(μ, (tr Σ / d) I): same mean and total variance | unit(t − x) |
| ``sae_latent`` | x + r·w_i, w_i the unit decoder direction of a latent active at x, r the median real-pair distance | w_i |
| ``sae_synthetic`` | a real activation whose active SAE latents are each swapped for a latent of similar firing frequency (values kept), decoded | unit(t − x) |
| ``cov_random`` | — | unit(Σ^{1/2} z): covariance-shaped, *without* subtracting x (Lee & Heimersheim's baseline) |

Every draw comes from the generator passed in, so runs are reproducible from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mi_ideas.errors import UsageError

TARGET_FAMILIES = ("real", "cov_gauss", "isotropic", "sae_latent", "sae_synthetic")
DIRECTION_FAMILIES = (*TARGET_FAMILIES, "cov_random")


@dataclass
class Pool:
    """Real activations at a site and their Gaussian fit."""

    acts: Any   # (N, d)
    mean: Any   # (d,)
    cov: Any    # (d, d)
    chol: Any   # (d, d) Cholesky factor of cov (+ jitter)

    @classmethod
    def fit(cls, acts: Any) -> "Pool":
        import torch

        acts = acts.double()
        mean = acts.mean(0)
        centred = acts - mean
        cov = centred.T @ centred / max(len(acts) - 1, 1)
        jitter = 1e-6 * cov.diagonal().mean()
        chol = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
        return cls(acts.float(), mean.float(), cov.float(), chol.float())

    def gaussian(self, n: int, gen: Any) -> Any:
        import torch

        z = torch.randn(n, len(self.mean), generator=gen)
        return self.mean + z @ self.chol.T

    def isotropic(self, n: int, gen: Any) -> Any:
        import torch

        scale = (self.cov.diagonal().sum() / len(self.mean)).sqrt()
        return self.mean + scale * torch.randn(n, len(self.mean), generator=gen)

    def median_pair_distance(self, gen: Any, n: int = 512) -> float:
        import torch

        i = torch.randint(len(self.acts), (n,), generator=gen)
        j = torch.randint(len(self.acts), (n,), generator=gen)
        return float((self.acts[i] - self.acts[j]).norm(dim=-1).median())


def _unit(v: Any) -> Any:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _others(pool: Pool, n: int, m: int, gen: Any, exclude: Any = None) -> Any:
    """(n, m) indices of pool rows, avoiding ``exclude[i]`` (the prompt's own activation)."""
    import torch

    idx = torch.randint(len(pool.acts), (n, m), generator=gen)
    if exclude is not None:
        clash = idx == exclude[:, None]
        idx[clash] = (idx[clash] + 1) % len(pool.acts)
    return idx


def firing_frequency(sae: Any, acts: Any) -> Any:
    """Fraction of ``acts`` rows on which each SAE latent is active."""
    import torch

    with torch.no_grad():
        return (sae.encode(acts) > 0).float().mean(0)


def synthetic(sae: Any, acts: Any, freq: Any, gen: Any, window: int = 8) -> Any:
    """SAE-synthetic activations: swap each active latent for one of similar firing frequency.

    Latents are ranked by firing frequency; an active latent at rank r is replaced by a
    random latent within ``window`` ranks of r (its value kept), then the codes decode back
    (Giglemiani et al. 2024). Dead latents (frequency 0) are never chosen.
    """
    import torch

    with torch.no_grad():
        codes = sae.encode(acts)
        order = torch.argsort(freq, descending=True)
        alive = int((freq > 0).sum())
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        new = torch.zeros_like(codes)
        rows, cols = codes.nonzero(as_tuple=True)
        shift = torch.randint(-window, window + 1, (len(cols),), generator=gen)
        target_rank = (rank[cols] + shift).clamp(0, max(alive - 1, 0))
        new[rows, order[target_rank]] += codes[rows, cols]
        return sae.decode(new)


def targets(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *, sae: Any = None,
            own_index: Any = None, freq: Any = None) -> Any:
    """Targets ``(n, n_paths, d)`` of a family for references ``x`` ``(n, d)``."""

    n, d = x.shape
    if family == "real":
        return pool.acts[_others(pool, n, n_paths, gen, own_index)]
    if family == "cov_gauss":
        return pool.gaussian(n * n_paths, gen).reshape(n, n_paths, d)
    if family == "isotropic":
        return pool.isotropic(n * n_paths, gen).reshape(n, n_paths, d)
    if family == "sae_latent":
        return x[:, None] + pool.median_pair_distance(gen) * sae_directions(sae, x, n_paths, gen)
    if family == "sae_synthetic":
        if sae is None:
            raise UsageError("the sae_synthetic family needs a dictionary (--sae).")
        base = pool.acts[_others(pool, n, n_paths, gen, own_index)].reshape(n * n_paths, d)
        freq = firing_frequency(sae, pool.acts) if freq is None else freq
        return synthetic(sae, base, freq, gen).reshape(n, n_paths, d).to(x.dtype)
    raise UsageError(f"unknown target family {family!r}; families: {', '.join(TARGET_FAMILIES)}.")


def sae_directions(sae: Any, x: Any, n_paths: int, gen: Any, which: str = "active") -> Any:
    """Unit decoder directions ``(n, n_paths, d)`` of latents active (or inactive / dead) at x."""
    import torch

    if sae is None:
        raise UsageError("SAE directions need a dictionary (--sae).")
    with torch.no_grad():
        w = _unit(sae.W_dec.detach().float())
        codes = sae.encode(x)
    n = len(x)
    out = torch.empty(n, n_paths, w.shape[1])
    for i in range(n):
        active = codes[i] > 0
        pick = {"active": active, "inactive": ~active}.get(which)
        if pick is None:
            raise UsageError(f"which must be active or inactive, not {which!r}.")
        choices = pick.nonzero().flatten()
        if len(choices) == 0:
            choices = torch.arange(len(w))
        out[i] = w[choices[torch.randint(len(choices), (n_paths,), generator=gen)]]
    return out


def directions(family: str, x: Any, pool: Pool, n_paths: int, gen: Any, *, sae: Any = None,
               own_index: Any = None, freq: Any = None) -> Any:
    """Unit directions ``(n, n_paths, d)`` of a family at references ``x``."""
    import torch

    if family == "sae_latent":
        return sae_directions(sae, x, n_paths, gen)
    if family == "cov_random":
        z = torch.randn(len(x) * n_paths, x.shape[1], generator=gen)
        return _unit(z @ pool.chol.T).reshape(len(x), n_paths, x.shape[1])
    t = targets(family, x, pool, n_paths, gen, sae=sae, own_index=own_index, freq=freq)
    return _unit(t - x[:, None])
