"""Result of discrete-output-states (no torch import)."""

from __future__ import annotations

from pydantic import Field

from mi_ideas import IdeaResult


class DiscreteOutputStatesResult(IdeaResult):
    """Metrics are flat floats, each defined in ``definitions``; ``details`` hold the
    k-selection curves, per-site probe scores, cluster summaries and median curves."""

    k: int | None = Field(None, description="The number of output states chosen.")
