"""Paired statistics over held-out stories and binned tables (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def story_clusters(tokens: np.ndarray, labels: np.ndarray, eot_label: int = 0) -> np.ndarray:
    """The story (text) each scored position belongs to: (R, T-1) ids 0..C-1 over the
    held-out rows ``tokens`` (R, T), which must be consecutive rows in packing order.

    Position t predicts token t + 1 and belongs to the story of that token (the
    ``<|endoftext|>`` that ends a story belongs to it); the stories of a row are delimited by
    the tokens labelled ``eot_label``. ``pack_rows`` starts the next row with the story it
    cut at the end of a row, so a row's last, unfinished story is the same unit as the next
    row's first story when its tokens are that story's prefix: the two get one id. (A text
    can still be *context* for the next story of its row; that dependence is not removed.)
    """
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    R, T = tokens.shape
    is_eot = labels == eot_label
    seg = np.cumsum(is_eot, axis=1)[:, :-1]  # eots in tokens[0..t]: the story of token t + 1
    ids = np.zeros((R, T - 1), dtype=np.int64)
    offset, carried = 0, None  # carried: the id the previous row's cut story had
    for r in range(R):
        local = seg[r] - seg[r, 0]  # 0 = the row's first story (or segment)
        ids[r] = offset + local
        if carried is not None:
            ids[r][local == 0] = carried
        offset = int(ids[r].max()) + 1
        carried = None
        if r + 1 < R and not is_eot[r, -1]:
            start = np.flatnonzero(is_eot[r])
            start = int(start[-1]) + 1 if start.size else 0
            tail = tokens[r, start:]
            nxt = tokens[r + 1]
            first = 1 if is_eot[r + 1, 0] else 0
            if 0 < start and tail.size <= T - first and (nxt[first:first + tail.size] == tail).all():
                carried = int(ids[r, -1])  # the row's last position's story continues
    _, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(R, T - 1)


def paired_cluster_ci(diff: np.ndarray, clusters: np.ndarray, rng: np.random.Generator,
                      n_boot: int) -> tuple[float, float, float]:
    """Mean of a paired per-position difference ``diff`` and its 95% percentile-bootstrap
    interval, resampling *clusters* (``clusters``: an id per position, e.g. the story of
    :func:`story_clusters`) with replacement and keeping each cluster's positions together;
    each resample's statistic is its pooled per-position mean (sum of the resampled
    clusters' differences / their number of positions)."""
    diff, clusters = np.asarray(diff, dtype=np.float64).reshape(-1), np.asarray(clusters).reshape(-1)
    _, inv = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inv, weights=diff)
    sizes = np.bincount(inv).astype(np.float64)
    idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
    boots = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def by_bins(pos: np.ndarray, edges: list[int], series: dict[str, np.ndarray],
            explained: np.ndarray) -> dict[str, Any]:
    """Mean of each series and the explained fraction in position bins [a, b)."""
    out: dict[str, Any] = {"edges": list(edges), "n": [], "explained_fraction": [],
                           **{k: [] for k in series}}
    for a, b in zip(edges, edges[1:]):
        m = (pos >= a) & (pos < b)
        out["n"].append(int(m.sum()))
        out["explained_fraction"].append(float(explained[m].mean()) if m.any() else float("nan"))
        for k, v in series.items():
            out[k].append(float(v[m].mean()) if m.any() else float("nan"))
    return out
