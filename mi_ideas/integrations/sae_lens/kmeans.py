"""The k-means baseline the ``kmeans-baseline`` metric compares an SAE with:
:class:`KMeansBaseline`, k centroids, each activation reconstructed by its nearest one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mi_ideas.errors import UsageError
from mi_ideas.metrics import explained_variance

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["KMeansBaseline"]


class KMeansBaseline:
    """k centroids; an activation is reconstructed by its nearest centroid (Euclidean)."""

    def __init__(self, centroids: "torch.Tensor"):
        self.centroids = centroids.float()

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(cls, x: "torch.Tensor", k: int, *, seed: int = 0, n_init: int = 3,
            max_iter: int = 100) -> "KMeansBaseline":
        """Fit k-means on the rows of ``x`` (scikit-learn ``KMeans``, k-means++ init, best
        of ``n_init``; ``MiniBatchKMeans`` above 20 000 rows). With ``k >= len(x)`` every
        row is its own centroid."""
        import numpy as np
        import torch

        x = x.detach().float().cpu()
        if k < 1:
            raise UsageError(f"k-means needs k >= 1, not {k}.")
        if k >= len(x):
            return cls(x.clone())
        from sklearn.cluster import KMeans, MiniBatchKMeans

        data = np.ascontiguousarray(x.numpy())
        if len(x) > 20_000:
            km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed,
                                 max_iter=max_iter, batch_size=4096)
        else:
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=max_iter)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn depends on it
            km.fit(data)
        else:
            with threadpool_limits(limits=max(1, torch.get_num_threads())):
                km.fit(data)
        return cls(torch.from_numpy(km.cluster_centers_.astype("float32")))

    def assign(self, x: "torch.Tensor", chunk: int = 4096) -> "torch.Tensor":
        """The index of each row's nearest centroid."""
        # By hand rather than scikit-learn's ``predict``: the eval set stays a torch tensor
        # (no numpy round trip), and ``chunk`` rows at a time keep the (rows, k) distance
        # matrix small at k = d_sae.
        import torch

        out = []
        c = self.centroids
        c2 = c.pow(2).sum(-1)
        for i in range(0, len(x), chunk):
            xi = x[i:i + chunk].float()
            # ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖²; ‖x‖² does not change the argmin
            out.append((c2[None] - 2 * xi @ c.T).argmin(-1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def reconstruct(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.centroids[self.assign(x)]

    def explained_variance(self, x: "torch.Tensor") -> float:
        return explained_variance(x, self.reconstruct(x))
