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

    #: what the last check() call received (tests/test_runs.py)
    checked: dict = {}

    @classmethod
    def check(cls, config: EchoConfig, subject=None, *, dataset=None, saes=None, host=None):
        cls.checked.update(config=config, subject=subject, dataset=dataset, saes=saes, host=host)
        if config.mode == "max" and config.n == 1:
            from mi_ideas.errors import UsageError

            raise UsageError("mode=max of a single draw is that draw; use mode=sum or n >= 2.")

    @classmethod
    def estimate_memory(cls, config: EchoConfig, subject=None):
        from mi_ideas import MemoryItem

        return [MemoryItem("the draws (float32)", 4 * config.n, ("n",))]

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
                          definitions={"value": f"{config.mode} of the draws",
                                       "nan_metric": "always NaN (checks NaN survives JSON)"},
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


class ProbeConfig(IdeaConfig):
    scale: float = Field(4.0, description="Length of the random steering vector.")
    batch_size: int = Field(2, ge=1, description="Prompts per forward.")


class Probe(Idea):
    """KL of the last-token distribution under a random steering vector at resid_pre.1."""

    name = "toy-probe"
    summary = "Steer a model with a random vector and measure KL (test idea)."
    size = "short"
    Config = ProbeConfig
    uses_model = True
    uses_data = True
    default_data = "template:intensity_ladder"
    remote = True

    def run(self, ctx: RunContext, config: ProbeConfig) -> IdeaResult:
        import torch

        from mi_ideas.subject import Intervention, StatsRequest

        s = ctx.subject
        texts = ctx.dataset.texts[:4]
        v = torch.randn(s.d_model, generator=ctx.generator)
        v = config.scale * v / v.norm()
        kls = []
        for i in range(0, len(texts), config.batch_size):
            batch = s.tokenize(texts[i:i + config.batch_size])
            logprobs = s.logprobs(batch)
            out = s.forward(batch, stats=StatsRequest(kl_reference=logprobs), interventions=[
                Intervention("resid_pre.1", "add", v)])
            kls.append(out.stats["kl"])
        kl = torch.cat(kls)
        ctx.artifacts.save_tensors("kl", {"kl": kl})
        return IdeaResult(metrics={"mean_kl": float(kl.mean())},
                          definitions={"mean_kl": "mean KL(clean || steered), last token, nats"})


class DictConfig(IdeaConfig):
    scale: float = Field(1.0, description="Unused; every config needs a field to show.")


class Dict(Idea):
    """Reports the width of each dictionary it is given (test idea for --sae)."""

    name = "toy-dict"
    summary = "Report dictionary widths (test idea)."
    size = "short"
    Config = DictConfig
    uses_model = uses_saes = True

    def run(self, ctx: RunContext, config: DictConfig) -> IdeaResult:
        result = IdeaResult()
        for i, sae in enumerate(ctx.saes):
            result.add(f"d_sae.{i}", sae.cfg.d_sae, "number of latents of dictionary i")
        return result


class StepsConfig(IdeaConfig):
    n_steps: int = Field(5, ge=1, description="Steps of the long computation.")
    crash_at: int = Field(-1, description="Raise at this step unless resumed past it.")
    sleep_s: float = Field(0.0, ge=0, description="Seconds to sleep after each step (fault tests).")


class Steps(Idea):
    """A long computation that checkpoints every step and crashes once on purpose."""

    name = "toy-steps"
    summary = "Checkpoint every step; crash at a chosen step (test idea)."
    size = "short"
    Config = StepsConfig

    def run(self, ctx: RunContext, config: StepsConfig) -> IdeaResult:
        import torch

        saved = ctx.restore("progress")
        total, start, ran = torch.zeros(1), 0, []
        if saved is not None:
            total, start = saved[0]["total"], saved[1]["next_step"]
        for step in range(start, config.n_steps):
            if step == config.crash_at and saved is None:
                raise RuntimeError(f"crashed at step {step}")
            total = total + step
            ran.append(step)
            ctx.checkpoint("progress", {"total": total}, {"next_step": step + 1})
            if config.sleep_s:
                import time

                time.sleep(config.sleep_s)
        result = IdeaResult(details={"ran": ran})
        result.add("total", total, "sum of the step indices run, across attempts")
        return result


@hookimpl
def mi_ideas_register_ideas(register):
    register(Echo)
    register(Fail)
    register(Probe)
    register(Steps)
    register(Dict)
