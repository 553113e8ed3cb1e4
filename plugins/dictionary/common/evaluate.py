"""Reconstruction metrics of a dictionary, and the CE loss with a reconstruction spliced
into the model.

Explained variance is :func:`mi_ideas.metrics.explained_variance` (one definition for the
whole project); ``ce_loss_score`` is SAELens's / SAEBench's
(CE_zero-ablation − CE_spliced) / (CE_zero-ablation − CE_clean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mi_ideas.metrics import DEFINITIONS, explained_variance

__all__ = ["DEFS", "reconstruction_stats", "SpliceSet", "ce_loss_score"]

DEFS = {
    "ev": "explained variance on the held-out rows: " + DEFINITIONS["explained_variance"],
    "mse": "mean over held-out rows and dimensions of (x − x̂)²",
    "l0": "mean number of dictionary atoms with a non-zero coefficient per held-out row "
          "(a centroid used with coefficient 1 counts as one)",
    "ce_increase": "CE_spliced − CE_clean: mean next-token cross-entropy (nats) over the "
                   "scored positions (every token after BOS but the last) of the CE texts "
                   "(saes-vs-clustering: the first ce_texts held-out texts) "
                   "with the reconstruction written over the site at every non-BOS position, "
                   "minus the same without the splice",
    "ce_loss_score": "(CE_zero − CE_spliced) / (CE_zero − CE_clean), SAEBench's / SAELens's "
                     "ce_loss_score; CE_zero has the site set to zero at the same positions "
                     "(1 = the reconstruction loses nothing, 0 = as bad as zero ablation)",
}


def reconstruction_stats(x: torch.Tensor, x_hat: torch.Tensor, l0: float) -> dict[str, float]:
    """``ev``, ``mse`` and ``l0`` of one reconstruction of the rows ``x`` (see :data:`DEFS`)."""
    return {"ev": explained_variance(x, x_hat),
            "mse": float((x.double() - x_hat.double()).pow(2).mean()),
            "l0": float(l0)}


def ce_loss_score(ce_spliced: float, ce_clean: float, ce_zero: float) -> float:
    denom = ce_zero - ce_clean
    return (ce_zero - ce_spliced) / denom if denom != 0 else float("nan")


@dataclass
class _Batch:
    batch: Any
    mask: torch.Tensor        # rows of the harvest (every real token but BOS)
    score: torch.Tensor       # positions whose next-token prediction is scored
    targets: torch.Tensor     # the next token at each scored position
    rows: slice               # this batch's rows in the harvest order


class SpliceSet:
    """Held-out texts tokenised exactly as a harvest of them (``positions="all"``, BOS
    skipped), so row ``i`` of that harvest is the ``i``-th spliced position here.

    :meth:`ce` runs the model with a ``(n_rows, d)`` replacement written over ``site`` at
    every harvested position (``Intervention(site, "replace", ...)``; the BOS position is
    kept) and returns the mean next-token cross-entropy over the scored positions. Every
    model call goes through the subject, so a remote subject works unchanged (only the
    target tokens' log-probs at the scored positions come back; one request per batch).
    """

    def __init__(self, subject: Any, texts: Sequence[str], site: str, *, max_length: int,
                 batch_size: int = 32):
        self.subject = subject
        self.site = subject.site(site).name
        self.batches: list[_Batch] = []
        offset = 0
        for start in range(0, len(texts), batch_size):
            b = subject.tokenize(list(texts[start:start + batch_size]), max_length=max_length)
            mask = b.attention_mask.bool().clone()
            first = mask.float().argmax(dim=1)
            mask[torch.arange(len(b)), first] = False
            score = mask.clone()
            score[:, -1] = False  # left padding: the last column is every text's last token
            targets = b.input_ids[:, 1:][score[:, :-1]]
            n = int(mask.sum())
            self.batches.append(_Batch(b, mask, score, targets, slice(offset, offset + n)))
            offset += n
        self.n_rows = offset

    def at(self, site: str) -> "SpliceSet":
        """The same texts, batches and rows, spliced at another site of the same subject
        (no re-tokenisation)."""
        import copy

        other = copy.copy(self)
        other.site = self.subject.site(site).name
        return other

    def ce(self, values: torch.Tensor | None) -> float:
        """Mean CE (nats) with ``values`` (``(n_rows, d)``, or ``(d,)`` for every row)
        spliced in; ``None`` is the clean model."""
        from mi_ideas.subject import Intervention, StatsRequest

        total, count = 0.0, 0
        for eb in self.batches:
            ivs = []
            if values is not None:
                v = values if values.ndim == 1 else values[eb.rows]
                ivs = [Intervention(self.site, "replace", v.float(), positions=eb.mask)]
            # The target tokens' log-probs are computed next to the model (a remote run
            # downloads one number per scored position, not a vocabulary-sized row).
            stats = StatsRequest(positions=eb.score, target_ids=eb.targets)
            out = self.subject.forward(eb.batch, interventions=ivs, stats=stats)
            total += float(-out.stats["target_logprob"].double().sum())
            count += len(eb.targets)
        return total / max(count, 1)
