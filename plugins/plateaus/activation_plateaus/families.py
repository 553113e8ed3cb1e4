"""Target and direction families as this idea draws them: the plateau family's shared ones
(``plugins/plateaus/common/directions.py``: names, definitions, the radial option), plus
``toward_real_arc``, this idea's norm-preserving path towards the ``toward_real`` targets."""

from __future__ import annotations

from typing import Any

from ..common import directions as common

cos_with_x = common.cos_with_x
apply_radial = common.apply_radial
synthetic = common.synthetic
reconstruct = common.reconstruction
_unit = common.unit


def definition(family: str) -> str:
    """The family's definition in words."""
    if family == "toward_real_arc":
        return (common.FAMILY_DEFINITIONS["toward_real"] + "; along the norm-preserving arc "
                "|x| · slerp(x̂, t̂, α) instead of the straight line")
    return common.FAMILY_DEFINITIONS[family]


def targets(family: str, x: Any, pool: Any, n_paths: int, gen: Any, *, sae: Any = None,
            freq: Any = None) -> Any:
    """Targets ``(n, n_paths, d)`` of a ``toward_*`` family (``toward_real_arc``: the
    ``toward_real`` targets)."""
    family = "toward_real" if family == "toward_real_arc" else family
    return common.make_targets(family, x, pool, n_paths, gen, sae=sae, freq=freq)

#: unit directions ``(n, n_paths, d)`` of a ``dir_*`` family, before the radial option
raw_directions = common.raw_directions
