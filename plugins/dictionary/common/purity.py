"""Interpretability without an LLM judge: the concept purity of each dictionary unit's
top-activating contexts, against the same units with the labels shuffled.

The zoo corpus's generator labels every concept word (:mod:`mi_ideas.data.stories`,
``Span.category``); :func:`row_labels` maps each harvested row (text, position) to its
token's category, or ``"none"``. For a unit (an SAE latent, a k-means cluster, a random
direction) its ``top`` highest-scoring held-out rows among those where it is active are its
top contexts; purity = the fraction of them carrying the most common label. Units active
on fewer than ``top`` rows are left out (counted). The shuffled-label baseline permutes the
labels over rows and scores the *same* units and rows: it is what purity would be if units
picked rows regardless of concept (it is high when one label, e.g. "none", dominates).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["row_labels", "unit_purity", "purity_summary", "DEFS"]

NONE = "none"

DEFS = {
    "purity": "mean over units (active on at least `top` held-out rows) of the fraction of "
              "the unit's `top` highest-scoring held-out rows whose token has the unit's most "
              "common concept label (zoo corpus categories, 'none' for unlabelled tokens)",
    "purity_shuffled": "the same purity for the same units and rows with the labels "
                       "randomly permuted over rows (the chance level)",
    "purity_excess": "purity − purity_shuffled, paired per unit; ci_lo / ci_hi: 95% "
                     "percentile-bootstrap interval of the mean over units (2000 resamples)",
    "concept_units": "fraction of the scored units whose most common top-context label is a "
                     "concept category (not 'none')",
    "n_units": "units active on at least `top` held-out rows (the ones scored)",
}


def row_labels(tokenizer: Any, texts: Sequence[str], spans: Sequence[Sequence[Any]],
               doc: torch.Tensor, pos: torch.Tensor, *, prepend_bos: bool = True) -> list[str]:
    """The concept category of each harvested row's token (``doc``, ``pos`` as a harvest
    records them: ``pos`` counts from the text's first real token, the BOS when
    ``prepend_bos``), from the texts' labelled spans; ``"none"`` where a token is no
    concept word."""
    from mi_ideas.data.stories import token_labels

    cache: dict[int, list[str]] = {}
    out = []
    shift = 1 if prepend_bos else 0
    for d, p in zip(doc.tolist(), pos.tolist()):
        if d not in cache:
            enc = tokenizer(texts[d], add_special_tokens=False, return_offsets_mapping=True)
            cache[d] = [s.category if s is not None else NONE
                        for s in token_labels(enc["offset_mapping"], spans[d])]
        labels = cache[d]
        i = p - shift
        out.append(labels[i] if 0 <= i < len(labels) else NONE)
    return out


def unit_purity(scores: torch.Tensor, active: torch.Tensor, labels: np.ndarray, top: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (columns of ``scores``, ``(n_rows, n_units)``): purity of its ``top``
    highest-scoring active rows, and whether its majority label is a concept. NaN for a
    unit active on fewer than ``top`` rows. ``labels``: integer codes, 0 = "none"."""
    s = scores.float().masked_fill(~active, float("-inf"))
    n_active = active.sum(0)
    idx = s.topk(min(top, s.shape[0]), dim=0).indices.T.numpy()  # (units, top)
    lab = labels[idx]
    n_labels = int(labels.max()) + 1 if len(labels) else 1
    counts = np.stack([np.bincount(r, minlength=n_labels) for r in lab])
    purity = counts.max(1) / float(top)
    concept = counts.argmax(1) != 0
    ok = n_active.numpy() >= top
    purity = np.where(ok, purity, np.nan)
    return purity, np.where(ok, concept.astype(float), np.nan)


def purity_summary(scores: torch.Tensor, active: torch.Tensor, labels: Sequence[str], top: int,
                   rng: np.random.Generator) -> dict[str, Any]:
    """Purity, the shuffled-label baseline (one permutation shared by every method: pass
    the same ``rng`` seed), their paired difference with a bootstrap interval, and
    per-unit values for the figures."""
    names = [NONE] + sorted(set(labels) - {NONE})
    code = {n: i for i, n in enumerate(names)}
    lab = np.array([code[v] for v in labels], dtype=np.int64)
    shuffled = lab[rng.permutation(len(lab))]
    p, concept = unit_purity(scores, active, lab, top)
    p_sh, _ = unit_purity(scores, active, shuffled, top)
    ok = ~np.isnan(p)
    diff = (p - p_sh)[ok]
    if len(diff):
        boot = rng.choice(diff, size=(2000, len(diff)), replace=True).mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
    else:
        lo = hi = float("nan")
    return {
        "purity": float(np.nanmean(p)) if ok.any() else float("nan"),
        "purity_shuffled": float(np.nanmean(p_sh)) if ok.any() else float("nan"),
        "purity_excess": float(diff.mean()) if len(diff) else float("nan"),
        "purity_excess_ci_lo": float(lo), "purity_excess_ci_hi": float(hi),
        "concept_units": float(np.nanmean(concept)) if ok.any() else float("nan"),
        "n_units": int(ok.sum()),
        "per_unit": [None if np.isnan(v) else round(float(v), 4) for v in p],
        "per_unit_shuffled": [None if np.isnan(v) else round(float(v), 4) for v in p_sh],
    }
