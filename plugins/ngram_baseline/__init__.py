"""ngram-baseline: n-gram (modified Kneser-Ney) baselines on the model's own held-out positions.

``idea.py`` (the Idea), ``config.py``, ``definitions.py`` (every metric's definition),
``corpus.py`` (the zoo's training / held-out rows, or a dataset split by texts; the
``zoo-corpus:`` data spec), ``kn.py`` (tokengrams counts and batched modified Kneser-Ney),
``reference.py`` (a plain dict implementation of the same KN, for tests and benchmarks),
``stats.py``, ``run.py`` and ``figures.py``.
"""

from mi_ideas.hookspecs import hookimpl

from .idea import NgramBaseline

IDEAS: list = [NgramBaseline]


@hookimpl
def mi_ideas_register_ideas(register):
    for idea in IDEAS:
        register(idea)


@hookimpl
def mi_ideas_register_datasets(register):
    from .corpus import load_zoo_corpus

    register("zoo-corpus", load_zoo_corpus,
             "the training and held-out stories of a zoo model, labelled split=train/heldout: "
             "zoo-corpus:stories-gpt2[:N] (N: only the first N training stories; or "
             "zoo-corpus:DIR for a zoo directory)")
