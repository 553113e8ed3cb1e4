"""Paired statistics over held-out rows and binned tables (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

def paired_rows_ci(diff: np.ndarray, rng: np.random.Generator, n_boot: int
                   ) -> tuple[float, float, float]:
    """Mean of a paired per-position difference ``diff`` (rows, positions) and its 95%
    percentile-bootstrap interval, resampling rows (the independent units: a row's
    positions share one text, so they are resampled together)."""
    per_row = diff.mean(axis=1)
    idx = rng.integers(0, per_row.size, size=(n_boot, per_row.size))
    boots = per_row[idx].mean(axis=1)
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
