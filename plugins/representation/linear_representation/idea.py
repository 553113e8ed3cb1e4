"""The linear-representation idea class (short idea 1). Cheap to import (no torch): the
pipeline lives in :mod:`.run`, the fits in :mod:`..common.additive` and
:mod:`..common.ladders`, the prompts in :mod:`..common.grids`."""

from __future__ import annotations

from typing import Any

from mi_ideas import Headline, Idea, MemoryItem, RunContext

from .config import LinearRepresentationConfig
from .result import LinearRepresentationResult


class LinearRepresentation(Idea):
    """Is "A and B" represented as vector_A + vector_B? Is intensity a magnitude?

    Seed (Heimersheim, short idea 1): on a synthetic factorial dataset ("the [texture]
    [colour] [furniture]"), fit each site's activation at the read token as
    h ≈ μ + Σ_slot a_slot[value] over every cell of the grid (least squares, full-rank
    sum-to-zero coding) and report the additive R², each slot's variance share,
    leave-one-combination-out prediction (cosine after centring, nearest-neighbour
    retrieval) and how much each slot x slot interaction adds (with the cells rendered in
    several contexts, so the interaction model is not saturated). On intensity ladders
    ("slightly / quite / very / extremely happy"): the Spearman ρ between level and the
    projection of the concept-specific part on the concept's direction, the cosine between
    consecutive steps of that part, and its norm ratio of the top and bottom levels (the
    raw-activation step cosine, dominated by what the level word adds to every concept, is
    reported separately and not used for the verdict). Controls: the same
    on the re-initialised model (random networks can look additive too) and with the cells'
    labels shuffled (next to the exact chance R²); the model is compared with each, paired
    by cell (or concept), with bootstrap intervals.

    Grids and ladders are user-defined (a template with {slot} fields and the values of
    each slot, in the config); the defaults are the zoo's furniture grid and emotion ladder.
    """

    name = "linear-representation"
    summary = ("Additivity of factorial grids (R², LOCO, interactions) and intensity ladders "
               "(magnitude along the concept direction?), against re-initialised and "
               "shuffled-label controls.")
    size = "short"
    Config = LinearRepresentationConfig
    Result = LinearRepresentationResult
    remote = True
    uses_model = True

    @classmethod
    def check(cls, config: LinearRepresentationConfig, subject: Any = None, **inputs: Any) -> None:
        """The sites and the read positions (a slot value that is not whole tokens is refused
        before the run directory exists)."""
        from .memory import check

        check(config, subject)

    @classmethod
    def estimate_memory(cls, config: LinearRepresentationConfig, subject: Any = None
                        ) -> list[MemoryItem] | None:
        from .memory import estimate

        return estimate(config, subject)

    @classmethod
    def headlines(cls, result: Any) -> list[Headline]:
        site = (result.details or {}).get("headline_site", "")
        return [
            Headline(f"{site}.additive_r2", f"reinit.{site}.additive_r2",
                     "additive R²: model vs re-initialised"),
            Headline(f"shuffled.{site}.additive_r2", "shuffled.additive_r2_chance",
                     "shuffled-label R² vs its exact expectation"),
            Headline(f"{site}.loco_nn_accuracy", "loco_nn_chance",
                     "held-out combination retrieved from its predicted sum (vs chance)"),
            Headline(f"{site}.intensity.spearman", f"reinit.{site}.intensity.spearman",
                     "intensity ladder: level vs projection on the concept direction"),
            Headline(f"{site}.intensity.norm_ratio", f"reinit.{site}.intensity.norm_ratio",
                     "intensity ladder: norm of the concept's part, strongest / weakest level"),
            Headline(f"{site}.intensity.diff_cosine", f"reinit.{site}.intensity.diff_cosine",
                     "cosine of consecutive steps of the concept's part (1: one direction)"),
        ]

    @classmethod
    def answer(cls, result: Any) -> str:
        return str((result.details or {}).get("answer", ""))

    def run(self, ctx: RunContext, config: LinearRepresentationConfig
            ) -> LinearRepresentationResult:
        from .run import run

        return run(ctx, config)
