"""sensitive-directions: which directions of activation space move the output first?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.result`, :mod:`.run` (the
pipeline; torch), :mod:`.families`, :mod:`.analysis`, :mod:`.optimise`, :mod:`.report` and
:mod:`.figures`. Importing this package is cheap (no torch).
"""

from .idea import SensitiveDirections

__all__ = ["SensitiveDirections"]
