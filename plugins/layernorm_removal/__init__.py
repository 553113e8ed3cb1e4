"""Built-in idea plugin ``layernorm-removal``: remove GPT-2's LayerNorm by fine-tuning.

Layout: ``idea.py`` (the Idea class), ``config.py``, ``result.py``, ``schedule.py`` (the
published and zoo schedules; no torch), ``model.py`` (the fake-LN GPT-2 and the exports),
``train.py`` (runs and checkpoints), ``analysis.py`` (the seed's questions), ``run.py`` and
``figures.py``. Importing this package stays cheap (no torch).
"""

from mi_ideas.hookspecs import hookimpl

from .idea import LayernormRemoval

IDEAS: list = [LayernormRemoval]

__all__ = ["IDEAS", "LayernormRemoval", "mi_ideas_register_ideas"]


@hookimpl
def mi_ideas_register_ideas(register):
    for idea in IDEAS:
        register(idea)
