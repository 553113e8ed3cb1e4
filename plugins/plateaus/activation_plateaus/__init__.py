"""activation-plateaus: is activation space made of regions with one output each?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.run` (the procedure; torch) and
:mod:`.figures`. Importing this package is cheap (no torch).
"""

from .idea import ActivationPlateaus

__all__ = ["ActivationPlateaus"]
