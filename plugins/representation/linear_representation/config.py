"""Config of linear-representation (pydantic; no torch).

The defaults come from the zoo's template families (:mod:`mi_ideas.data.stories`): the
furniture grid "... saw a [texture] [colour] [furniture]" and the intensity ladder "...
felt [slightly / quite / very / extremely] [emotion]", each after the corpus's story
preamble, with the character's name as the context slot (the replicates).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mi_ideas import IdeaConfig
from mi_ideas.data import stories

from ..common.grids import check_grid

_PREFIX = stories.PREAMBLE.format(person="farmer", name="{name}")
_NAMES = ["Mia", "Tom", "Lily"]
DEFAULT_GRID_TEMPLATE = _PREFIX + "At the park, {name} saw a {texture} {colour} {furniture}"
DEFAULT_GRID_SLOTS = {"texture": list(stories.TEXTURES), "colour": list(stories.COLOURS[:4]),
                      "furniture": list(stories.FURNITURE[:4])}
DEFAULT_LADDER_TEMPLATE = _PREFIX + "{name} felt {intensity} {emotion}"
DEFAULT_LADDER_SLOTS = {"intensity": list(stories.INTENSITIES), "emotion": list(stories.EMOTIONS)}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSpec(_Spec):
    """A factorial grid: every combination of the slots' values is a cell, rendered once per
    combination of the context slots' values."""

    template: str = Field(DEFAULT_GRID_TEMPLATE, description="The prompt, with one {field} per "
                          "slot and context slot (literal braces as {{ and }}).")
    slots: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_GRID_SLOTS.items()},
        description="The factors of the design: slot name -> its values (at least two slots, "
                    "each with at least two distinct values). Cells are their full product.")
    contexts: dict[str, list[str]] = Field(
        default_factory=lambda: {"name": list(_NAMES)},
        description="Context slots: name -> values; every cell is rendered once per "
                    "combination (replicates). The additive fit uses the mean over contexts of "
                    "each cell; the interaction test needs at least two contexts. {} for one "
                    "rendering per cell.")

    @model_validator(mode="after")
    def _check(self) -> "GridSpec":
        check_grid(self.template, self.slots, self.contexts, "grid")
        if len(self.slots) < 2:
            raise ValueError(
                f"grid: additivity needs at least two slots, got {len(self.slots)} "
                f"({', '.join(self.slots) or 'none'}); with one slot every cell is its own "
                f"level and the additive model fits anything exactly")
        return self


class LadderSpec(_Spec):
    """An intensity ladder: ``level_slot``'s values in order (weakest first) crossed with the
    concepts of ``concept_slot``, rendered once per context combination."""

    template: str = Field(DEFAULT_LADDER_TEMPLATE, description="The prompt, with {level_slot}, "
                          "{concept_slot} and the context slots.")
    level_slot: str = Field("intensity", description="The slot whose values are the levels, "
                            "weakest first (level 1, 2, ...); at least three.")
    concept_slot: str = Field("emotion", description="The slot whose values are the concepts "
                              "(at least two: each concept's direction is measured against "
                              "the others).")
    slots: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_LADDER_SLOTS.items()},
        description="Exactly two entries: level_slot -> levels, concept_slot -> concepts.")
    contexts: dict[str, list[str]] = Field(
        default_factory=lambda: {"name": list(_NAMES)},
        description="Context slots (replicates), as for the grid.")
    position: str = Field("last", description="Where the ladder prompts are read: 'last' (the "
                          "last token) or a slot / context slot name (its value's last token).")

    @model_validator(mode="after")
    def _check(self) -> "LadderSpec":
        check_grid(self.template, self.slots, self.contexts, "ladder")
        want = {self.level_slot, self.concept_slot}
        if len(want) != 2 or set(self.slots) != want:
            raise ValueError(
                f"ladder: slots must have exactly the two entries level_slot "
                f"({self.level_slot!r}) and concept_slot ({self.concept_slot!r}), got "
                f"{', '.join(map(repr, self.slots)) or 'none'}; put other fields in contexts")
        if len(self.slots[self.level_slot]) < 3:
            raise ValueError(
                f"ladder: level_slot {self.level_slot!r} has "
                f"{len(self.slots[self.level_slot])} levels; the cosine between consecutive "
                f"steps needs at least three")
        _check_position(self.position, self.slots, self.contexts, "ladder.position")
        return self


def _check_position(position: str, slots: dict, contexts: dict, what: str) -> None:
    if position != "last" and position not in slots and position not in contexts:
        raise ValueError(
            f"{what}={position!r} is neither 'last' nor a slot or context slot of the template "
            f"({', '.join([*slots, *contexts])}); use 'last' or one of those names")


class LinearRepresentationConfig(IdeaConfig):
    """Additivity of a factorial grid and intensity ladders, per site (defaults: the zoo's
    furniture grid and emotion ladder, every block's output; well under a CPU minute)."""

    grid: GridSpec = Field(default_factory=GridSpec, description="The factorial grid whose "
                           "additivity is measured (default: the zoo's furniture grid, texture x "
                           "colour x furniture, after 3 names).")
    sites: list[str] = Field(["resid_post.0", "resid_post.1", "resid_post.2", "resid_post.3"],
                             min_length=1, description="Sites read (standard names); each gets "
                             "its own metrics, prefixed with the site name.")
    position: str = Field("last", description="Where grid prompts are read: 'last' (the last "
                          "token) or a slot / context slot name (the last token of its value).")
    ladder: LadderSpec | None = Field(default_factory=LadderSpec, description="The intensity "
                                      "ladder (default: the zoo's emotions at four intensities "
                                      "after 3 names); null to skip it.")
    n_shuffles: int = Field(20, ge=1, le=1000, description="Shuffled-label control: random "
                            "permutations of the cells' labels, each fitted; their mean R² is "
                            "reported next to its exact expectation.")
    reinit_control: bool = Field(True, description="Repeat everything on the re-initialised "
                                 "model (same architecture, fresh weights; local models only).")
    batch_size: int = Field(256, ge=1, le=4096, description="Prompts per forward pass (one "
                            "remote request each).")

    @model_validator(mode="after")
    def _check(self) -> "LinearRepresentationConfig":
        _check_position(self.position, self.grid.slots, self.grid.contexts, "position")
        twice = sorted({s for s in self.sites if self.sites.count(s) > 1})
        if twice:
            raise ValueError(f"sites lists {', '.join(twice)} twice")
        return self
