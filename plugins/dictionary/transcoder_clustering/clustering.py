"""Affinities from latent co-activation, the number of clusters, and the clusterings.

scikit-learn does the clustering (``SpectralClustering`` / ``AgglomerativeClustering`` on
a precomputed affinity) and the scores (``adjusted_rand_score``,
``adjusted_mutual_info_score``); written here are only the affinities (a few matrix
products) and the eigengap criterion, which scikit-learn does not offer.
"""

from __future__ import annotations

import numpy as np
import torch

AFFINITY_DEFINITIONS = {
    "phi": "phi coefficient of the binary firing indicators (Pearson correlation of "
    "1[a_i > 0] and 1[a_j > 0] over samples), negative values set to 0",
    "jaccard": "Jaccard index of the firing sets, |fire_i & fire_j| / |fire_i | fire_j|",
    "correlation": "Pearson correlation of the latent activation values over samples, "
    "negative values set to 0",
}


def affinity(acts: torch.Tensor, kind: str) -> np.ndarray:
    """(L, L) affinity between the columns of ``acts`` ((n, L) latent activations)."""
    if kind == "jaccard":
        b = (acts > 0).double()
        inter = b.T @ b
        count = b.sum(0)
        union = count[:, None] + count[None, :] - inter
        a = inter / union.clamp_min(1)
    else:
        v = (acts > 0).double() if kind == "phi" else acts.double()
        v = v - v.mean(0)
        cov = v.T @ v
        sd = cov.diagonal().clamp_min(1e-30).sqrt()
        a = (cov / sd[:, None] / sd[None, :]).clamp_min(0)
    a = a.numpy()
    np.fill_diagonal(a, 1.0)
    return a


def decoder_cosine(w_dec: torch.Tensor) -> np.ndarray:
    """(L, L) affinity max(cos(d_i, d_j), 0) between decoder rows."""
    d = w_dec.double() / w_dec.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    a = (d @ d.T).clamp_min(0).numpy()
    np.fill_diagonal(a, 1.0)
    return a


def shuffle_columns(acts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each latent's activations permuted over samples independently: the firing rates
    stay, any co-activation between latents is destroyed (the null partition)."""
    n = acts.shape[0]
    idx = torch.stack([torch.randperm(n, generator=gen) for _ in range(acts.shape[1])], 1)
    return torch.gather(acts, 0, idx)


def eigengap_k(a: np.ndarray, k_max: int) -> int:
    """Number of clusters by the eigengap criterion: with eigenvalues
    0 <= l_1 <= l_2 <= ... of the symmetric normalised Laplacian I - D^-1/2 A D^-1/2,
    k = argmax_{2 <= k <= k_max} (l_{k+1} - l_k)."""
    a = a - np.diag(np.diag(a))  # self-affinity carries no information about the partition
    deg = a.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    lap = np.eye(len(a)) - inv[:, None] * a * inv[None, :]
    ev = np.sort(np.linalg.eigvalsh(lap))
    k_max = max(2, min(k_max, len(a) - 1))
    gaps = ev[2:k_max + 1] - ev[1:k_max]  # gaps[i] = l_{k+1} - l_k for k = i + 2 (1-indexed l)
    return int(np.argmax(gaps)) + 2


def cluster(a: np.ndarray, k: int, method: str, seed: int) -> np.ndarray:
    """Cluster labels from an affinity matrix (spectral, or average-linkage agglomerative on
    the distance 1 - affinity)."""
    from sklearn.cluster import AgglomerativeClustering, SpectralClustering

    k = max(1, min(k, len(a)))
    if method == "spectral":
        model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                   assign_labels="cluster_qr")
        return model.fit_predict(a)
    model = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    return model.fit_predict(1.0 - a)


def scores(truth: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(adjusted Rand index, adjusted mutual information) of ``labels`` against ``truth``."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    return float(adjusted_rand_score(truth, labels)), float(adjusted_mutual_info_score(truth, labels))
