"""Result of sensitive-directions (no torch import)."""

from __future__ import annotations

from mi_ideas import IdeaResult


class SensitiveDirectionsResult(IdeaResult):
    """Flat metrics (each defined in ``definitions``); per-family curves and summaries,
    the KS matrix and the headline answer in ``details``."""
