"""A planted-effect idea the report tests run (its numbers are known before it runs), and
the tests of how a run's headline numbers are resolved from an idea's ``headlines``.

The module is also the plugin: ``register_plugin(test_report_planted, name="planted")``.
"""

from __future__ import annotations

from pydantic import Field

from mi_ideas import Headline, Idea, IdeaConfig, IdeaResult, RunContext, hookimpl


class PlantedConfig(IdeaConfig):
    effect: float = Field(1.0, description="The planted difference between treatment and control.")
    n: int = Field(20, ge=1, description="Independent units (each a treatment/control pair).")
    noise: float = Field(0.0, ge=0, description="Standard deviation of the per-unit noise.")
    steps: int = Field(3, ge=0, description="Steps of a loop shown with ctx.progress.")
    fail: bool = Field(False, description="Raise after writing a figure (a failed run).")


class Planted(Idea):
    """Measures a treatment against its control, where the true difference is ``effect``."""

    name = "planted-effect"
    summary = "Does the treatment beat its control? (a planted effect, for report tests)"
    size = "short"
    Config = PlantedConfig
    presets = {"quick": {"n": 4, "effect": 2.5}, "broken": {"n_units": 3}}

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        return [
            Headline("treatment_mean", "control_mean", "treatment vs control"),
            Headline("difference", None, "treatment minus control"),
            Headline("absent_metric", "control_mean", "never shown: not a metric"),
            Headline("n_units", "absent_control", "units (its control is absent)"),
        ]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        d = result.metrics["difference"]
        if abs(d) < 0.1:
            return f"No effect: the treatment and its control differ by {d:.3g}."
        return f"The treatment exceeds its control by {d:.3g} over {result.metrics['n_units']:.0f} units."

    def run(self, ctx: RunContext, config: PlantedConfig) -> IdeaResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        for _ in ctx.progress(range(config.steps), desc="planted steps"):
            pass
        g = ctx.generator
        treated = config.effect + config.noise * torch.randn(config.n, generator=g)
        control = config.noise * torch.randn(config.n, generator=g)
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(treated.numpy(), "o", label="treatment")
        ax.plot(control.numpy(), "x", label="control")
        ax.legend()
        ctx.artifacts.save_figure("units", fig)
        ctx.artifacts.save_tensors("units", {"treated": treated, "control": control})
        if config.fail:
            raise RuntimeError("planted failure after the figure")
        result = IdeaResult()
        result.add("treatment_mean", treated.mean(), "mean over units of the treated value")
        result.add("control_mean", control.mean(), "mean over units of the control value")
        result.add("difference", treated.mean() - control.mean(), "treatment_mean - control_mean")
        result.add("n_units", config.n, "number of independent units")
        return result


class Bare(Idea):
    """An idea that names no headlines and gives no answer (the defaults)."""

    name = "planted-bare"
    summary = "Six numbers and nothing said about them (for report tests)."
    size = "short"
    Config = PlantedConfig

    def run(self, ctx: RunContext, config: PlantedConfig) -> IdeaResult:
        result = IdeaResult()
        for i in range(6):
            result.add(f"m{i}", i * config.effect, f"{i} times the effect")
        return result


@hookimpl
def mi_ideas_register_ideas(register):
    register(Planted)
    register(Bare)


# -- tests of the headline resolution -------------------------------------------------


def _view(idea_cls, metrics):
    from mi_ideas.report.common import RunView, resolve_headlines

    result = IdeaResult(metrics=metrics, definitions={k: f"def of {k}" for k in metrics})
    view = RunView(path=None, provenance={"idea": idea_cls.name}, config={},
                   result=result.model_dump(), status="complete", idea_cls=idea_cls,
                   result_obj=result)
    return resolve_headlines(view)


def test_headlines_pair_each_metric_with_its_control_and_skip_absent_names():
    rows, named = _view(Planted, {"treatment_mean": 3.0, "control_mean": 1.0, "difference": 2.0,
                                  "n_units": 7.0, "other": 9.0})
    assert named
    assert [(r.metric, r.value, r.control, r.control_value) for r in rows] == [
        ("treatment_mean", 3.0, "control_mean", 1.0),
        ("difference", 2.0, None, None),
        ("n_units", 7.0, None, None),  # the control it names is not a metric: dropped
    ]
    assert rows[0].definition == "def of treatment_mean"
    assert rows[0].control_definition == "def of control_mean"


def test_an_idea_without_headlines_shows_its_first_metrics():
    rows, named = _view(Bare, {f"m{i}": float(i) for i in range(6)})
    assert not named
    assert [r.metric for r in rows] == ["m0", "m1", "m2", "m3"]
    assert all(r.control is None for r in rows)
