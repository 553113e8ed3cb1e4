"""ngram-baseline (skeleton; being built)."""

from mi_ideas.hookspecs import hookimpl

IDEAS: list = []


@hookimpl
def mi_ideas_register_ideas(register):
    for idea in IDEAS:
        register(idea)
