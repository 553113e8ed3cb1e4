"""The representation family: linear-representation, steering-vs-prompting.

One plugin, two ideas (one sub-package each), sharing :mod:`.common`. Each idea package
lists its Idea classes in ``IDEAS``; importing this package is cheap (no torch).
"""

from mi_ideas.hookspecs import hookimpl


@hookimpl
def mi_ideas_register_ideas(register):
    from . import linear_representation, steering_vs_prompting

    for package in (linear_representation, steering_vs_prompting):
        for idea in package.IDEAS:
            register(idea)
