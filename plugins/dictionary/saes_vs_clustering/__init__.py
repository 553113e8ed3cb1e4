"""saes-vs-clustering: how much of the activations' structure do generic clustering methods
explain, next to SAEs and random directions?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.result`, :mod:`.run` (the pipeline;
torch), :mod:`.export` (SAEBench-style JSON) and :mod:`.figures`. Importing this package is
cheap (no torch).
"""

from .idea import SaesVsClustering

IDEAS = [SaesVsClustering]

__all__ = ["IDEAS", "SaesVsClustering"]
