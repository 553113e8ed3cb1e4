"""Built-in idea plugin ``cis-toy-model``: toy models of computation in superposition.

Layout: ``idea.py`` (the Idea class), ``config.py``, ``result.py``, ``figures.py``
(matplotlib) and ``tasks/`` (one module per toy model, plus ``tasks/common.py``).
Importing this package stays cheap (no torch); the task modules are imported by
``CisToyModel.run``.
"""

from mi_ideas.hookspecs import hookimpl

from .idea import CisToyModel

__all__ = ["CisToyModel", "mi_ideas_register_ideas"]


@hookimpl
def mi_ideas_register_ideas(register):
    register(CisToyModel)
