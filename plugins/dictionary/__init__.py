"""The dictionary family: saes-vs-clustering, transcoder-clustering, sparsify-model.

One plugin, three ideas (one sub-package each), sharing :mod:`.common`. Each idea package
lists its Idea classes in ``IDEAS``; importing this package is cheap (no torch).
"""

from mi_ideas.hookspecs import hookimpl


@hookimpl
def mi_ideas_register_ideas(register):
    from . import saes_vs_clustering, sparsify_model, transcoder_clustering

    for package in (saes_vs_clustering, transcoder_clustering, sparsify_model):
        for idea in package.IDEAS:
            register(idea)
