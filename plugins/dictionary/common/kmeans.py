"""k-means for activation rows: a batched, streaming Lloyd in torch (the default, chosen by
``benchmarks/kmeans.py``), scikit-learn and faiss back-ends, and the 1-sparse
"centroid x scalar" variant.

Written by hand rather than calling scikit-learn everywhere because scikit-learn needs
every row in one in-memory array (a million 768-d rows is 3 GB, held a second time as
float64 by ``KMeans``), while a Lloyd pass only needs per-centroid sums: this one reads
rows batch by batch from a :class:`~.rows.RowSource` (disk shards when they do not fit
the budget), so memory is one batch plus ``k x d``. The scaled variant (a direction per
cluster, any coefficient) exists in no library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mi_ideas.errors import UsageError

from .rows import RowSource

__all__ = ["KMeansFit", "ScaledFit", "kmeans", "kmeans_pp", "lloyd", "scaled_kmeans",
           "nearest", "BACKENDS"]

BACKENDS = ("torch", "sklearn", "faiss")
Backend = Literal["torch", "sklearn", "faiss"]


@dataclass
class KMeansFit:
    """Centroids ``(k, d)``; ``inertia`` = Σᵢ minⱼ ‖xᵢ − cⱼ‖² over the fitting rows at the
    last assignment; ``n_iter`` Lloyd iterations run."""

    centroids: torch.Tensor
    inertia: float
    n_iter: int

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        return nearest(x, self.centroids)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.assign(x)]


@dataclass
class ScaledFit:
    """A 1-sparse dictionary: unit directions ``(k, d)`` and an offset ``mean``;
    x̂ = mean + a·u_j with j = argmaxⱼ |(x − mean)·u_j| and a = (x − mean)·u_j."""

    directions: torch.Tensor
    mean: torch.Tensor
    n_iter: int

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proj = (x.float() - self.mean) @ self.directions.T
        j = proj.abs().argmax(-1)
        return j, proj.gather(1, j[:, None])[:, 0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        j, a = self.codes(x)
        return self.mean + a[:, None] * self.directions[j]


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each row's nearest centroid and its squared distance (chunked, so the
    ``(rows, k)`` distance matrix stays small)."""
    c2 = c.pow(2).sum(-1)
    idx, dist = [], []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk].float()
        # ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖²: one fused matrix product per chunk; ‖x‖² does
        # not change the argmin, so it is added to the minimum only
        m = torch.addmm(c2, xi, c.T, alpha=-2).min(-1)
        idx.append(m.indices)
        dist.append((m.values + xi.pow(2).sum(-1)).clamp_min_(0))
    if not idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(idx), torch.cat(dist)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``x``: each new
    centre drawn with probability proportional to its squared distance to the chosen ones."""
    x = x.float()
    n = len(x)
    x2 = x.pow(2).sum(-1)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    # squared distances by ‖x‖² − 2x·c + ‖c‖² (a matrix-vector product, no (n, d) temporary)
    d2 = (x2 - 2 * (x @ x[first]) + x2[first]).clamp_min_(0)
    for _ in range(1, k):
        cum = d2.double().cumsum(0)
        total = float(cum[-1])
        if total <= 0:  # fewer distinct rows than k: repeat rows
            j = int(torch.randint(n, (1,), generator=generator))
        else:
            u = float(torch.rand(1, generator=generator, dtype=torch.float64)) * total
            j = min(int(torch.searchsorted(cum, torch.tensor([u], dtype=torch.float64))), n - 1)
        chosen.append(j)
        d2 = torch.minimum(d2, (x2 - 2 * (x @ x[j]) + x2[j]).clamp_min_(0))
    centres = [x[i] for i in chosen]
    return torch.stack(centres)


def _lines_pp(s: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ for lines through the origin: unit rows ``s``, the squared distance of s to
    the line of c being 1 − (s·c)², so u and −u count as the same seed."""
    n = len(s)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    d2 = (1 - (s @ s[first]).pow(2)).clamp_min_(0)
    for _ in range(1, k):
        cum = d2.double().cumsum(0)
        total = float(cum[-1])
        if total <= 0:
            j = int(torch.randint(n, (1,), generator=generator))
        else:
            u = float(torch.rand(1, generator=generator, dtype=torch.float64)) * total
            j = min(int(torch.searchsorted(cum, torch.tensor([u], dtype=torch.float64))), n - 1)
        chosen.append(j)
        d2 = torch.minimum(d2, (1 - (s @ s[j]).pow(2)).clamp_min_(0))
    return s[chosen].clone()


def lloyd(source: RowSource, init: torch.Tensor, n_iter: int, *, batch_size: int = 8192,
          tol: float = 0.0) -> KMeansFit:
    """Lloyd's algorithm streamed over ``source``: each iteration is one pass that assigns
    every row to its nearest centroid and accumulates per-centroid sums (float64), then
    moves each centroid to the mean of its rows. An empty cluster is re-seeded with the
    row of the pass's last batch farthest from its centroid. Stops after ``n_iter``
    iterations, or earlier when the relative inertia change falls below ``tol`` (0: never)."""
    c = init.float().clone()
    k, d = c.shape
    inertia, prev = float("nan"), None
    it = 0
    for it in range(1, n_iter + 1):
        sums = torch.zeros(k, d, dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        total = 0.0
        last = None
        for b in source.batches(batch_size):
            j, dist = nearest(b, c)
            # float32 sums per batch, accumulated across batches in float64
            sums += torch.zeros(k, d).index_add_(0, j, b.float()).double()
            counts += torch.bincount(j, minlength=k).double()
            total += float(dist.double().sum())
            last = (b, dist)
        inertia = total
        empty = (counts == 0).nonzero()[:, 0]
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c.double()).float()
        if len(empty) and last is not None:
            far = last[1].argsort(descending=True)[:len(empty)]
            c[empty[:len(far)]] = last[0][far].float()
        if tol > 0 and prev is not None and abs(prev - inertia) <= tol * max(prev, 1e-30):
            break
        prev = inertia
    # the inertia of the returned centroids (one more assignment pass)
    inertia = sum(float(nearest(b, c)[1].double().sum()) for b in source.batches(batch_size))
    return KMeansFit(c, inertia, it)


def kmeans(source: RowSource, k: int, *, n_iter: int = 30, seed: int = 0,
           backend: Backend = "torch", init_rows: int = 10_000,
           init: torch.Tensor | None = None) -> KMeansFit:
    """k-means with k-means++ seeding on ``init_rows`` rows spread over the source (or the
    given ``init``), then ``n_iter`` Lloyd iterations with the chosen back-end.

    ``torch`` streams (any number of rows); ``sklearn`` (``KMeans(algorithm="lloyd",
    n_init=1, tol=0)``) and ``faiss`` (``faiss.Kmeans``) cannot stream (both run full-batch
    Lloyd over one in-memory array; scikit-learn's streaming ``MiniBatchKMeans.partial_fit``
    is another algorithm), so they are handed every row once: the in-memory rows themselves
    when the source holds them (no copy; ``RowSource.materialize``), else one array read
    from the harvest. scikit-learn then makes its own centred copy (``copy_x=True``;
    ``copy_x=False`` would centre the shared rows in place and restore them only up to
    rounding, changing what the other methods see).
    With k at least the number of rows every row is its own centroid.
    """
    if k < 1:
        raise UsageError(f"k-means needs k >= 1, not {k}.")
    if backend not in BACKENDS:
        raise UsageError(f"kmeans backend must be one of {BACKENDS}, not {backend!r}.")
    if k >= source.n_rows:
        x = torch.cat(list(source.batches()))
        return KMeansFit(x.clone(), 0.0, 0)
    if init is None:
        g = torch.Generator().manual_seed(seed)
        init = kmeans_pp(source.sample(max(init_rows, 4 * k)), k, g)
    if backend == "torch":
        return lloyd(source, init, n_iter)
    import numpy as np

    x = np.ascontiguousarray(source.materialize().numpy(), dtype=np.float32)  # no copy if float32
    c0 = np.ascontiguousarray(init.numpy(), dtype=np.float32)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, init=c0, n_init=1, max_iter=n_iter, tol=0.0,
                    algorithm="lloyd").fit(x)
        c = torch.from_numpy(km.cluster_centers_.astype(np.float32))
    else:
        try:
            import faiss
        except ImportError:
            raise UsageError("kmeans_backend='faiss' needs faiss-cpu: pip install faiss-cpu "
                             "(or use the default 'torch').") from None
        km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, verbose=False,
                          max_points_per_centroid=max(256, x.shape[0] // k + 1),
                          min_points_per_centroid=1)
        km.train(x, init_centroids=c0)
        c = torch.from_numpy(np.array(km.centroids, dtype=np.float32))
    inertia = sum(float(nearest(b, c)[1].double().sum()) for b in source.batches())
    return KMeansFit(c, inertia, n_iter)


def scaled_kmeans(source: RowSource, k: int, *, mean: torch.Tensor, n_iter: int = 30,
                  seed: int = 0, init_rows: int = 10_000, batch_size: int = 8192) -> ScaledFit:
    """The 1-sparse dictionary ("centroid x scalar"): k unit directions u fitted to minimise
    Σᵢ minⱼ ‖x̃ᵢ − (x̃ᵢ·uⱼ)uⱼ‖², x̃ = x − mean (gain-shape vector quantisation).

    Alternates, streamed like :func:`lloyd`: assign each row to the direction with the
    largest |x̃·u|; set each u to Σ (x̃·u) x̃ over its rows, normalised -- one power-iteration
    step on the cluster's scatter matrix, which cannot increase the loss. Seeded by
    k-means++ for lines (distance 1 − cos², so u and −u are one seed) on the unit-normalised
    centred sample."""
    g = torch.Generator().manual_seed(seed)
    mean = mean.float()
    s = source.sample(max(init_rows, 4 * k)) - mean
    s = s / s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u = _lines_pp(s, min(k, len(s)), g)
    if len(u) < k:
        u = torch.cat([u, torch.randn(k - len(u), u.shape[1], generator=g)])
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    it = 0
    for it in range(1, n_iter + 1):
        acc = torch.zeros_like(u, dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        for b in source.batches(batch_size):
            xc = b - mean
            proj = xc @ u.T
            j = proj.abs().argmax(-1)
            a = proj.gather(1, j[:, None])
            acc.index_add_(0, j, (a * xc).double())
            counts.index_add_(0, j, torch.ones(len(j), dtype=torch.float64))
        norm = acc.norm(dim=-1, keepdim=True)
        keep = (counts[:, None] > 0) & (norm > 0)
        u = torch.where(keep, acc / norm.clamp_min(1e-30), u.double()).float()
    return ScaledFit(u, mean, it)
