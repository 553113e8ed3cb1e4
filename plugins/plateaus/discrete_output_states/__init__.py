"""discrete-output-states: do a template family's output states map to activation plateaus?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.result`, :mod:`.run` (the
experiment; torch), :mod:`.cluster` (numpy / scikit-learn) and :mod:`.figures`. Importing
this package is cheap (no torch, numpy, scikit-learn or matplotlib).
"""

from .idea import DiscreteOutputStates

__all__ = ["DiscreteOutputStates"]
