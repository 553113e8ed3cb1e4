"""An example mi-ideas plugin with two ideas, registered by one hook implementation.

- ``example-random-directions`` (below): how near-orthogonal are random directions? A
  baseline every superposition argument leans on: in d dimensions, independent isotropic
  random unit vectors have |cos| concentrated around sqrt(2 / (pi * d)), so many more than
  d directions fit with small interference. Needs no model.
- ``example-steering-kl`` (:mod:`.steering_kl`): a model-using idea. Adding the
  mean-activation direction at a site vs. a random direction of the same norm: how far
  does the next-token distribution move?

Importing this package stays cheap: torch and numpy are imported inside ``run``.
"""

from __future__ import annotations

import math

from pydantic import Field

from mi_ideas import Headline, Idea, IdeaConfig, IdeaResult, RunContext, hookimpl

from .steering_kl import SteeringKL


class RandomDirectionsConfig(IdeaConfig):
    d: int = Field(64, ge=2, le=4096, description="Dimension of the space.")
    n: int = Field(512, ge=2, le=20000, description="Number of random directions.")


class RandomDirections(Idea):
    """Sample n isotropic random unit vectors in d dimensions and measure their overlaps.

    Reports the mean |cosine| between distinct pairs next to the theoretical value
    sqrt(2 / (pi d)), and the largest |cosine| (interference of the worst pair).
    """

    name = "example-random-directions"
    summary = "Interference between random directions in d dimensions (example plugin)."
    size = "short"
    Config = RandomDirectionsConfig
    Result = IdeaResult

    @classmethod
    def estimate_memory(cls, config: RandomDirectionsConfig, subject=None):
        """float64 n x n Gram matrix and its absolute value, the upper-triangle indices
        (two int64 arrays) and the selected cosines: about 5 n^2 x 8 bytes at the peak."""
        from mi_ideas import MemoryItem

        n = config.n
        return [MemoryItem("n x n cosine matrix, its indices and values", 5 * 8 * n * n, ("n",)),
                MemoryItem("the directions", 8 * n * config.d, ("n", "d"))]

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        """The measured overlap against the theory, and the worst pair."""
        return [Headline("mean_abs_cos", "theory_mean_abs_cos", "mean |cos| vs theory"),
                Headline("max_abs_cos", None, "largest |cos| (worst pair)")]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        m = result.metrics
        ratio = m["mean_abs_cos"] / m["theory_mean_abs_cos"]
        return (f"Random unit vectors have mean |cos| {m['mean_abs_cos']:.3g}, {ratio:.2f}x the "
                f"large-d theory sqrt(2 / (pi d)) = {m['theory_mean_abs_cos']:.3g}; the worst pair "
                f"reaches {m['max_abs_cos']:.2g}.")

    def run(self, ctx: RunContext, config: RandomDirectionsConfig) -> IdeaResult:
        import numpy as np  # heavy imports go inside run, not at module level

        v = ctx.rng.standard_normal((config.n, config.d))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cos = np.abs(v @ v.T)[np.triu_indices(config.n, k=1)]
        ctx.artifacts.save_json("cosines_summary", {"quantiles": np.quantile(cos, [0.5, 0.9, 0.99]).tolist()})
        return IdeaResult(
            metrics={
                "mean_abs_cos": float(cos.mean()),
                "theory_mean_abs_cos": math.sqrt(2 / (math.pi * config.d)),
                "max_abs_cos": float(cos.max()),
            },
            definitions={
                "mean_abs_cos": "mean |cos(v_i, v_j)| over distinct pairs",
                "theory_mean_abs_cos": "sqrt(2 / (pi d)), the large-d limit for isotropic vectors",
                "max_abs_cos": "max |cos(v_i, v_j)| over distinct pairs",
            },
        )


@hookimpl
def mi_ideas_register_ideas(register):
    register(RandomDirections)
    register(SteeringKL)
