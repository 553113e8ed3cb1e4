"""Clustering next-token distributions into output states, choosing k, and probing for them.

Pure numpy / scikit-learn (no model calls), so every function here can be tested on
synthetic distributions with a planted number of states.

Representations of a next-token distribution p (one row of ``logprobs``):

- ``hellinger``: the vector √p. Euclidean distance between two rows is √2 × the
  Hellinger distance H(p, q) = ‖√p − √q‖ / √2 ∈ [0, 1], a true metric bounded by 1 that
  weights tokens by their probability; k-means on √p minimises within-cluster squared
  Hellinger distance. The default: log-probabilities give the ~vocabulary-many
  near-zero-probability tokens as much weight as the top ones, so tail noise (−12 vs −15
  nats for tokens the model never emits) dominates the Euclidean distance.
- ``logprob``: the log-probabilities, clamped below at ``floor`` (k-means).
- ``js``: the Jensen–Shannon distance √JS(p, q) (nats), a metric; clustered by
  average-linkage agglomerative clustering on the precomputed distance matrix (k-means
  needs a Euclidean space).

k is chosen by one of two criteria over k = k_min..k_max:

- ``silhouette``: the k with the largest mean silhouette (Rousseeuw 1987; s(i) =
  (b − a) / max(a, b), a = mean distance to its own cluster, b = to the nearest other
  cluster; in the representation's distance). Silhouette is undefined for k = 1, so when
  the best mean silhouette is below ``min_silhouette`` the answer is k = 1 ("no
  substantial structure"; Kaufman & Rousseeuw 1990 read ≤ 0.25 as none, 0.26–0.50 as weak
  and possibly artificial, 0.51–0.70 as reasonable, > 0.70 as strong).
- ``gap``: the gap statistic (Tibshirani, Walther & Hastie 2001) over k = 1..k_max:
  Gap(k) = E*[log W_k] − log W_k, W_k the k-means within-cluster sum of squares and E*
  its mean over ``n_refs`` uniform reference sets drawn in the bounding box of the data's
  principal axes; the smallest k with Gap(k) ≥ Gap(k+1) − s_{k+1}, s = sd·√(1 + 1/B).
  Euclidean representations only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPRESENTATIONS = ("hellinger", "logprob", "js")
CRITERIA = ("silhouette", "gap")


def one_thread() -> Any:
    """Limit BLAS / OpenMP pools to one thread: scikit-learn's k-means on these tiny arrays
    is ~15x slower with threads competing on a shared CPU than on one."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def features(logprobs: Any, representation: str = "hellinger", floor: float = -20.0) -> np.ndarray:
    """Rows to cluster: √p (``hellinger`` and ``js``) or clamped log-probs (``logprob``)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if representation == "logprob":
        return np.maximum(lp, floor)
    if representation in ("hellinger", "js"):
        return np.sqrt(np.exp(lp))
    raise ValueError(f"representation must be one of {REPRESENTATIONS}, not {representation!r}")


def js_distances(logprobs: Any, chunk: int = 64) -> np.ndarray:
    """Pairwise Jensen–Shannon distances √JS(p_i, p_j) in nats, shape (n, n)."""
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    p = p / p.sum(1, keepdims=True)
    n = len(p)
    # JS(p, q) = H((p+q)/2) − (H(p) + H(q)) / 2, with H the entropy.
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = -plogp.sum(1)
    out = np.empty((n, n))
    for s in range(0, n, chunk):
        m = (p[s:s + chunk, None, :] + p[None, :, :]) / 2
        hm = -np.where(m > 0, m * np.log(np.where(m > 0, m, 1.0)), 0.0).sum(-1)
        out[s:s + chunk] = hm - (h[s:s + chunk, None] + h[None, :]) / 2
    out = np.sqrt(np.clip((out + out.T) / 2, 0.0, None))
    np.fill_diagonal(out, 0.0)
    return out


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    return km.labels_.astype(np.int64), float(km.inertia_)


def cluster_rows(x: np.ndarray, k: int, *, representation: str, seed: int = 0,
                 n_init: int = 10, distances: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels (n,) for k clusters: k-means on ``x``, or average-linkage on JS distances."""
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    if representation == "js":
        from sklearn.cluster import AgglomerativeClustering

        d = js_distances(np.log(np.square(x) + 1e-300)) if distances is None else distances
        return AgglomerativeClustering(n_clusters=k, metric="precomputed",
                                       linkage="average").fit(d).labels_.astype(np.int64)
    return _kmeans(x, k, seed, n_init)[0]


def gap_statistic(x: np.ndarray, ks: list[int], *, seed: int = 0, n_refs: int = 10,
                  n_init: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Gap(k), s_k, log W_k) for each k in ``ks`` (Tibshirani et al. 2001, PCA-box reference)."""
    rng = np.random.default_rng(seed)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    proj = (x - mean) @ vt.T
    lo, hi = proj.min(0), proj.max(0)

    def log_w(data: np.ndarray, k: int, s: int) -> float:
        if k == 1:
            w = float(((data - data.mean(0)) ** 2).sum())
        else:
            w = _kmeans(data, k, s, n_init)[1]
        return float(np.log(max(w, 1e-300)))

    obs = np.array([log_w(x, k, seed) for k in ks])
    refs = np.empty((n_refs, len(ks)))
    for b in range(n_refs):
        z = rng.uniform(lo, hi, size=proj.shape) @ vt + mean
        refs[b] = [log_w(z, k, seed + b + 1) for k in ks]
    gap = refs.mean(0) - obs
    s = refs.std(0) * np.sqrt(1 + 1 / n_refs)
    return gap, s, obs


@dataclass
class KSelection:
    """The chosen number of output states and the curves behind the choice."""

    k: int
    criterion: str
    ks: list[int]
    silhouette: list[float]
    labels: np.ndarray
    gap_ks: list[int] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    gap_s: list[float] = field(default_factory=list)
    best_silhouette: float = float("nan")
    at_upper_bound: bool = False


def select_k(logprobs: Any, *, k_min: int = 2, k_max: int = 16, representation: str = "hellinger",
             criterion: str = "silhouette", min_silhouette: float = 0.5, floor: float = -20.0,
             seed: int = 0, n_init: int = 10, n_refs: int = 10) -> KSelection:
    """Choose the number of output states of ``logprobs`` (n, vocab); see the module docstring.

    Both curves are computed whatever the criterion (the gap curve only for Euclidean
    representations); ``criterion`` decides which one picks k.
    """
    with one_thread():
        return _select_k(logprobs, k_min=k_min, k_max=k_max, representation=representation,
                         criterion=criterion, min_silhouette=min_silhouette, floor=floor,
                         seed=seed, n_init=n_init, n_refs=n_refs)


def _select_k(logprobs: Any, *, k_min: int, k_max: int, representation: str, criterion: str,
              min_silhouette: float, floor: float, seed: int, n_init: int,
              n_refs: int) -> KSelection:
    from sklearn.metrics import silhouette_score

    x = features(logprobs, representation, floor)
    n = len(x)
    k_max = min(k_max, n - 1)
    ks = list(range(max(2, k_min), k_max + 1))
    if not ks:
        raise ValueError(f"no k to try: k_min={k_min}, k_max={k_max}, {n} rows.")
    dist = js_distances(logprobs) if representation == "js" else None
    labels_by_k: dict[int, np.ndarray] = {}
    sil = []
    for k in ks:
        lab = cluster_rows(x, k, representation=representation, seed=seed, n_init=n_init,
                           distances=dist)
        labels_by_k[k] = lab
        if len(np.unique(lab)) < 2:
            sil.append(float("nan"))
        elif dist is not None:
            sil.append(float(silhouette_score(dist, lab, metric="precomputed")))
        else:
            sil.append(float(silhouette_score(x, lab)))
    sil_arr = np.array(sil)
    best = int(np.nanargmax(sil_arr)) if np.isfinite(sil_arr).any() else 0
    best_sil = float(sil_arr[best])
    gap_ks: list[int] = []
    gap = s = None
    if representation != "js":
        gap_ks = list(range(1, k_max + 1))
        gap, s, _ = gap_statistic(x, gap_ks, seed=seed, n_refs=n_refs,
                                  n_init=max(1, min(n_init, 5)))
    if criterion == "silhouette":
        k = ks[best] if best_sil >= min_silhouette else 1
    elif criterion == "gap":
        if gap is None:
            raise ValueError("the gap criterion needs a Euclidean representation "
                             "(hellinger or logprob).")
        k = gap_ks[-1]
        for i in range(len(gap_ks) - 1):
            if gap[i] >= gap[i + 1] - s[i + 1]:
                k = gap_ks[i]
                break
    else:
        raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    labels = labels_by_k.get(k)
    if labels is None:
        labels = cluster_rows(x, k, representation=representation, seed=seed, n_init=n_init,
                              distances=dist)
    return KSelection(
        k=k, criterion=criterion, ks=ks, silhouette=[float(v) for v in sil], labels=labels,
        gap_ks=gap_ks, gap=[] if gap is None else [float(v) for v in gap],
        gap_s=[] if s is None else [float(v) for v in s], best_silhouette=best_sil,
        at_upper_bound=(k == k_max and k > 1),
    )


def centroid_distributions(logprobs: Any, labels: np.ndarray, representation: str) -> np.ndarray:
    """Each cluster's centre as a distribution (k, vocab).

    ``hellinger`` / ``js``: the squared mean of √p, renormalised (the Hellinger barycentre);
    ``logprob``: the softmax of the mean log-probs (the normalised geometric mean).
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    out = []
    for c in range(int(labels.max()) + 1):
        rows = lp[labels == c]
        if representation == "logprob":
            m = rows.mean(0)
            p = np.exp(m - m.max())
        else:
            p = np.square(np.sqrt(np.exp(rows)).mean(0))
        out.append(p / p.sum())
    return np.stack(out)


def alignment(labels: np.ndarray, slot_labels: list[dict[str, Any]],
              keys: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Adjusted mutual information (arithmetic normalisation) and adjusted Rand index
    between the clusters and each slot label; ``{key: {"ami": .., "ari": .., "n_values": ..}}``.
    Keys whose value is constant or missing on some prompt are skipped."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    if keys is None:
        keys = sorted({k for d in slot_labels for k in d if k != "family"})
    out = {}
    for key in keys:
        if not all(key in d for d in slot_labels):
            continue
        values = [str(d[key]) for d in slot_labels]
        if len(set(values)) < 2:
            continue
        out[key] = {"ami": float(adjusted_mutual_info_score(values, labels)),
                    "ari": float(adjusted_rand_score(values, labels)),
                    "n_values": float(len(set(values)))}
    return out


@dataclass
class ProbeScore:
    accuracy: float
    shuffled_mean: float
    shuffled_std: float
    majority: float


def probe_accuracy(x: Any, y: np.ndarray, *, folds: int = 5, c: float = 1.0, seed: int = 0,
                   n_shuffles: int = 3) -> ProbeScore:
    """Held-out accuracy of a logistic-regression probe predicting ``y`` from ``x``.

    Standardised features, multinomial L2-regularised logistic regression (inverse
    strength ``c``), stratified ``folds``-fold cross-validation: every row is predicted by
    a probe that never saw it, and accuracy pools all held-out predictions. The control
    refits the same probe on ``n_shuffles`` random permutations of ``y`` (same class
    sizes, no relation to ``x``): its accuracy is chance for this class balance.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    counts = np.bincount(y)
    majority = float(counts.max() / len(y))
    if len(np.unique(y)) < 2:
        return ProbeScore(float("nan"), float("nan"), float("nan"), majority)
    rng = np.random.default_rng(seed)

    def score(labels: np.ndarray, s: int) -> float:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=s)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes smaller than the fold count
            pred = cross_val_predict(probe, x, labels, cv=cv)
        return float((pred == labels).mean())

    with one_thread():
        acc = score(y, seed)
        shuffled = [score(rng.permutation(y), seed + 1 + i) for i in range(n_shuffles)]
    return ProbeScore(acc, float(np.mean(shuffled)) if shuffled else float("nan"),
                      float(np.std(shuffled)) if shuffled else float("nan"), majority)


def stability(logprobs: Any, labels: np.ndarray, *, representation: str = "hellinger",
              floor: float = -20.0, n_resamples: int = 5, fraction: float = 0.8,
              seed: int = 0, n_init: int = 10) -> float:
    """Mean adjusted Rand index between the clustering and re-clusterings of random subsets.

    Each resample keeps ``fraction`` of the rows (without replacement), clusters them again
    with the same k, and compares with the full clustering restricted to those rows
    (1 = the same states are found on every subset, 0 = chance agreement).
    """
    from sklearn.metrics import adjusted_rand_score

    k = int(labels.max()) + 1
    if k < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    lp = np.asarray(logprobs, dtype=np.float64)
    x = features(lp, representation, floor)
    n = len(x)
    scores = []
    with one_thread():
        for r in range(n_resamples):
            idx = np.sort(rng.choice(n, size=max(k + 1, int(round(fraction * n))), replace=False))
            sub = cluster_rows(x[idx], k, representation=representation, seed=seed + 1 + r,
                               n_init=n_init,
                               distances=js_distances(lp[idx]) if representation == "js" else None)
            scores.append(adjusted_rand_score(labels[idx], sub))
    return float(np.mean(scores))
