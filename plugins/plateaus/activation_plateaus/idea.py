"""The activation-plateaus idea class (cheap to import: the procedure, in :mod:`.run`,
imports torch when a run starts)."""

from __future__ import annotations

from typing import Any

from mi_ideas import Idea, IdeaResult, MemoryItem, RunContext

from .config import PlateauConfig


class ActivationPlateaus(Idea):
    """Probe activation plateaus: perturb a real activation and watch the output.

    Seed (large idea 1): activation space seems made of discrete regions, each giving one
    output distribution, with sharp changes at region boundaries. Following Janiak et al.
    2024 (arXiv 2409.17113), Giglemiani et al. 2024 (arXiv 2409.15019) and Heimersheim &
    Mendel 2024: take the residual stream at an early site, last position of ~10-token
    prompts; move it towards targets of several types (another real activation, a
    covariance-matched Gaussian sample, an isotropic sample, an SAE latent direction, an
    SAE-synthetic activation, or along a norm-preserving arc) in relative steps (α from 0
    to 1) and absolute steps (fixed lengths along the unit direction); read out the KL of
    the next-token distribution and the L2 distance of the final residual stream.

    Reports per-type sharpness, max-slope step and threshold-crossing step with KS
    distances between types; the same on the re-initialised architecture (control); and
    the seed's sub-experiments, each a config switch: regions through layers, steering
    through the plateau lens, SAE reconstructions, synthetic vs real activations, real vs
    Gaussian bases. All rows run through the shared batched sweep engine.
    """

    name = "activation-plateaus"
    summary = "Perturb real activations towards real / synthetic / random targets; measure plateaus and sharp jumps."
    size = "large"
    Config = PlateauConfig
    Result = IdeaResult
    uses_model = True
    uses_saes = True
    uses_data = True
    default_data = "zoo:stories:600"
    remote = True

    @classmethod
    def estimate_memory(cls, config: PlateauConfig, subject: Any = None) -> list[MemoryItem] | None:
        """The run's peak: see :mod:`.memory`."""
        from .memory import estimate

        return estimate(config, subject)

    def run(self, ctx: RunContext, config: PlateauConfig) -> IdeaResult:
        from .run import run

        return run(ctx, config)
