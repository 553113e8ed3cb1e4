"""activation-plateaus: is activation space made of regions with one output each?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.run` (the procedure; torch),
:mod:`.measures` (metrics, paired comparisons), :mod:`.subquestions` (the switches),
:mod:`.families` (the shared target / direction families), :mod:`.readouts` (the read-outs
asked of the sweep engine), :mod:`.figures`, :mod:`.memory`, and the sub-questions :mod:`.grokking` and
:mod:`.e2e_sae`. Importing this package is cheap (no torch).
"""

from .idea import ActivationPlateaus

__all__ = ["ActivationPlateaus"]
