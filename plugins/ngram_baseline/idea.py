"""The ngram-baseline idea class (no torch at import)."""

from __future__ import annotations

from typing import Any

from mi_ideas import Idea, IdeaResult, RunContext
from mi_ideas.contract import Headline, MemoryItem

from .config import NgramConfig


class NgramBaseline(Idea):
    """How much of a small story model is n-gram statistics?

    Fits n-gram models (n = 1..5) on the model's own training text with its own tokenizer
    and scores them on exactly the held-out positions the model is scored on. Two smoothings,
    each reported under its own name: interpolated modified Kneser-Ney with continuation
    counts (Chen & Goodman; ``ngram_N.loss``), computed here from tokengrams' counts, and
    tokengrams' own interpolated absolute discounting (``ngram_N.loss_tokengrams``). Per n:
    held-out loss against ``model.loss``, top-1 agreement, KL(model || n-gram), the paired
    loss difference with a bootstrap interval over held-out stories; the fraction of positions
    where the model is within ``near_nats`` of the best n-gram; by position in the context
    and by token type (the zoo's concept labels); and, across training checkpoints (the
    zoo's by default), when the model first beats each n.

    Default data: ``zoo-corpus:stories-gpt2``, the zoo model's training stories and
    held-out stories rebuilt from its manifest and packed as ``mi_ideas.zoo.build.train``
    packs them. ``--data text:PATH`` (or ``hf:...``) splits any corpus by texts instead.
    Source: a comment on TinyStories models ("I am worried that those models simply
    implement a bunch of bigrams and trigrams").
    """

    name = "ngram-baseline"
    summary = "n-gram (modified Kneser-Ney, n = 1..5) baselines on the model's own held-out positions."
    size = "short"
    Config = NgramConfig
    Result = IdeaResult
    uses_model = True
    uses_data = True
    default_data = "zoo-corpus:stories-gpt2"
    presets = {"quick": {"n_eval_rows": 32, "tokengrams_rows": 0, "checkpoints": []}}
    # The model's log-probabilities would fit nnsight's remote path (one forward per batch of
    # rows), but every scored position needs the full distribution (KL, top-1), so a remote
    # run downloads vocabulary-sized logits; not wired (and not tested) yet.
    remote = False

    def run(self, ctx: RunContext, config: NgramConfig) -> IdeaResult:
        from .run import run

        return run(ctx, config)

    @classmethod
    def check(cls, config: NgramConfig, subject: Any = None, **inputs: Any) -> None:
        """tokengrams must import (a run without it is refused before its directory exists)."""
        from .kn import import_tokengrams

        import_tokengrams()

    @classmethod
    def estimate_memory(cls, config: NgramConfig, subject: Any = None,
                        dataset: Any = None) -> list[MemoryItem] | None:
        """The suffix-array indices and n-gram codes grow with the training text; the
        per-batch distributions with batch_rows x context_length x vocab."""
        if dataset is None:
            return None
        # BPE on English stories: ~4 characters a token; 3.5 over-counts tokens (safe side)
        n_tok = sum(len(t) for t in dataset.texts) / 3.5
        if config.max_train_rows:
            n_tok = min(n_tok, config.max_train_rows * (config.context_length or 128))
        vocab = subject.d_vocab if subject is not None else 50_257
        return memory_items(int(n_tok), vocab, config)

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        return [
            Headline("model.loss", "ngram_3.loss", "model vs trigram (KN) loss"),
            Headline("ngram_3.model_minus_ngram", None, "model - trigram, paired"),
            Headline("model.loss", "best_ngram.loss", "model vs best n-gram per position"),
            Headline("explained_by_ngrams.fraction", None, "positions explained by n-grams"),
            Headline("ngram_3.kl", None, "KL(model || trigram)"),
        ]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        m = result.metrics
        orders = result.details.get("orders", [])
        if "model.loss" not in m or not orders:
            return ""
        n = 3 if 3 in orders else orders[-1]
        d, lo, hi = (m[f"ngram_{n}.model_minus_ngram{s}"] for s in ("", "_ci_low", "_ci_high"))
        if hi < 0:
            verdict = f"beats the {n}-gram by {-d:.3f} nats/token (95% CI {-hi:.3f} to {-lo:.3f})"
        elif lo > 0:
            verdict = f"is worse than the {n}-gram by {d:.3f} nats/token (95% CI {lo:.3f} to {hi:.3f})"
        else:
            verdict = f"does not differ from the {n}-gram (difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})"
        best = int(m["best_order"])
        eps = result.details.get("near_nats", 0.1)
        return (f"The model's held-out loss is {m['model.loss']:.3f} nats/token; it {verdict}. "
                f"The best n-gram is n = {best} ({m[f'ngram_{best}.loss']:.3f}); at "
                f"{100 * m['explained_by_ngrams.fraction']:.0f}% of positions the model is "
                f"within {eps:g} nats of the best n-gram there, at "
                f"{100 * m['beyond_ngrams.fraction']:.0f}% more than {eps:g} nats better.")


def memory_items(n_tokens: int, vocab: int, config: NgramConfig) -> list[MemoryItem]:
    """Peak allocations of a run counting ``n_tokens`` training tokens (benchmarks/ngram.py
    checks the measured peak RSS against this)."""
    top = max(config.orders)
    b = config.batch_rows * (config.context_length or 128)
    return [
        # stream tokens (u16) + suffix table (u64) of the training stream (SEP-padded: +3%)
        MemoryItem("tokengrams index", int(n_tokens * 10.5), ("max_train_rows",)),
        # continuation counts kept as sorted int64 codes + counts, at most one per training
        # position per order 2..top-1 (every n-gram distinct: the worst case)
        MemoryItem("continuation counts", int(n_tokens * 16 * max(0, top - 2)), ("max_train_rows",)),
        # while counting one order: the int64 stream, window codes, their sorted copy, the
        # unique codes and counts, the unpacked distinct n-grams (measured: 2.9 GiB peak for
        # 61M tokens, benchmarks/ngram.py; this gives 6.7 GiB)
        MemoryItem("n-gram counting", int(n_tokens * 8 * (2 + top)), ("max_train_rows",)),
        MemoryItem("batched distributions", int(b * vocab * 8 * (len(config.orders) + 6)),
                   ("batch_rows", "context_length")),
    ]
