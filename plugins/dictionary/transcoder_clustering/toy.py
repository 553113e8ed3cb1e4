"""The planted-module toy: M modules share one MLP, each computing its own function of its
own sparse input features with R redundant ReLUs.

Module m owns F input features. A sample switches module m on with probability
``module_prob``; an active module turns each of its features on with probability
``feature_prob`` (at least one), with magnitude U[0.5, 1.5]; inactive modules' features
are 0. Features are embedded in the MLP's input space by random unit directions
(``d_in`` >= M * F keeps them nearly orthogonal). Module m's R hidden ReLUs each read all
of its features with positive weights and fire at staggered thresholds (the redundancy:
R ReLUs computing one function piecewise). Where they write (``output``):

* ``"shared"`` (the default): the modules share the whole output space -- every ReLU
  writes its own i.i.d. random unit direction of all ``d_out`` dimensions, so directions of
  one module are no closer to each other than to another module's (random, overlapping).
  Decoder directions then carry no module information by construction; only *when*
  latents fire (co-activation) does. Ground truth: a transcoder latent belongs to the
  module whose input features hold the largest share of its encoder row's squared
  projection onto the feature directions (what it reads -- the modules' inputs are disjoint).
* ``"orthogonal"``: each module writes into its own random output subspace (``d_out / M``
  dimensions, subspaces orthogonal). Decoder directions then separate the modules as well
  as co-activation does, so this variant cannot tell the two methods apart. Ground truth:
  the module whose output subspace holds the largest share of the latent's decoder
  vector's squared norm.

Latents whose largest share is below ``assign_threshold`` are left unassigned (reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PlantedModules:
    """The planted MLP y = W_out ReLU(W_in x + b) and its ground truth."""

    embed: torch.Tensor       # (M*F, d_in) feature directions
    w_in: torch.Tensor        # (n_neurons, d_in)
    b_in: torch.Tensor        # (n_neurons,)
    w_out: torch.Tensor       # (d_out, n_neurons)
    out_basis: torch.Tensor   # (M, d_out / M, d_out): orthonormal rows of each module's output subspace (orthogonal; (M, 0, d_out) when shared)
    neuron_module: torch.Tensor  # (n_neurons,) module of each neuron
    n_modules: int
    n_features: int           # per module
    module_prob: float
    feature_prob: float
    output: str = "orthogonal"  # "shared" or "orthogonal" (see the module docstring)

    def features(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n, M*F) sparse feature values (module-gated, see the module docstring)."""
        m, f = self.n_modules, self.n_features
        on_mod = torch.rand(n, m, generator=gen) < self.module_prob
        on = torch.rand(n, m, f, generator=gen) < self.feature_prob
        first = torch.randint(0, f, (n, m), generator=gen)  # an active module has >= 1 feature
        on[torch.arange(n)[:, None], torch.arange(m)[None], first] = True
        mag = 0.5 + torch.rand(n, m, f, generator=gen)
        return (on & on_mod[..., None]).float().mul(mag).reshape(n, m * f)

    def inputs(self, feats: torch.Tensor) -> torch.Tensor:
        return feats @ self.embed

    def hidden(self, x_in: torch.Tensor) -> torch.Tensor:
        return torch.relu(x_in @ self.w_in.T + self.b_in)

    def mlp(self, x_in: torch.Tensor) -> torch.Tensor:
        return self.hidden(x_in) @ self.w_out.T

    def latent_modules(self, w_dec: torch.Tensor, threshold: float,
                       w_enc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Module of each transcoder latent and the share that decided it; -1 where the share is
        below ``threshold``. ``"orthogonal"``: the share of the decoder row's (``w_dec``,
        (n_latents, d_out)) squared norm in each module's output subspace; ``"shared"``: the
        share of the encoder row's (``w_enc``, (d_in, n_latents)) squared projections onto
        the feature directions that falls on each module's features."""
        if self.output == "shared":
            if w_enc is None:
                raise ValueError("the shared-output toy assigns latents by their encoder: pass w_enc")
            proj = (w_enc.float().T @ self.embed.T).pow(2)                       # (n_latents, M*F)
            proj = proj.view(len(proj), self.n_modules, self.n_features).sum(-1)
            share = proj / proj.sum(-1, keepdim=True).clamp_min(1e-12)
        else:
            proj = torch.einsum("mkd,ld->lmk", self.out_basis, w_dec.float()).pow(2).sum(-1)
            share = proj / w_dec.float().pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
        best, module = share.max(dim=1)
        module = torch.where(best >= threshold, module, torch.full_like(module, -1))
        return module, best


def build(n_modules: int, n_features: int, redundancy: int, d_in: int, d_out: int,
          module_prob: float, feature_prob: float, gen: torch.Generator,
          output: str = "orthogonal") -> PlantedModules:
    """Draw a planted-module MLP (see the module docstring)."""
    m, f, r = n_modules, n_features, redundancy
    if output not in ("shared", "orthogonal"):
        raise ValueError(f"output must be 'shared' or 'orthogonal', not {output!r}")
    if output == "orthogonal" and d_out % m:
        raise ValueError(f"toy_d_out ({d_out}) must be a multiple of toy_modules ({m}).")
    embed = torch.randn(m * f, d_in, generator=gen)
    embed = embed / embed.norm(dim=1, keepdim=True)
    q, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=gen))
    # shared: no module owns an output subspace
    out_basis = q.T.reshape(m, d_out // m, d_out) if output == "orthogonal" else torch.zeros(m, 0, d_out)
    w_in = torch.zeros(m * r, d_in)
    w_out = torch.zeros(d_out, m * r)
    b_in = torch.zeros(m * r)
    neuron_module = torch.arange(m).repeat_interleave(r)
    for mod in range(m):
        for k in range(r):
            j = mod * r + k
            w = 0.5 + torch.rand(f, generator=gen)  # positive weights on the module's features
            w_in[j] = w @ embed[mod * f:(mod + 1) * f]
            # staggered thresholds: the R ReLUs switch on one after another as the input grows
            b_in[j] = -0.3 * (k + 1) * float(w.mean())
            if output == "orthogonal":
                coef = torch.randn(d_out // m, generator=gen)
                w_out[:, j] = (coef / coef.norm()) @ out_basis[mod]
    if output == "shared":  # every ReLU writes its own i.i.d. random direction of the whole space
        u = torch.randn(d_out, m * r, generator=gen)
        w_out = u / u.norm(dim=0, keepdim=True)
    return PlantedModules(embed, w_in, b_in, w_out, out_basis, neuron_module, m, f,
                          module_prob, feature_prob, output)
