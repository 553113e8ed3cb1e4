"""linear-representation: is "A and B" represented as vector_A + vector_B, and intensity as
magnitude?

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.result`, :mod:`.definitions`,
:mod:`.run` (the pipeline; torch), :mod:`.memory`, :mod:`.answer` and :mod:`.figures`; the
fits live in the family's :mod:`..common` (grids, additive, ladders). Importing this
package is cheap (no torch).
"""

from .idea import LinearRepresentation

IDEAS: list = [LinearRepresentation]

__all__ = ["IDEAS", "LinearRepresentation"]
