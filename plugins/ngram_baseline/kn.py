"""n-gram models over packed token rows: tokengrams counts, interpolated modified Kneser-Ney.

The training text is a set of *rows* (``[n_rows, n_ctx]`` token ids, packed as the model is
trained). tokengrams indexes one token stream, so the rows are joined with ``max_order - 1``
copies of a row separator ``SEP = vocab`` before and after each row::

    SEP SEP SEP SEP r1_0 r1_1 ... r1_127 SEP SEP SEP SEP r2_0 ...

No n-gram crosses a row boundary, and the separators play the role of ``<s>`` padding:
the context of row position t is the last n - 1 tokens of ``SEP^(max_order-1) + row[:t+1]``,
so every position has a full-length context (near the row start it says "t tokens after the
row start", which the model also knows). Distributions are over the model's ``vocab`` tokens
(SEP is never a target and its column is dropped).

**Modified Kneser-Ney** (Chen & Goodman 1998, "An empirical study of smoothing techniques for
language modeling", section 3, interpolated form), for an order-n model and a context h::

    p_n(w | h) = max(c(h w) - D_n(c(h w)), 0) / c(h) + gamma(h) p_{n-1}(w | h')
    gamma(h)   = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h)

with h' = h without its first token, c the raw counts at the highest order, and at every
lower order k < n the *continuation counts* c_KN(g w) = N1+(. g w) (the number of distinct
tokens seen before g w) in place of c -- except for an n-gram g w that begins with SEP (a row
start): only SEP can precede it, so N1+(. g w) would be 1 for every w, and it keeps its raw
count c(g w) instead (what KenLM and SRILM do for n-grams beginning with ``<s>``). ``N_i(h .)`` is the number of tokens w with count i
after h (3+: three or more). Order 0 is the uniform distribution 1 / vocab. A context never
seen (c(h) = 0) backs off entirely (p_n = p_{n-1}). The discounts of each order and each kind
(raw, continuation) come from that order's count-of-counts n_1..n_4 (over the n-grams whose
last token is not SEP)::

    Y = n1 / (n1 + 2 n2),  D1 = 1 - 2Y n2/n1,  D2 = 2 - 3Y n3/n2,  D3+ = 3 - 4Y n4/n3

used when each lies in (0, i]; otherwise Ney's single discount Y for every count, or 0.75
where no n-gram of that order is seen once (:func:`discounts_from_counts`; the model records
which, per order and kind, in ``estimated``).

Raw counts c(h w) for a batch of contexts come from one tokengrams ``batch_count_next`` call
per order on the stream's suffix-array index. tokengrams has no continuation-count query
and no count-of-counts (its ``estimate_deltas`` is O(vocab^n)), so those are computed here
with numpy from the stream's n-gram windows: the distinct (k+1)-grams, their k-token tails
and how many distinct tokens precede each tail, N1+(. g), kept as sorted packed codes; a
batch of contexts h gets N1+(. h w) for every w by binary search (:class:`SortedCounts`).
(Where k ids do not fit in 62 bits, a second tokengrams index over the stream
``g_2..g_{k+1} SEP2`` -- one entry per distinct (k+1)-gram, SEP2 = vocab + 1 -- answers
the same query with ``count_next(h)``: SEP2 never occurs in a query, so no match straddles
two entries. It costs (k + 1) tokens of suffix array per distinct n-gram, hence not the
default.)

``tokengrams_probs`` is tokengrams' own ``batch_get_smoothed_probs``: interpolated absolute
discounting on raw lower-order counts (not continuation counts) with its default deltas (it
estimates none unless ``estimate_deltas`` is called); its SEP column is dropped and the rest
renormalised. It gives probability 0 to a token never seen in training.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mi_ideas.errors import UsageError

#: discount used for every count class when no n-gram of an order is seen once
FALLBACK_DISCOUNT = 0.75


def import_tokengrams() -> Any:
    """The ``tokengrams`` module, or a UsageError saying how to get it."""
    import sys

    try:
        import tokengrams
    except ImportError as exc:  # the wheel is missing (CPython >= 3.12) or broken
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise UsageError(
            f"ngram-baseline counts n-grams with the `tokengrams` package (EleutherAI), which "
            f"could not be imported here ({type(exc).__name__}: {exc}). tokengrams ships "
            f"wheels for CPython 3.10 and 3.11 only, and mi-ideas declares it only for "
            f"Python < 3.12; this is Python {ver}. Run the idea from a Python 3.10 / 3.11 "
            f"environment (`pip install 'tokengrams>=0.3.3,<0.4'` there, or reinstall "
            f"mi-ideas in it), or build tokengrams from source with a Rust toolchain."
        ) from None
    return tokengrams


def discounts_from_counts(counts: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """The (D1, D2, D3+) of one order from the counts of its distinct n-grams, and how they
    were obtained:

    * ``"modified"``: Chen & Goodman's three estimates, used when each lies in (0, i];
    * ``"single"``: otherwise, where n1 > 0, Ney's single discount Y = n1 / (n1 + 2 n2) for
      every count (the original interpolated Kneser-Ney). A synthetic corpus can make
      D3+ <= 0 (here: the zoo's templated stories), which would leave a context whose
      successors all have 3+ counts no mass at all for the other tokens;
    * ``"fallback"``: no n-gram of this order is seen once (n1 = 0: every count of a small
      grammar is large), so nothing estimates a discount: the textbook 0.75.
    """
    counts = np.asarray(counts)
    n = [int((counts == i).sum()) for i in (1, 2, 3, 4)]
    if min(n) > 0:
        y = n[0] / (n[0] + 2 * n[1])
        d = (1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2])
        if all(0 < di <= i + 1 for i, di in enumerate(d)):
            return tuple(float(x) for x in d), "modified"
    if n[0] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        return (float(y),) * 3, "single"
    return (FALLBACK_DISCOUNT,) * 3, "fallback"


def interpolate(counts: np.ndarray, discounts: Sequence[float], lower: np.ndarray) -> np.ndarray:
    """One interpolated modified-KN step for a batch: ``counts`` (B, V) after each context,
    ``lower`` (B, V) or (V,) the next-lower order's distribution; returns (B, V)."""
    # Sparse in the counts (most are 0), dense only in the one product gamma * lower.
    table = np.array([0.0, *discounts])
    rows, cols = np.nonzero(counts)
    vals = np.asarray(counts[rows, cols], dtype=np.float64)
    disc = table[np.minimum(vals, 3).astype(np.int64)]  # D(c): D1, D2, D3+
    n = counts.shape[0]
    total = np.bincount(rows, weights=vals, minlength=n)
    seen = total > 0
    safe = np.where(seen, total, 1.0)
    gamma = np.where(seen, np.bincount(rows, weights=disc, minlength=n) / safe, 1.0)
    out = gamma[:, None] * lower  # an unseen context (gamma = 1) backs off entirely
    out[rows, cols] += (vals - disc) / safe[rows]
    return out


def _as_array(lists: list[list[int]], vocab: int) -> np.ndarray:
    """tokengrams' list of per-context count lists as a (B, vocab) array (SEP columns cut)."""
    if not lists:
        return np.zeros((0, vocab), dtype=np.int64)
    width = len(lists[0])
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64,
                       count=len(lists) * width)
    return flat.reshape(len(lists), width)[:, :vocab]


def _first_and_inverse(keys: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """For the rows of ``keys``: the index of one occurrence of each distinct row, and each
    row's position among them."""
    bits = _bits(base)
    if bits * keys.shape[1] <= 62:
        code = _pack(keys, bits)
        _, first, inv = np.unique(code, return_index=True, return_inverse=True)
    else:
        _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inv.reshape(-1)


def _bits(base: int) -> int:
    return int(np.ceil(np.log2(base)))


def _distinct_grams(stream: np.ndarray, k: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct k-grams of ``stream`` whose last token is not a separator (rows of
    ``(n_distinct, k)`` ids) and how often each occurs.

    When k ids fit in 62 bits each window is packed into one int64 built from k shifted
    views of the stream (8 bytes a position, not 8 k); otherwise the windows are copied
    and sorted as rows.
    """
    n = stream.size - k + 1
    if n <= 0:
        return np.zeros((0, k), dtype=np.int64), np.zeros(0, dtype=np.int64)
    keep = stream[k - 1:] < base - 2
    bits = _bits(base)
    if bits * k > 62:
        w = np.lib.stride_tricks.sliding_window_view(stream, k)[keep]
        rows, counts = np.unique(w, axis=0, return_counts=True)
        return rows.astype(np.int64), counts
    code = np.zeros(n, dtype=np.int64)
    for j in range(k):
        code <<= bits
        code |= stream[j:j + n]
    code = code[keep]
    uniq, counts = np.unique(code, return_counts=True)
    del code
    return _unpack(uniq, k, bits), counts


def _unpack(codes: np.ndarray, k: int, bits: int) -> np.ndarray:
    rows = np.empty((codes.size, k), dtype=np.int64)
    mask = (1 << bits) - 1
    codes = codes.copy()
    for j in range(k - 1, -1, -1):
        rows[:, j] = codes & mask
        codes >>= bits
    return rows


def _pack(rows: np.ndarray, bits: int) -> np.ndarray:
    """Rows of ids as one int64 each, the first id in the highest bits (so rows sharing a
    prefix are contiguous in sorted order)."""
    code = np.zeros(rows.shape[0], dtype=np.int64)
    for j in range(rows.shape[1]):
        code <<= bits
        code |= rows[:, j]
    return code


class SortedCounts:
    """Counts of distinct k-token tuples as sorted packed codes: for a batch of (k-1)-token
    prefixes h, the counts of every (h, w) by binary search (``np.searchsorted``), filled
    into a dense (B, V) array without any per-element Python work."""

    def __init__(self, codes: np.ndarray, counts: np.ndarray, bits: int):
        self.codes, self.counts, self.bits = codes, counts.astype(np.int64), bits

    def dense(self, prefixes: np.ndarray, vocab: int) -> np.ndarray:
        lo_code = _pack(prefixes, self.bits) << self.bits
        lo = np.searchsorted(self.codes, lo_code, side="left")
        hi = np.searchsorted(self.codes, lo_code + (1 << self.bits), side="left")
        lens = hi - lo
        out = np.zeros((prefixes.shape[0], vocab), dtype=np.int64)
        total = int(lens.sum())
        if total:
            row = np.repeat(np.arange(prefixes.shape[0]), lens)
            pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
            out[row, self.codes[pos] & ((1 << self.bits) - 1)] = self.counts[pos]
        return out


def _distinct_rows(rows: np.ndarray, base: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Distinct rows of ``rows`` (n, k), how often each occurs, their sorted packed codes
    (None when k ids do not fit in 62 bits), and each row's index among the distinct ones."""
    k = rows.shape[1]
    bits = _bits(base)
    if bits * k > 62:
        out, inv, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
        return out.astype(np.int64), counts, None, inv.reshape(-1)
    uniq, inv, counts = np.unique(_pack(rows, bits), return_inverse=True, return_counts=True)
    return _unpack(uniq, k, bits), counts, uniq, inv.reshape(-1)


def _index_from_tokens(tokengrams: Any, tokens: np.ndarray, vocab: int, workdir: str) -> Any:
    """A tokengrams InMemoryIndex over ``tokens`` read from a raw token file (no Python list
    of every token: that would take ~36 bytes a token)."""
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    fd, path = tempfile.mkstemp(suffix=".tokens", dir=workdir)
    os.close(fd)
    try:
        np.asarray(tokens, dtype=dtype).tofile(path)
        return tokengrams.InMemoryIndex.from_token_file(path, None, vocab)
    finally:
        os.unlink(path)


@dataclass
class NgramCounts:
    """Counts of a training text for n-gram models up to ``max_order`` (see the module doc)."""

    vocab: int
    max_order: int
    n_train_tokens: int
    index: Any  # tokengrams index of the SEP-padded stream (raw counts)
    cont_index: dict[int, Any]  # order k >= 2 -> N1+(. h w) lookup (SortedCounts or index)
    unigram: np.ndarray  # (V,) raw unigram counts
    cont_unigram: np.ndarray  # (V,) N1+(. w)
    discounts: dict[str, dict[int, tuple[float, float, float]]] = field(default_factory=dict)
    estimated: dict[str, dict[int, str]] = field(default_factory=dict)  # modified/single/fallback/given
    n_distinct: dict[int, int] = field(default_factory=dict)

    @property
    def sep(self) -> int:
        return self.vocab

    @classmethod
    def fit(cls, rows: np.ndarray, vocab: int, max_order: int,
            discounts: dict[str, dict[int, tuple[float, float, float]]] | None = None,
            workdir: str | None = None) -> "NgramCounts":
        """Index ``rows`` (``[n_rows, n_ctx]`` ids < ``vocab``) for orders 1..``max_order``.

        ``discounts`` ({"raw": {k: (D1, D2, D3)}, "cont": {...}}) overrides the estimated
        ones for the orders it names (for hand-computed checks).
        """
        tokengrams = import_tokengrams()
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 2 or rows.size == 0:
            raise UsageError("the n-gram training text holds no rows of tokens.")
        if rows.min() < 0 or rows.max() >= vocab:
            raise UsageError(
                f"training token ids must lie in [0, {vocab}) (the model's vocabulary); found "
                f"ids {int(rows.min())}..{int(rows.max())}. Use the model's own tokenizer.")
        pad = max_order - 1
        sep, base = vocab, vocab + 2
        # SEP^pad r_1 SEP^pad r_2 ... r_R SEP^pad
        stream = np.concatenate([padded_rows(rows, pad, sep).reshape(-1),
                                 np.full(pad, sep, dtype=np.int64)])
        workdir = workdir or tempfile.gettempdir()
        index = _index_from_tokens(tokengrams, stream, vocab + 1, workdir)
        est: dict[str, dict[int, str]] = {"raw": {}, "cont": {}}
        disc: dict[str, dict[int, tuple[float, float, float]]] = {"raw": {}, "cont": {}}
        cont_index: dict[int, Any] = {}
        n_distinct: dict[int, int] = {}
        unigram = np.bincount(rows.reshape(-1), minlength=vocab).astype(np.int64)
        cont_unigram = np.zeros(vocab, dtype=np.int64)
        for k in range(1, max_order + 1):
            grams, counts = _distinct_grams(stream, k, base)
            n_distinct[k] = int(grams.shape[0])
            disc["raw"][k], est["raw"][k] = discounts_from_counts(counts)
            if k >= 2:  # continuation counts of order k - 1 from the distinct k-grams
                tails = grams[:, 1:]
                _, cont, codes, inv = _distinct_rows(tails, base)
                # A tail that begins with SEP (a row start) is preceded only by SEP, so its
                # N1+(. g) is always 1; such n-grams keep their raw count c(g), the sum of
                # the counts of the k-grams that end in them (as KenLM / SRILM do for
                # <s>-initial n-grams). Their discounts come from these adjusted counts.
                tail_sep = np.bincount(inv, weights=(tails[:, 0] == sep), minlength=cont.size) > 0
                if tail_sep.any():
                    raw_tail = np.bincount(inv, weights=counts, minlength=cont.size)
                    cont = np.where(tail_sep, np.rint(raw_tail), cont).astype(np.int64)
                disc["cont"][k - 1], est["cont"][k - 1] = discounts_from_counts(cont)
                if k - 1 == 1:
                    cont_unigram = np.bincount(grams[:, 1], minlength=vocab).astype(np.int64)
                elif codes is not None:  # the common case: sorted codes, searched in numpy
                    cont_index[k - 1] = SortedCounts(codes, cont, _bits(base))
                else:  # ids too wide to pack: a tokengrams index over the distinct tails
                    # (a SEP-initial k-gram entered once per occurrence: raw counts)
                    reps = np.where(tails[:, 0] == sep, counts, 1)
                    entries = np.concatenate(
                        [np.repeat(tails, reps, axis=0),
                         np.full((int(reps.sum()), 1), vocab + 1, dtype=np.int64)],
                        axis=1).reshape(-1)
                    cont_index[k - 1] = _index_from_tokens(tokengrams, entries, vocab + 2, workdir)
        for kind, by_order in (discounts or {}).items():
            for k, d in by_order.items():
                disc[kind][int(k)] = tuple(float(x) for x in d)
                est[kind][int(k)] = "given"
        return cls(vocab, max_order, int(rows.size), index, cont_index, unigram, cont_unigram,
                   disc, est, n_distinct)

    # -- counts for a batch of contexts -------------------------------------------------

    def raw_counts(self, contexts: list[list[int]], k: int) -> np.ndarray:
        """c(h w) for every w, for each context's last k - 1 tokens: (B, V); (1, V) for k = 1."""
        if k == 1:  # the same for every context: one row (kn_probs broadcasts it)
            return self.unigram[None]
        qs = [c[len(c) - (k - 1):] for c in contexts]
        return _as_array(self.index.batch_count_next(qs), self.vocab)

    def cont_counts(self, contexts: list[list[int]], k: int) -> np.ndarray:
        """N1+(. h w) for every w, for each context's last k - 1 tokens: (B, V); (1, V) for
        k = 1."""
        if k == 1:
            return self.cont_unigram[None]
        qs = [c[len(c) - (k - 1):] for c in contexts]
        table = self.cont_index[k]
        if isinstance(table, SortedCounts):
            return table.dense(np.asarray(qs, dtype=np.int64).reshape(len(qs), k - 1), self.vocab)
        return _as_array(table.batch_count_next(qs), self.vocab)

    def kn_probs(self, contexts: list[list[int]], orders: Sequence[int]) -> dict[int, np.ndarray]:
        """Interpolated modified-KN next-token distributions (B, V) for each order in
        ``orders``, sharing the continuation-count chain; each context holds at least
        ``max(orders) - 1`` tokens (SEP-padded at the row start).

        Each order is computed once per *distinct* (k-1)-token suffix in the batch (one
        ``batch_count_next`` call for all of them) and gathered back to the positions: low
        orders have few distinct contexts, so most of their work is shared.
        """
        top = max(orders)
        if top > self.max_order:
            raise ValueError(f"order {top} > max_order {self.max_order}")
        n = len(contexts)
        ctx = (np.asarray([c[len(c) - (top - 1):] for c in contexts], dtype=np.int64)
               if top > 1 else np.zeros((n, 0), dtype=np.int64))
        lower = np.full((1, self.vocab), 1.0 / self.vocab)  # per distinct suffix of order k-1
        inv_prev = np.zeros(n, dtype=np.int64)
        out: dict[int, np.ndarray] = {}
        for k in range(1, top + 1):
            if k == 1:
                first, inv, queries = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64), [[]]
            else:
                keys = ctx[:, top - k:]  # the last k - 1 tokens
                first, inv = _first_and_inverse(keys, self.vocab + 2)
                queries = keys[first].tolist()
            below = lower[inv_prev[first]]  # (U, V): the lower order of each distinct suffix
            if k in orders:
                p = interpolate(self.raw_counts(queries, k), self.discounts["raw"][k], below)
                out[k] = p[inv]
            if k < top:
                lower = interpolate(self.cont_counts(queries, k), self.discounts["cont"][k], below)
                inv_prev = inv
        return out

    def tokengrams_probs(self, contexts: list[list[int]], k: int) -> np.ndarray:
        """tokengrams' own smoothed order-k distributions (B, V), SEP column dropped and
        renormalised (see the module doc)."""
        qs = [c[len(c) - (k - 1):] if k > 1 else [] for c in contexts]
        p = np.asarray(self.index.batch_get_smoothed_probs(qs), dtype=np.float64)[:, :self.vocab]
        s = p.sum(axis=1, keepdims=True)
        return p / np.where(s > 0, s, 1.0)


def padded_rows(rows: np.ndarray, pad: int, sep: int) -> np.ndarray:
    """``rows`` with ``pad`` SEP tokens before each: the context of row position t is
    ``padded[:, t + 1 : t + 1 + pad]`` (the last ``pad`` tokens up to and including t)."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.concatenate([np.full((rows.shape[0], pad), sep, dtype=np.int64), rows], axis=1)
