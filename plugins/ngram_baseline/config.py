"""Configuration of ngram-baseline (no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mi_ideas import IdeaConfig


class NgramConfig(IdeaConfig):
    """n-gram models (n = 1..5) on the model's training text, scored on its held-out positions."""

    orders: list[int] = Field(
        [1, 2, 3, 4, 5],
        description="n-gram orders to fit (each 1..8); every order is scored on the same "
        "held-out positions as the model.")
    split: Literal["auto", "labels", "fraction"] = Field(
        "auto",
        description="Train / held-out split of the data's texts. 'labels': each text's "
        "label 'split' ('train' or 'heldout'); the default data, zoo-corpus:stories-gpt2, is "
        "the zoo model's own training stories and held-out stories, labelled so. 'fraction': "
        "a seeded random heldout_fraction of the texts is held out, the rest is training "
        "text. 'auto': 'labels' when every text has one, else 'fraction'.")
    heldout_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Fraction of texts held out when split is 'fraction'.")
    context_length: int | None = Field(
        None, ge=2, le=4096,
        description="Tokens per packed row (rows are packed as the zoo trains: "
        "<|endoftext|> story <|endoftext|> story ..., mi_ideas.zoo.build.lm.pack_rows). None: "
        "the zoo's n_ctx for zoo-corpus data, else 128. Must not exceed the model's context.")
    max_train_rows: int | None = Field(
        None, ge=1, description="Use only the first this many training rows for the n-gram "
        "counts (None: all of them).")
    n_eval_rows: int = Field(
        96, ge=1, description="Held-out rows scored (the first ones, in packing order); every "
        "row gives context_length - 1 predicted positions, the same for the model and every "
        "n-gram.")
    tokengrams_rows: int = Field(
        32, ge=0, description="Score tokengrams' own smoothed probabilities "
        "(ngram_N.loss_tokengrams: interpolated absolute discounting, ~20x slower than the "
        "batched Kneser-Ney here) on the first this many scored rows, next to the modified-KN "
        "loss on the same rows (ngram_N.loss_kn_tokengrams_rows); 0: skip it.")
    checkpoints: list[str] | None = Field(
        None,
        description="Training checkpoints of the model to score on the same positions, as "
        "model specs (e.g. ['zoo:stories-gpt2@step-0025', 'hf:/path/step-1000']). None: the "
        "zoo's checkpoints when the model is zoo:stories-gpt2, none otherwise; [] for none.")
    checkpoint_steps: list[float] | None = Field(
        None, description="Training step of each entry of checkpoints (for the x-axis and "
        "ngram_N.beaten_at_step); None: the zoo's steps for zoo checkpoints, else their order.")
    near_nats: float = Field(
        0.1, gt=0.0, description="A position is 'explained by n-grams' when the model's loss "
        "there is within this many nats of the best n-gram's loss at that position.")
    position_bins: list[int] = Field(
        [0, 1, 2, 4, 8, 16, 32, 64, 128],
        description="Edges of the context-position bins of the by-position table (position t "
        "predicts token t + 1; bin [a, b) holds a <= t < b).")
    batch_rows: int = Field(8, ge=1, description="Held-out rows per model forward and per "
                            "batched n-gram query (rows x (context_length - 1) positions).")
    n_bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples of held-out stories "
                             "(clusters of positions) for the confidence intervals.")

    @field_validator("orders")
    @classmethod
    def _orders(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= n <= 8 for n in v) or len(set(v)) != len(v):
            raise ValueError("orders must be distinct whole numbers from 1 to 8, e.g. [1, 2, 3].")
        return sorted(v)

    @field_validator("position_bins")
    @classmethod
    def _bins(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])) or v[0] < 0:
            raise ValueError("position_bins must be at least two increasing edges from 0 up.")
        return v

    @model_validator(mode="after")
    def _steps_match(self) -> "NgramConfig":
        if self.checkpoint_steps is not None and len(self.checkpoint_steps) != len(self.checkpoints or []):
            raise ValueError(
                f"checkpoint_steps has {len(self.checkpoint_steps)} entries but checkpoints has "
                f"{len(self.checkpoints or [])}; give one training step per checkpoint (or leave "
                f"checkpoint_steps unset).")
        return self
