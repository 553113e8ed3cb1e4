"""Result of the cis-toy-model idea (no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mi_ideas import IdeaResult


class CisResult(IdeaResult):
    """Metrics are flat floats, each defined in ``definitions``; ``details`` hold the
    per-gate / per-feature / per-instance data behind the figures."""

    task: Literal["u-and", "compressed-computation", "tms"] | None = Field(
        None, description="The task that was run."
    )
