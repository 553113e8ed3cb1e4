"""Config of the layernorm-removal idea (pydantic; no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import IdeaConfig

ScheduleName = Literal["zoo", "heimersheim", "baroni"]


class LNRemovalConfig(IdeaConfig):
    """Settings of the removal runs, their controls and the three questions."""

    schedule: ScheduleName = Field(
        "zoo",
        description="The main removal schedule (its LN-free model is the one analysed, "
        "exported and compared with the control): 'zoo' (tuned for the zoo model), "
        "'heimersheim' (Heimersheim 2024) or 'baroni' (Baroni et al. 2025), each scaled to "
        "`steps` and the model's layer count (plugins/layernorm_removal/schedule.py).",
    )
    compare_schedules: list[ScheduleName] = Field(
        ["heimersheim", "baroni"],
        description="Further schedules run with the same steps, data and learning-rate "
        "shape for question 2 (compute to reach the control); [] runs only the main one.",
    )
    steps: int = Field(150, ge=4, le=1_000_000,
                       description="Optimiser steps of every run (treatments and controls alike).")
    batch_rows: int = Field(8, ge=1, description="Rows of n_ctx tokens per step.")
    n_ctx: int | None = Field(None, ge=8, description="Tokens per training row; None = the "
                              "model's context length, at most 128.")
    lr: float | None = Field(None, gt=0, le=1, description="Peak learning rate; None = the "
                             "main schedule's (zoo 3e-4, published 6e-4). Every run uses it.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Moving-average momentum of each "
                            "site's sigma while it is real (Baroni et al.: 0.9).")
    aux_loss_weight: float | None = Field(
        None, ge=0, description="Weight of the auxiliary loss pulling the per-position std "
        "before ln_f towards the mean of the non-BOS positions (Baroni et al. 2025); None = "
        "the schedule's (0.1 for 'baroni', 0 otherwise).")
    ln2_start: float | None = Field(None, ge=0, description="Override: step at which ln_2 of "
                                    "layer 0 is removed (main schedule, after scaling).")
    ln2_gap: float | None = Field(None, ge=0, description="Override: steps between layers for ln_2.")
    ln1qk_start: float | None = Field(None, ge=0, description="Override: first ln_1 Q/K removal step.")
    ln1qk_gap: float | None = Field(None, ge=0, description="Override: steps between layers for ln_1 Q/K.")
    ln1v_start: float | None = Field(None, ge=0, description="Override: first ln_1 V removal step.")
    ln1v_gap: float | None = Field(None, ge=0, description="Override: steps between layers for ln_1 V.")
    lnf_step: float | None = Field(None, ge=0, description="Override: step at which ln_f is removed.")
    eot_step: float | None = Field(None, ge=0, description="Override: step at which end-of-text "
                                   "tokens lose their own sigma.")
    bos_step: float | None = Field(None, ge=0, description="Override: step at which position 0 "
                                   "loses its own sigma.")
    all_at_once: list[Literal["first", "last"]] = Field(
        ["first", "last"],
        description="Controls that remove every LN and both special cases in one step: "
        "'first' at the main schedule's first removal step (run 'all-at-once': the same "
        "total steps, more of them LN-free), 'last' at its last removal step (run "
        "'all-at-once-last': the same number of LN-free recovery steps as the gradual run); "
        "[] runs neither.")
    sae_loss_weight: float = Field(
        1.0, ge=0, description="Weight of the extra loss that keeps the SAE working (its "
        "normalised reconstruction error 1 - EV at its hook, SAE frozen) in one more removal "
        "run with the main schedule; 0 skips that run.")
    n_train_stories: int | None = Field(
        None, ge=10, description="Stories generated for fine-tuning (a seed namespace neither "
        "the zoo model nor --data uses); None = enough for one pass of the longest run.")
    eval_every: int = Field(10, ge=1, description="Steps between held-out evaluations (loss curves).")
    n_curve_texts: int = Field(64, ge=1, description="Held-out texts (of --data) scored at every evaluation.")
    target_nats: float = Field(0.05, gt=0, description="Question 2: a run has reached the control "
                               "when its held-out loss, fully LN-free, is within this of the control's final loss.")
    top_k: int = Field(20, ge=1, le=1000, description="Tokens listed in the top-differences table.")
    checkpoint_every: int = Field(25, ge=1, description="Steps between training checkpoints "
                                  "(for `mi-ideas resume`).")
    export: bool = Field(True, description="Write the LN-free model as a stock Hugging Face "
                         "directory (artifacts/ln_free_hf) and a TransformerLens state dict.")
    gpt2_small_step: bool = Field(
        False, description="Question 2: also time training steps of a GPT-2-small-sized model "
        "(GPT2Config(), random weights, no download) and extrapolate the published schedules "
        "(slow on a CPU: tens of seconds per step).")
    gpt2_small_tokens: int = Field(1024, ge=16, description="Tokens per timed GPT-2-small step "
                                   "(batch 1, this many positions, at most 1024).")
    threads: int = Field(1, ge=1, le=256, description="Torch threads (1 makes runs reproducible "
                         "bit for bit, which resume relies on).")

    @model_validator(mode="after")
    def _check(self) -> "LNRemovalConfig":
        if self.gpt2_small_tokens > 1024:
            raise ValueError("gpt2_small_tokens must be <= 1024 (GPT-2's context length)")
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be <= steps ({self.steps})")
        return self
