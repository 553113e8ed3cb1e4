"""The idea contract: a metric cannot exist without its definition; registration checks."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from mi_ideas import Idea, IdeaConfig, IdeaResult, hookimpl


def test_a_metric_without_a_definition_is_a_clear_error():
    with pytest.raises(ValidationError, match="'x' have no definition.*result.add"):
        IdeaResult(metrics={"x": 1.0})
    with pytest.raises(ValidationError, match="'y'"):
        IdeaResult(metrics={"x": 1.0, "y": 2.0}, definitions={"x": "defined", "y": "  "})


def test_add_records_value_and_definition_once():
    import torch

    r = IdeaResult()
    r.add("norm", torch.tensor(3.0), "L2 norm")
    r.add("never", float("nan"), "step of the first crossing; NaN when none")
    assert r.metrics["norm"] == 3.0 and r.definitions["norm"] == "L2 norm"
    assert math.isnan(r.metrics["never"])
    with pytest.raises(ValueError, match="already"):
        r.add("norm", 1.0, "again")
    with pytest.raises(ValueError, match="definition"):
        r.add("bare", 1.0, "")
    assert IdeaResult.model_validate_json(r.model_dump_json()).metrics["norm"] == 3.0


class _Cfg(IdeaConfig):
    pass


def _register(host, idea_cls):
    class P:
        @hookimpl
        def mi_ideas_register_ideas(self, register):
            register(idea_cls)

    host.strict = False
    info = host.register_plugin(P(), name=f"p-{idea_cls.__name__}")
    host.ideas  # noqa: B018 - collecting the ideas runs the checks
    return info


def test_harvest_without_uses_data_fails_at_registration(mi_ideas_host):
    class NoData(Idea):
        name, summary, Config, uses_model = "no-data", "harvests without data", _Cfg, True

        def run(self, ctx, config):
            acts = ctx.harvest("resid_pre.1")
            return IdeaResult(details={"n": acts.n_rows})

    info = _register(mi_ideas_host, NoData)
    assert info.status == "failed"
    assert "uses_data = True" in info.error and "no-data" not in mi_ideas_host.ideas


def test_harvest_with_an_explicit_dataset_or_uses_data_registers(mi_ideas_host):
    class Explicit(Idea):
        name, summary, Config, uses_model = "explicit-data", "passes its data", _Cfg, True

        def run(self, context, config):
            return IdeaResult(details={"n": context.harvest("resid_pre.1", dataset=["a b"]).n_rows})

    class Declared(Idea):
        name, summary, Config = "declared-data", "declares data", _Cfg
        uses_model = uses_data = True

        def run(self, ctx, config):
            return IdeaResult(details={"n": ctx.harvest("resid_pre.1").n_rows})

    assert _register(mi_ideas_host, Explicit).status == "loaded"
    assert _register(mi_ideas_host, Declared).status == "loaded"
    assert {"explicit-data", "declared-data"} <= set(mi_ideas_host.ideas)


def test_sub_experiment_generators_are_independent_of_each_other(tmp_path):
    import torch

    from mi_ideas.context import RunContext

    a, b = RunContext(seed=3, run_dir=tmp_path), RunContext(seed=3, run_dir=tmp_path)
    torch.rand(5, generator=a.generator_for("control"))  # a draws for a part b skips
    assert torch.equal(torch.rand(4, generator=a.generator_for("main")),
                       torch.rand(4, generator=b.generator_for("main")))
    assert not torch.equal(torch.rand(4, generator=a.generator_for("main")),
                           torch.rand(4, generator=a.generator_for("other")))
    assert RunContext(seed=4, run_dir=tmp_path).rng_for("main").random() != b.rng_for("main").random()
