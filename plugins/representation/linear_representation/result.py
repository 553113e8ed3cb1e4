"""Result of linear-representation (no torch import)."""

from __future__ import annotations

from mi_ideas import IdeaResult


class LinearRepresentationResult(IdeaResult):
    """Flat metrics per site (each defined in ``definitions``); per-site fits, slot effects'
    shares, interactions, ladder projections and the generated answer in ``details``."""
