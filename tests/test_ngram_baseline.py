"""ngram-baseline ground truth: modified Kneser-Ney by hand, two implementations agreeing,
known unigram and bigram processes, and the missing-tokengrams error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mi_ideas.errors import UsageError
from mi_ideas_plugins.ngram_baseline.kn import (
    NgramCounts, SortedCounts, discounts_from_counts, padded_rows)
from mi_ideas_plugins.ngram_baseline.reference import DictKN

A, B, C = 0, 1, 2  # a three-token vocabulary; the row separator is SEP = 3


def test_discounts_follow_chen_goodman():
    # count-of-counts n1=10, n2=5, n3=3, n4=2 (and two n-grams seen 7 times, which only
    # count as 3+): Y = 10 / (10 + 2*5) = 0.5,
    # D1 = 1 - 2 Y n2/n1 = 1 - 0.5 = 0.5; D2 = 2 - 3 Y n3/n2 = 2 - 0.9 = 1.1;
    # D3+ = 3 - 4 Y n4/n3 = 3 - 4/3 = 1.6667
    counts = [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [7] * 2
    (d1, d2, d3), how = discounts_from_counts(np.array(counts))
    assert how == "modified"
    assert (d1, d2, d3) == pytest.approx((0.5, 1.1, 5 / 3))
    # a missing count class (no n-gram seen 4 times) cannot give D3+: Ney's single
    # discount Y = n1 / (n1 + 2 n2) = 2 / (2 + 2) for every count
    assert discounts_from_counts(np.array([1, 1, 2, 3])) == ((0.5,) * 3, "single")
    # n1=10, n2=5, n3=20, n4=2: D2 = 2 - 3 * 0.5 * 20/5 = -4 is no discount: single Y too
    bad = [1] * 10 + [2] * 5 + [3] * 20 + [4] * 2
    assert discounts_from_counts(np.array(bad)) == ((0.5,) * 3, "single")
    # no n-gram seen once (a small grammar's counts are all large): the textbook 0.75
    assert discounts_from_counts(np.array([5, 9, 12])) == ((0.75,) * 3, "fallback")


def test_modified_kn_matches_a_hand_computation():
    """Rows ``a b a b`` and ``a b c a``; discounts fixed so every number is written out.

    Padded with two separators S (max order 3): S S a b a b / S S a b c a.
    Raw counts: unigrams a 4, b 3, c 1 (N = 8); trigrams (S,a,b) 2, ...
    Continuation counts: order 1 from the distinct bigrams (S,a) (a,b) (b,a) (b,c) (c,a):
    N1+(.a) = 3 (S, b, c), N1+(.b) = 1, N1+(.c) = 1 (total 5); order 2 from the distinct
    trigrams: N1+(. a b) = 2 (S and b precede "a b"), while the raw count c(a b) is 3.
    """
    rows = np.array([[A, B, A, B], [A, B, C, A]])
    # D2 / 2 != D3+ / 3 at order 2, so using raw counts there (c(a b) = 3) would change p
    d_raw, d_c2, d_c1 = (0.5, 1.0, 1.5), (0.3, 0.8, 0.9), (0.5, 1.0, 1.5)
    counts = NgramCounts.fit(rows, vocab=3, max_order=3, discounts={
        "raw": {1: d_raw, 2: d_raw, 3: d_raw}, "cont": {1: d_c1, 2: d_c2}})
    assert counts.unigram.tolist() == [4, 3, 1]
    assert counts.cont_unigram.tolist() == [3, 1, 1]

    # order-1 continuation distribution (lower order of every n >= 2):
    # D(3) = 1.5, D(1) = 0.5, 0.5; gamma = 2.5 / 5 = 0.5; uniform 1/3
    p1 = np.array([(3 - 1.5) / 5 + 0.5 / 3, (1 - 0.5) / 5 + 0.5 / 3, (1 - 0.5) / 5 + 0.5 / 3])
    assert p1 == pytest.approx([0.466667, 0.266667, 0.266667], abs=1e-6)
    # order-2 continuation distribution after "a": N1+(. a b) = 2, D2 = 0.8,
    # gamma = 0.8 / 2 = 0.4  ->  a: 0.4 p1(a), b: (2 - 0.8)/2 + 0.4 p1(b), c: 0.4 p1(c)
    # (raw counts would give c(a b) = 3, D3+ = 0.9: b: 2.1/3 + 0.3 p1(b) = 0.78 instead)
    p2c_a = np.array([0.4 * p1[0], 1.2 / 2 + 0.4 * p1[1], 0.4 * p1[2]])
    assert p2c_a == pytest.approx([0.186667, 0.706667, 0.106667], abs=1e-6)
    # trigram after (S, a) (row position 0 of a row starting with a): c(S a b) = 2,
    # D2 = 1.0, gamma = 1.0 / 2 = 0.5  ->  0.5 p2c(a|a), 0.5 + 0.5 p2c(b|a), 0.5 p2c(c|a)
    p3_sa = np.array([0.5 * p2c_a[0], 0.5 + 0.5 * p2c_a[1], 0.5 * p2c_a[2]])
    assert p3_sa == pytest.approx([0.093333, 0.853333, 0.053333], abs=1e-6)
    # bigram after a (raw counts at the top): c(a b) = 3, D3+ = 1.5, gamma = 0.5
    p2_a = np.array([0.5 * p1[0], (3 - 1.5) / 3 + 0.5 * p1[1], 0.5 * p1[2]])
    # bigram after b: c(b a) = c(b c) = 1, D1 = 0.5 each, gamma = 1.0 / 2
    p2_b = np.array([0.5 / 2 + 0.5 * p1[0], 0.5 * p1[1], 0.5 / 2 + 0.5 * p1[2]])
    # unigram (raw counts at the top): D = 1.5, 1.5, 0.5; gamma = 3.5 / 8
    p1_raw = np.array([2.5 / 8, 1.5 / 8, 0.5 / 8]) + 3.5 / 8 / 3

    padded = padded_rows(np.array([[A, B, C]]), 2, counts.sep)
    ctx_t0, ctx_t1 = padded[0, 1:3].tolist(), padded[0, 2:4].tolist()  # (S, a) and (a, b)
    assert ctx_t0 == [counts.sep, A] and ctx_t1 == [A, B]
    out = counts.kn_probs([ctx_t0, ctx_t1], orders=[1, 2, 3])
    assert out[3][0] == pytest.approx(p3_sa, abs=1e-12)
    assert out[2][0] == pytest.approx(p2_a, abs=1e-12)
    assert out[2][1] == pytest.approx(p2_b, abs=1e-12)
    assert out[1][0] == pytest.approx(p1_raw, abs=1e-12)
    # the trigram after (a, b): c(a b a) = c(a b c) = 1 over the continuation bigram after b
    p2c_b = np.array([0.7 / 2 + 0.3 * p1[0], 0.3 * p1[1], 0.7 / 2 + 0.3 * p1[2]])
    assert out[3][1] == pytest.approx([0.25 + 0.5 * p2c_b[0], 0.5 * p2c_b[1],
                                       0.25 + 0.5 * p2c_b[2]], abs=1e-12)
    for dist in out.values():
        assert dist.sum(axis=1) == pytest.approx(1.0, abs=1e-12)

    # a lower-order n-gram that begins with the separator keeps its RAW count (only S can
    # precede a row start, so N1+(. S a) = 1 would say nothing; KenLM / SRILM do the same
    # for <s>-initial n-grams). The trigram after (S, S) (the row's first token):
    # c(S S a) = 2, D2 = 1.0, gamma = 0.5, over the order-2 distribution after S, which
    # uses c(S a) = 2 (D2 = 0.8, gamma = 0.4), not N1+(. S a) = 1 (D1 = 0.3: a 0.7 + 0.3 p1)
    p2c_s = np.array([1.2 / 2 + 0.4 * p1[0], 0.4 * p1[1], 0.4 * p1[2]])
    p3_ss = np.array([0.5 + 0.5 * p2c_s[0], 0.5 * p2c_s[1], 0.5 * p2c_s[2]])
    assert p3_ss == pytest.approx([0.893333, 0.053333, 0.053333], abs=1e-6)
    ss = counts.kn_probs([[counts.sep, counts.sep]], orders=[3])[3][0]
    assert ss == pytest.approx(p3_ss, abs=1e-12)


def test_batched_kn_equals_dict_reference_and_sums_to_one():
    """The tokengrams-batched KN and the independent dict implementation give the same
    full-vocabulary distributions (estimated discounts), each summing to 1."""
    rng = np.random.default_rng(0)
    V = 40
    rows = rng.integers(0, V, size=(200, 24))
    rows[:, 1::2] = (rows[:, ::2] * 7 + 3) % V  # some structure: even -> odd positions
    counts = NgramCounts.fit(rows, V, 4)
    ref = DictKN(rows, V, 4)
    assert counts.discounts == {k: {o: pytest.approx(d) for o, d in v.items()}
                                for k, v in ref.discounts.items()}
    held = rng.integers(0, V, size=(6, 24))
    padded = padded_rows(held, 3, counts.sep)
    ctxs = [padded[i, t + 1:t + 4].tolist() for i in range(6) for t in range(23)]
    out = counts.kn_probs(ctxs, [1, 2, 3, 4])
    for n in (1, 2, 3, 4):
        want = np.stack([ref.probs(c, n) for c in ctxs])
        assert np.abs(out[n] - want).max() < 1e-12, n
        assert np.abs(out[n].sum(1) - 1).max() < 1e-12
        assert (out[n] > 0).all()  # the uniform order 0 leaves no zero
    tg = counts.tokengrams_probs(ctxs, 3)
    assert np.abs(tg.sum(1) - 1).max() < 1e-9


def _losses(counts, held, orders):
    """Per-position NLL (rows, positions) of each order on ``held``."""
    top = max(orders)
    padded = padded_rows(held, top - 1, counts.sep)
    R, P = held.shape[0], held.shape[1] - 1
    out = {n: np.zeros((R, P)) for n in orders}
    for r in range(0, R, 8):  # 8 rows of contexts per batched call
        rows = range(r, min(R, r + 8))
        ctxs = [padded[i, t + 1:t + top].tolist() for i in rows for t in range(P)]
        probs = counts.kn_probs(ctxs, orders)
        tgt = held[r:r + len(rows), 1:].reshape(-1)
        for n in orders:
            out[n][r:r + len(rows)] = -np.log(probs[n][np.arange(tgt.size), tgt]).reshape(-1, P)
    return out


def _zoo_vocab() -> int:
    from mi_ideas import zoo

    return int(zoo.entry("stories-gpt2")["d_vocab"])


def test_bigram_process_entropy_rate():
    """Text from a known Markov chain over the zoo tokenizer's tokens.

    Each token has 6 successors with Dirichlet(1) probabilities; rows start in the
    stationary distribution, so every position's expected loss under the true process is
    the entropy rate H = sum_i pi_i H(P_i) (1.444 nats here). Tolerance: 3% of H. With
    8,000 training rows (1M transitions, ~8k free parameters) the bigram's estimation and
    smoothing overhead is about 0.5-1% (measured: 1.453 against H = 1.444, +0.6%; modified
    KN moves D3+ ~ 1.8 of every context's count mass to the lower order), and the mean over 40 held-out
    rows (5,080 positions) has a standard error of about 0.9% of H; 3% leaves room for
    both. A trigram can only add variance here (the process has no second-order
    structure): it must not beat the bigram by more than 3 standard errors of the paired
    per-row difference (noise), and must not be far worse either (its smoothing backs off).
    """
    V = _zoo_vocab()
    rng = np.random.default_rng(1)
    K = 6
    succ = np.stack([rng.choice(V, K, replace=False) for _ in range(V)])
    prob = rng.dirichlet(np.ones(K), size=V)
    P = np.zeros((V, V))
    np.put_along_axis(P, succ, prob, axis=1)
    pi = np.full(V, 1 / V)
    for _ in range(300):
        pi = pi @ P
    pi /= pi.sum()
    h_rows = -(prob * np.log(prob)).sum(1)
    H = float(pi @ h_rows)
    cdf = np.cumsum(prob, axis=1)

    def sample(n_rows, T=128):
        x = np.zeros((n_rows, T), dtype=np.int64)
        x[:, 0] = rng.choice(V, n_rows, p=pi)
        for t in range(1, T):
            u = rng.random(n_rows)[:, None]
            j = np.minimum((cdf[x[:, t - 1]] < u).sum(1), K - 1)
            x[:, t] = succ[x[:, t - 1], j]
        return x

    train, held = sample(8000), sample(40)
    counts = NgramCounts.fit(train, V, 3)
    loss = _losses(counts, held, [1, 2, 3])
    true = -np.log(P[held[:, :-1], held[:, 1:]])
    bigram = loss[2].mean()
    assert abs(bigram - H) / H < 0.03, (bigram, H)
    d_true = (loss[2] - true).mean(1)  # paired per row: estimate minus truth
    assert d_true.mean() > -3 * d_true.std(ddof=1) / np.sqrt(d_true.size)
    d = (loss[3] - loss[2]).mean(1)
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert d.mean() > -3 * se, (d.mean(), se)
    assert d.mean() < 0.05 * H
    # the unigram model sees only pi: its loss is near H(pi), far above the entropy rate
    assert loss[1].mean() > H + 1.0


def test_unigram_process_entropy():
    """i.i.d. tokens from a known Zipf-like distribution p: the unigram model's held-out
    loss is within 2% of H(p), and a bigram does not beat it beyond noise (3 SE)."""
    V = _zoo_vocab()
    rng = np.random.default_rng(2)
    p = 1.0 / np.arange(1, V + 1) ** 1.1
    p /= p.sum()
    H = float(-(p * np.log(p)).sum())
    train = rng.choice(V, size=(3000, 64), p=p)
    held = rng.choice(V, size=(64, 64), p=p)
    counts = NgramCounts.fit(train, V, 2)
    loss = _losses(counts, held, [1, 2])
    assert abs(loss[1].mean() - H) / H < 0.02, (loss[1].mean(), H)
    d = (loss[2] - loss[1]).mean(1)
    assert d.mean() > -3 * d.std(ddof=1) / np.sqrt(d.size)


def test_missing_tokengrams_is_a_usage_error(monkeypatch, tmp_path):
    """Where tokengrams cannot be imported (no wheel for CPython >= 3.12) the idea refuses
    with an error that names the package, the Python versions and the fix."""
    monkeypatch.setitem(sys.modules, "tokengrams", None)  # import raises ImportError
    with pytest.raises(UsageError) as err:
        NgramCounts.fit(np.array([[0, 1, 2]]), 3, 2)
    msg = str(err.value)
    assert "tokengrams" in msg and "3.10" in msg and "3.11" in msg and "pip install" in msg
    # the idea refuses before its run starts (a usage error, not a failed run): its check,
    # which the host calls before the run directory exists
    import mi_ideas

    with pytest.raises(UsageError, match="tokengrams"):
        mi_ideas.run("ngram-baseline", quiet=True, out=tmp_path, data="zoo-corpus:stories-gpt2:40")
    assert not any(tmp_path.iterdir())


def test_token_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(UsageError, match="vocabulary"):
        NgramCounts.fit(np.array([[0, 1, 5]]), 3, 2)


def test_wide_vocabulary_path_equals_dict_reference():
    """With a vocabulary too wide to pack 4 ids into 62 bits (16 bits each), orders 4 and 5
    go through the fallback paths (row sort; a tokengrams index over the distinct tails for
    continuation counts); the distributions must still equal the dict implementation's."""
    rng = np.random.default_rng(3)
    V = 65_000
    ids = rng.choice(V, 30, replace=False)  # few distinct tokens, spread over the range
    which = rng.integers(0, 30, size=(60, 16))
    which[:, 1::2] = (which[:, ::2] * 7 + 3) % 30  # some structure: even -> odd positions
    rows = ids[which]
    counts = NgramCounts.fit(rows, V, 5)
    assert any(not isinstance(t, SortedCounts) for t in counts.cont_index.values())
    ref = DictKN(rows, V, 5)
    held = ids[rng.integers(0, 30, size=(2, 16))]
    padded = padded_rows(held, 4, counts.sep)
    ctxs = [padded[i, t + 1:t + 5].tolist() for i in range(2) for t in range(0, 15, 3)]
    out = counts.kn_probs(ctxs, [2, 5])
    for n in (2, 5):
        want = np.stack([ref.probs(c, n) for c in ctxs])
        assert np.abs(out[n] - want).max() < 1e-12
        assert np.abs(out[n].sum(1) - 1).max() < 1e-12


class _NgramSubject:
    """A toy 'model' whose next-token distribution at every position IS the modified-KN
    trigram fitted on the same counts (mix = 0), or a known mixture of it (``planted``). It
    builds its own contexts from the rows it is given
    (SEP, SEP, row[0..t]) -- independently of the idea's padding -- so a shifted
    position, context or target in the idea's scoring shows up as KL > 0 at mix = 0."""

    def __init__(self, counts, mix: float = 0.0):
        self.counts, self.mix = counts, mix

    @staticmethod
    def planted(p, mix):
        """q = (1 - mix) p + mix * (all mass on the trigram's least likely token)."""
        spike = np.zeros_like(p)
        spike[np.arange(p.shape[0]), p.argmin(1)] = 1.0
        return (1 - mix) * p + mix * spike

    def forward(self, x, logits=True):
        import types

        import torch

        x = x.numpy()
        b, T = x.shape
        sep = self.counts.sep
        ctxs = [([sep, sep] + x[i, :t + 1].tolist())[-2:] for i in range(b) for t in range(T)]
        p = self.counts.kn_probs(ctxs, [3])[3]
        q = self.planted(p, self.mix)
        with np.errstate(divide="ignore"):
            out = torch.as_tensor(np.log(q).reshape(b, T, -1) + 5.0)  # logits: any offset
        return types.SimpleNamespace(logits=out)


def _planted_counts():
    rng = np.random.default_rng(7)
    V = 12
    rows = rng.integers(0, V, size=(120, 20))
    rows[:, 1::2] = (rows[:, ::2] * 5 + 1) % V  # structure the trigram can use
    held = rng.integers(0, V, size=(6, 20))
    held[:, 1::2] = (held[:, ::2] * 5 + 1) % V
    held[:, 0] = 0  # every row starts with "eot" (0), as packed rows do
    return NgramCounts.fit(rows, V, 3), held


def test_a_model_that_is_the_trigram_is_explained_by_it():
    """Planted: the model's log-probabilities ARE the KN trigram's (same counts). Then
    ngram_3.kl = 0, top-1 agreement = 1, every position is explained by the trigram
    (model - best n-gram = 0 everywhere), and the cluster-bootstrap interval of
    model - trigram contains 0; a unigram scored alongside is far from the model (KL > 0.1),
    so the orders are not mixed up."""
    from mi_ideas_plugins.ngram_baseline.run import position_fractions, score_rows
    from mi_ideas_plugins.ngram_baseline.stats import paired_cluster_ci, story_clusters

    counts, held = _planted_counts()
    sc = score_rows(_NgramSubject(counts), held, counts, [1, 3], batch_rows=4)
    assert np.abs(sc["kl"][3]).max() < 1e-9
    assert sc["agree"][3].all()
    assert np.abs(sc["nll_model"] - sc["nll"][3]).max() < 1e-9
    assert sc["kl"][1].mean() > 0.1 and sc["agree"][1].mean() < 1
    fr = position_fractions(sc["nll_model"], {3: sc["nll"][3]}, 0.1)
    assert fr["explained"] == 1.0 and fr["beyond"] == 0.0 and fr["below"] == 0.0
    labels = np.where(held == 0, 0, 1)  # token 0 plays <|endoftext|>
    clusters = story_clusters(held, labels)
    d, lo, hi = paired_cluster_ci(sc["nll_model"] - sc["nll"][3], clusters,
                                  np.random.default_rng(0), 200)
    assert lo <= 1e-12 and hi >= -1e-12 and abs(d) < 1e-9  # [0, 0] up to rounding


def test_kl_is_model_to_ngram():
    """KL's direction: the model is q = 0.5 p_3 + 0.5 (a spike on the trigram's least likely
    token). ngram_3.kl must be KL(q || p_3) = sum q log(q / p_3) (scipy.stats.entropy(q,
    p_3), computed here from the planted q); KL(q || p_3) >= 0.5 log(0.5 / min p_3) while
    KL(p_3 || q) <= log 2, so the two differ by far more than 0.1 nats and a reversed KL
    fails."""
    from scipy.stats import entropy

    from mi_ideas_plugins.ngram_baseline.run import score_rows

    counts, held = _planted_counts()
    sc = score_rows(_NgramSubject(counts, mix=0.5), held, counts, [3], batch_rows=6)
    padded = padded_rows(held, 2, counts.sep)
    ctxs = [padded[i, t + 1:t + 3].tolist() for i in range(held.shape[0]) for t in range(19)]
    p = counts.kn_probs(ctxs, [3])[3]
    q = _NgramSubject.planted(p, 0.5)
    forward = entropy(q.T, p.T).reshape(held.shape[0], 19)
    reverse = entropy(p.T, q.T).reshape(held.shape[0], 19)
    assert forward.mean() - reverse.mean() > 0.1
    assert np.abs(sc["kl"][3] - forward).max() < 1e-9
    # and the target of position t is token t + 1, for the model and the n-gram alike
    tgt = held[:, 1:].reshape(-1)
    ar = np.arange(tgt.size)
    assert np.abs(sc["nll_model"].reshape(-1) + np.log(q[ar, tgt])).max() < 1e-9
    assert np.abs(sc["nll"][3].reshape(-1) + np.log(p[ar, tgt])).max() < 1e-9


def test_story_clusters_follow_the_packing():
    """Rows packed as pack_rows packs them (E = <|endoftext|>): a story cut at a row's end is
    repeated whole at the next row's start, and those positions are one cluster; a row that
    ends on E starts the next row with a new story. Position t belongs to token t+1's story
    (an E ends the story before it)."""
    from mi_ideas_plugins.ngram_baseline.stats import paired_cluster_ci, story_clusters

    E = 9
    rows = np.array([[E, 1, 2, E, 3, 4],      # story A = 1 2; story B = 3 4 5 cut
                     [E, 3, 4, 5, E, 6],      # B again whole, then C = 6 7 cut
                     [E, 6, 7, E, 1, E]])     # C whole, D = 1, ends on E
    got = story_clusters(rows, (rows == E).astype(int) * 0 + (rows != E))
    # positions 0..4 predict tokens 1..5 of each row
    assert got.tolist() == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 2], [2, 2, 2, 3, 3]]
    # a cluster bootstrap of a per-cluster constant: the interval spans the cluster values
    diff = np.array([0.0, 1.0, 2.0, 3.0])[got]
    d, lo, hi = paired_cluster_ci(diff, got, np.random.default_rng(0), 500)
    assert d == pytest.approx(diff.mean()) and 0 <= lo < d < hi <= 3
