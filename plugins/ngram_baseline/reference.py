"""A plain-Python (dict + numpy per context) implementation of the same modified Kneser-Ney.

Written independently of :mod:`.kn` (no tokengrams, no shared helpers) so the two can be
compared: the tests check they agree, and ``benchmarks/ngram.py`` times the batched
tokengrams path against it. Same conventions as :mod:`.kn`: rows padded with
``max_order - 1`` separators ``SEP = vocab``, n-grams ending in SEP not counted, order 0
uniform, Chen & Goodman's three discounts per order and kind where they lie in (0, i], else
Ney's single discount, else 0.75; a lower-order n-gram that begins with SEP keeps its raw
count in place of the continuation count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

import numpy as np


def _discounts(counts: Sequence[int]) -> tuple[float, float, float]:
    n = Counter(c for c in counts if c <= 4)
    n1, n2, n3, n4 = (n.get(i, 0) for i in (1, 2, 3, 4))
    if n1 and n2 and n3 and n4:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if 0 < d[0] <= 1 and 0 < d[1] <= 2 and 0 < d[2] <= 3:
            return d
    if n1:
        y = n1 / (n1 + 2 * n2)
        return (y, y, y)
    return (0.75, 0.75, 0.75)


class DictKN:
    """Modified KN from Python dicts: ``nexts[kind][k][h] = {w: count}``."""

    def __init__(self, rows: np.ndarray, vocab: int, max_order: int):
        self.vocab, self.max_order, sep = vocab, max_order, vocab
        pad = max_order - 1
        raw: dict[int, Counter] = {k: Counter() for k in range(1, max_order + 1)}
        for row in np.asarray(rows).tolist():
            seq = [sep] * pad + row
            for t in range(pad, len(seq)):
                for k in range(1, max_order + 1):
                    raw[k][tuple(seq[t - k + 1:t + 1])] += 1
        cont: dict[int, Counter] = {k: Counter() for k in range(1, max_order)}
        for k in range(2, max_order + 1):
            for g in raw[k]:
                if g[1] == sep:  # nothing but SEP precedes a row start: raw count (KenLM)
                    cont[k - 1][g[1:]] = raw[k - 1][g[1:]]
                else:
                    cont[k - 1][g[1:]] += 1
        self.discounts = {"raw": {k: _discounts(list(c.values())) for k, c in raw.items()},
                          "cont": {k: _discounts(list(c.values())) for k, c in cont.items()}}
        self.nexts: dict[str, dict[int, dict[tuple, dict[int, int]]]] = {"raw": {}, "cont": {}}
        for kind, table in (("raw", raw), ("cont", cont)):
            for k, counter in table.items():
                by_ctx: dict[tuple, dict[int, int]] = defaultdict(dict)
                for g, c in counter.items():
                    by_ctx[g[:-1]][g[-1]] = c
                self.nexts[kind][k] = dict(by_ctx)

    def _step(self, kind: str, k: int, h: tuple, lower: np.ndarray) -> np.ndarray:
        follow = self.nexts[kind][k].get(h)
        if not follow:
            return lower
        d1, d2, d3 = self.discounts[kind][k]
        a = np.zeros(self.vocab)
        for w, c in follow.items():
            a[w] = c
        disc = np.where(a == 0, 0.0, np.where(a == 1, d1, np.where(a == 2, d2, d3)))
        total = a.sum()
        return (a - disc) / total + disc.sum() / total * lower

    def probs(self, context: Sequence[int], n: int) -> np.ndarray:
        """The order-n distribution (V,) after ``context`` (at least n - 1 tokens)."""
        lower = np.full(self.vocab, 1.0 / self.vocab)
        ctx = tuple(context)
        for k in range(1, n + 1):
            h = ctx[len(ctx) - (k - 1):] if k > 1 else ()
            lower = self._step("raw" if k == n else "cont", k, h, lower)
        return lower
