"""Every metric of ngram-baseline with its definition (no torch)."""

from __future__ import annotations

_POS = ("over the scored held-out positions (every position t = 0..n_ctx-2 of the first "
        "n_eval_rows held-out rows predicts token t+1; the same positions for the model and "
        "every n-gram)")
_KN = ("interpolated modified Kneser-Ney (Chen & Goodman: raw counts at order {n}, "
       "continuation counts N1+(. h w) below except for n-grams beginning with the row "
       "separator, which keep raw counts as in KenLM, discounts D1, D2, D3+ per order from "
       "count-of-counts, uniform at order 0), fitted on the training rows")
_CI = ("95% percentile cluster bootstrap over held-out stories (the resampled unit is a "
       "story: every scored position whose target token belongs to it, across the two rows "
       "a story cut at a row end spans; the statistic is the pooled per-position mean), "
       "paired by position")

DEFINITIONS: dict[str, str] = {
    "model.loss": "mean next-token cross-entropy (nats/token) of the model " + _POS,
    "n_heldout_positions": "number of scored held-out positions (n_eval_rows x (n_ctx - 1))",
    "n_heldout_rows": "number of scored held-out rows (n_eval_rows, or fewer if there are "
        "fewer)",
    "n_heldout_stories": "number of held-out stories (texts) the scored positions belong "
        "to: the clusters (independent units) of the bootstrap intervals",
    "n_train_tokens": "tokens of the training rows the n-grams are counted on",
    "fit_seconds": "wall time (s) to index the training rows with tokengrams and count "
                   "continuation counts and count-of-counts for every order",
    "ngram_N.loss": "mean cross-entropy (nats/token) of the {n}-gram model, " + _KN + ", " + _POS,
    "ngram_N.loss_tokengrams": "mean cross-entropy (nats/token) of tokengrams' own "
        "smoothed {n}-gram distribution (batch_get_smoothed_probs with the last {n}-1 tokens: "
        "interpolated absolute discounting on raw lower-order counts, tokengrams' default "
        "deltas; NOT Kneser-Ney), row-separator column dropped and renormalised, over the "
        "positions of the first {rows} scored rows; inf if it gives a target probability 0",
    "ngram_N.loss_kn_tokengrams_rows": "ngram_{n}.loss (modified KN) over the same positions "
        "as ngram_{n}.loss_tokengrams (the first {rows} scored rows), to compare the two "
        "smoothings",
    "ngram_N.tokengrams_zero_fraction": "fraction of the positions of ngram_{n}.loss_tokengrams "
        "(first {rows} scored rows) where tokengrams' {n}-gram distribution gives the target "
        "probability 0 (a token unseen in training)",
    "ngram_N.top1_agreement": "fraction of scored positions where the model's most likely "
        "next token equals the modified-KN {n}-gram's most likely next token",
    "ngram_N.kl": "mean KL(model || {n}-gram) = sum_w q(w) (log q(w) - log p_{n}(w)) in nats, "
        "q the model's next-token distribution, p_{n} the modified-KN {n}-gram's, " + _POS,
    "ngram_N.model_minus_ngram": "model.loss - ngram_{n}.loss (nats/token; negative: the "
        "model beats the {n}-gram), the mean paired per-position difference",
    "ngram_N.model_minus_ngram_ci_low": "lower end of the " + _CI + " interval of "
        "ngram_{n}.model_minus_ngram",
    "ngram_N.model_minus_ngram_ci_high": "upper end of the " + _CI + " interval of "
        "ngram_{n}.model_minus_ngram",
    "best_ngram.loss": "mean over scored positions of the lowest cross-entropy any of the "
        "fitted modified-KN n-grams gives at that position (a per-position oracle over n)",
    "explained_by_ngrams.fraction": "fraction of scored positions where |model loss - best "
        "n-gram loss| <= {eps} nats (best = the lowest-loss n-gram at that position): the "
        "model does no better and no worse than n-gram statistics there",
    "beyond_ngrams.fraction": "fraction of scored positions where the model's loss is more "
        "than {eps} nats below every fitted n-gram's",
    "below_ngrams.fraction": "fraction of scored positions where the model's loss is more "
        "than {eps} nats above the best n-gram's (the three fractions sum to 1)",
    "best_order": "the order n whose modified-KN model has the lowest ngram_N.loss",
    "checkpoint_I.loss": "mean cross-entropy (nats/token) of checkpoint {label} (step "
        "{step:g}) " + _POS,
    "checkpoint_I.step": "training step of checkpoint {label} (its order in the list when "
        "steps are unknown)",
    "ngram_N.beaten_at_step": "step of the first checkpoint whose loss is below "
        "ngram_{n}.loss with the whole " + _CI + " interval of the difference below 0; NaN "
        "if none is",
    "ngram_N.beaten_at_tokens": "training tokens seen at ngram_{n}.beaten_at_step (NaN when "
        "unknown or never beaten)",
}


def definition(key: str, **fmt) -> str:
    """The definition of metric family ``key`` with its placeholders filled."""
    return DEFINITIONS[key].format(**fmt) if fmt else DEFINITIONS[key]
