"""A planted MLP whose feature-to-feature map is sparse and known.

n input features x_i (each on with probability p, magnitude U[0.5, 1.5]) along
orthonormal directions of the input space; one ReLU neuron per output feature,
h_j = ReLU(w_j x_{P(j)} - 0.1) with w_j in [0.5, 1.5] and a distinct parent P(j) each (a
random permutation: two outputs sharing a parent would always fire together and no
dictionary could tell them apart; outputs with two parents are, for a sparse input,
explained more sparsely by per-input directions, so they are not identifiable either); y = sum_j h_j u_j with orthonormal output directions u_j. The true
Jacobian of output feature j w.r.t. input feature i is w_j 1[h_j > 0] for i = P(j) and
0 otherwise: the planted edge set is {(j, P(j))}, one edge per feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .jsae import MLP


@dataclass
class PlantedGraph:
    embed: torch.Tensor     # (n, d) input feature directions
    unembed: torch.Tensor   # (n, d) output feature directions
    mlp: MLP
    edges: set              # {(j, i)}
    prob: float

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        f = self.embed.shape[0]
        on = torch.rand(n, f, generator=gen) < self.prob
        return (on * (0.5 + torch.rand(n, f, generator=gen))) @ self.embed


def build(n_features: int, prob: float, gen: torch.Generator) -> PlantedGraph:
    n = n_features
    q_in, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    q_out, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    w = torch.zeros(n, n)  # (neuron j, input feature i)
    edges = set()
    primary = torch.randperm(n, generator=gen)  # distinct primary parents: outputs identifiable
    for j in range(n):
        parents = [int(primary[j])]
        for i in parents:
            w[j, i] = 0.5 + float(torch.rand(1, generator=gen))
            edges.add((j, i))
    w_in = q_in.T @ w.T            # x (d) -> features (x @ q_in.T) -> neurons
    mlp = MLP(w_in=w_in, b_in=torch.full((n,), -0.1), w_out=q_out.clone(), b_out=torch.zeros(n),
              act="relu")
    return PlantedGraph(q_in, q_out, mlp, edges, prob)


def match(w: torch.Tensor, directions: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """For each dictionary direction (rows of ``w``) the planted direction it matches
    (|cos| >= threshold), else -1."""
    cos = torch.nn.functional.normalize(w.float(), dim=1) @ directions.T
    best, idx = cos.max(dim=1)
    return torch.where(best >= threshold, idx, torch.full_like(idx, -1))


def recovered_edges(edge_matrix: torch.Tensor, dec_in: torch.Tensor, dec_out: torch.Tensor,
                    g: PlantedGraph) -> tuple[set, int, int]:
    """Planted-feature pairs (j, i) of the recovered edges (latent pairs both of whose ends
    match a planted feature), and how many latents of each SAE matched."""
    m_in, m_out = match(dec_in, g.embed), match(dec_out, g.unembed)
    found = set()
    for lo, li in torch.nonzero(edge_matrix).tolist():
        if m_out[lo] >= 0 and m_in[li] >= 0:
            found.add((int(m_out[lo]), int(m_in[li])))
    return found, int((m_in >= 0).sum()), int((m_out >= 0).sum())
