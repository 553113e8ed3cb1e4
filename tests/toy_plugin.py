"""A plugin used by the host tests: an idea that echoes its config, and one that fails."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mi_ideas import Idea, IdeaConfig, IdeaResult, RunContext, hookimpl


class EchoConfig(IdeaConfig):
    n: int = Field(3, ge=1, description="How many numbers to draw.")
    scale: float = Field(1.0, gt=0, description="Scale of the numbers.")
    mode: Literal["sum", "max"] = Field("sum", description="Which statistic to report.")


class Echo(Idea):
    """Draws n seeded numbers, saves them as an artifact and a figure, reports a statistic."""

    name = "toy-echo"
    summary = "Echo a seeded statistic (test idea)."
    size = "short"
    Config = EchoConfig
    Result = IdeaResult

    def run(self, ctx: RunContext, config: EchoConfig) -> IdeaResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        x = torch.rand(config.n, generator=ctx.generator) * config.scale
        ctx.artifacts.save_tensors("draws", {"x": x})
        fig, ax = plt.subplots()
        ax.plot(x.numpy())
        ctx.artifacts.save_figure("draws", fig)
        value = float(x.sum() if config.mode == "sum" else x.max())
        return IdeaResult(metrics={"value": value, "nan_metric": float("nan")},
                          definitions={"value": f"{config.mode} of the draws"},
                          details={"x": x.tolist()})


class FailConfig(IdeaConfig):
    how: Literal["error", "interrupt"] = Field("error", description="How to fail.")


class Fail(Idea):
    """Writes one artifact, then fails."""

    name = "toy-fail"
    summary = "Fail after writing an artifact (test idea)."
    size = "short"
    Config = FailConfig

    def run(self, ctx: RunContext, config: FailConfig) -> IdeaResult:
        ctx.artifacts.save_json("partial", {"step": 1})
        if config.how == "interrupt":
            raise KeyboardInterrupt
        raise ValueError("the toy idea failed on purpose")


@hookimpl
def mi_ideas_register_ideas(register):
    register(Echo)
    register(Fail)
