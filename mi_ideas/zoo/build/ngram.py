"""Unigram / bigram baselines for the zoo model, evaluated on the model's own positions.

Every function takes *rows* of token ids (``[n_rows, n_ctx]`` integer arrays,
the packed rows the language model is trained / evaluated on) and scores the
same (previous token, next token) pairs the model predicts: position ``t`` of
a row predicts position ``t + 1``; rows are independent (no bigram crosses a
row boundary).  Losses are mean negative log-likelihoods in nats.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bigram_pairs", "ngram_losses"]


def bigram_pairs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous, next) token ids of every predicted position in ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows[:, :-1].reshape(-1), rows[:, 1:].reshape(-1)


def ngram_losses(train_rows: np.ndarray, eval_rows: np.ndarray, vocab_size: int,
                 discount: float = 0.75) -> dict[str, float]:
    """Held-out losses of n-gram models fitted on ``train_rows``.

    * ``unigram_add_one``: P(w) = (c(w) + 1) / (N + V)
    * ``bigram_add_one``: P(w | v) = (c(v, w) + 1) / (c(v) + V)   (Laplace)
    * ``bigram_kneser_ney``: interpolated Kneser-Ney with absolute discount
      ``discount``; the continuation distribution is itself add-one smoothed,
      P_cont(w) = (N1+(. w) + 1) / (N1+(. .) + V), so unseen words keep mass.

    Counts are over the predicted positions of ``train_rows`` (targets are the
    tokens at positions 1..n_ctx-1, contexts the tokens before them).
    """
    V = int(vocab_size)
    tp, tn = bigram_pairs(train_rows)
    ep, en = bigram_pairs(eval_rows)
    N = tn.size

    uni = np.bincount(tn, minlength=V).astype(np.float64)
    p_uni = (uni + 1.0) / (N + V)
    unigram = float(-np.log(p_uni[en]).mean())

    big = np.zeros((V, V), dtype=np.float64)
    np.add.at(big, (tp, tn), 1.0)
    ctx = big.sum(axis=1)
    p_add1 = (big[ep, en] + 1.0) / (ctx[ep] + V)
    bigram_add_one = float(-np.log(p_add1).mean())

    seen = big > 0
    n1_follow = seen.sum(axis=1).astype(np.float64)  # distinct successors of v
    n1_precede = seen.sum(axis=0).astype(np.float64)  # distinct predecessors of w
    p_cont = (n1_precede + 1.0) / (n1_precede.sum() + V)
    c_vw = big[ep, en]
    c_v = ctx[ep]
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = np.where(c_v > 0, np.maximum(c_vw - discount, 0.0) / np.maximum(c_v, 1.0), 0.0)
        lam = np.where(c_v > 0, discount * n1_follow[ep] / np.maximum(c_v, 1.0), 1.0)
    p_kn = disc + lam * p_cont[en]
    bigram_kn = float(-np.log(p_kn).mean())

    return {
        "unigram_add_one": unigram,
        "bigram_add_one": bigram_add_one,
        "bigram_kneser_ney": bigram_kn,
        "n_train_positions": int(N),
        "n_eval_positions": int(en.size),
    }
