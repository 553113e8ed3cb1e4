"""Run directories: contents, provenance, atomicity, failure marking, reading back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mi_ideas
from mi_ideas.errors import ConfigError, RunError
from mi_ideas.runs import execute, load_run


def _files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_complete_run_directory_reads_back_into_the_same_objects(toy_host, tmp_path):
    result = mi_ideas.run("toy-echo", n=5, mode="max", seed=3, out=tmp_path, quiet=True)
    run_dir = tmp_path / "toy-echo" / result.run_dir.split("/")[-1]
    assert _files(run_dir) == [
        "artifacts/draws.safetensors", "config.json", "figures/draws.png",
        "provenance.json", "report.html", "result.json",
    ]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["status"] == "complete" and prov["seed"] == 3 and prov["wall_time_s"] >= 0
    assert prov["packages"]["torch"] == torch.__version__
    assert prov["plugin"] == "toy"

    record = load_run(run_dir)
    assert record.config == toy_host.get_idea("toy-echo").Config(n=5, mode="max")
    assert record.result.metrics["value"] == result.metrics["value"]
    assert math.isnan(record.result.metrics["nan_metric"])  # NaN survives the JSON round trip
    assert record.result.provenance.status == "complete"
    draws = record.load_artifact("draws")["x"]
    assert float(draws.max()) == pytest.approx(result.metrics["value"])
    # the artifact is the seeded draw: same seed, same numbers
    assert torch.equal(draws, torch.rand(5, generator=torch.Generator().manual_seed(3)))


def test_same_seed_same_result_different_seed_different_result(toy_host, tmp_path):
    a = mi_ideas.run("toy-echo", seed=1, out=tmp_path, quiet=True)
    b = mi_ideas.run("toy-echo", seed=1, out=tmp_path, quiet=True)
    c = mi_ideas.run("toy-echo", seed=2, out=tmp_path, quiet=True)
    assert a.metrics["value"] == b.metrics["value"] != c.metrics["value"]
    assert len({a.run_dir, b.run_dir, c.run_dir}) == 3  # never reuses a directory


def test_failed_run_is_marked_failed_with_nothing_half_written(toy_host, tmp_path):
    with pytest.raises(RunError, match="the toy idea failed on purpose") as err:
        execute("toy-fail", out=tmp_path, host=toy_host, quiet=True)
    run_dir = tmp_path / "toy-fail"
    (run_dir,) = run_dir.iterdir()
    assert str(run_dir) == err.value.run_dir
    assert _files(run_dir) == ["artifacts/partial.json", "config.json", "provenance.json"]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["status"] == "failed"
    assert prov["partial_artifacts"] == ["artifacts/partial.json"]  # kept, and marked partial
    assert "ValueError: the toy idea failed on purpose" in prov["error"]
    assert "Traceback" in prov["traceback"]
    assert load_run(run_dir).result is None


def test_interrupted_run_is_marked_interrupted(toy_host, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        execute("toy-fail", config={"how": "interrupt"}, out=tmp_path, host=toy_host, quiet=True)
    (run_dir,) = (tmp_path / "toy-fail").iterdir()
    assert json.loads((run_dir / "provenance.json").read_text())["status"] == "interrupted"


def test_bad_config_writes_nothing(toy_host, tmp_path):
    with pytest.raises(ConfigError):
        execute("toy-echo", config={"n": 0}, out=tmp_path, host=toy_host)
    assert not (tmp_path / "toy-echo").exists()


def test_python_api_accepts_a_config_object(toy_host, tmp_path):
    cfg = toy_host.get_idea("toy-echo").Config(n=2)
    result = mi_ideas.run("toy-echo", cfg, scale=2.0, out=tmp_path, quiet=True)
    assert load_run(result.run_dir).config == cfg.model_copy(update={"scale": 2.0})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    from mi_ideas.io import atomic_path

    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert _files(tmp_path) == ["x.json"]


def test_load_run_rejects_a_non_run_directory(tmp_path):
    with pytest.raises(mi_ideas.UsageError, match="not a run directory"):
        load_run(tmp_path)


def test_complete_runs_get_a_self_contained_report(toy_host, tmp_path):
    import base64
    import html

    result = mi_ideas.run("toy-echo", out=tmp_path, quiet=True)
    page = (Path(result.run_dir) / "report.html").read_text()
    for name, definition in result.definitions.items():
        assert f"<td>{name}</td>" in page and html.escape(definition) in page
    png = (Path(result.run_dir) / result.figures["draws"]).read_bytes()
    assert base64.b64encode(png).decode() in page  # the figure is embedded, not linked
    assert "<span class='status complete'>complete</span>" in page


def test_report_of_a_failed_run_shows_the_error(toy_host, tmp_path, capsys):
    from mi_ideas.cli import main

    with pytest.raises(RunError):
        execute("toy-fail", out=tmp_path, host=toy_host, quiet=True)
    (run_dir,) = (tmp_path / "toy-fail").iterdir()
    assert not (run_dir / "report.html").exists()  # a failed run gets no report by itself
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "status failed" in page and "the toy idea failed on purpose" in page
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2  # a folder with no runs


def test_a_crashed_run_resumes_from_its_checkpoint(toy_host, tmp_path, capsys):
    from mi_ideas.cli import main

    with pytest.raises(RunError, match="crashed at step 3"):
        execute("toy-steps", config={"n_steps": 6, "crash_at": 3}, seed=4, out=tmp_path,
                host=toy_host, quiet=True)
    (run_dir,) = (tmp_path / "toy-steps").iterdir()
    assert main(["resume", str(run_dir), "-q"]) == 0
    record = load_run(run_dir)
    assert record.provenance.status == "complete" and record.seed == 4
    assert record.result.details["ran"] == [3, 4, 5]  # steps 0-2 came from the checkpoint
    assert record.result.metrics["total"] == sum(range(6))
    attempts = record.provenance.model_dump()["attempts"]
    assert [a["status"] for a in attempts] == ["failed"]
    assert "crashed at step 3" in attempts[0]["error"]
    # a complete run cannot be resumed
    assert main(["resume", str(run_dir)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_the_run_hash_covers_model_and_data_specs(toy_host, ndif_model_dir, tmp_path):
    import mi_ideas

    model = f"hf:{ndif_model_dir}"
    a = mi_ideas.run("toy-probe", model=model, out=tmp_path, quiet=True, seed=1)
    b = mi_ideas.run("toy-probe", model=model, out=tmp_path, quiet=True, seed=1)
    c = mi_ideas.run("toy-probe", model=model, data="template:furniture_grid", out=tmp_path,
                     quiet=True, seed=1)
    suffix = [Path(r.run_dir).name.split("-", 1)[1] for r in (a, b, c)]
    assert suffix[0] == suffix[1].split("-")[0]  # same inputs, same hash (b may add -1)
    assert suffix[2].split("-")[0] != suffix[0].split("-")[0]  # other data, other hash


def test_resume_takes_the_same_input_flags_as_run(toy_host, ndif_model_dir, tmp_path):
    import json

    import mi_ideas
    from mi_ideas.cli import main

    model = f"hf:{ndif_model_dir}"
    first = mi_ideas.run("toy-probe", model=model, out=tmp_path, quiet=True)
    run_dir = Path(first.run_dir)
    # pretend it crashed, then resume it on other data
    prov = json.loads((run_dir / "provenance.json").read_text())
    prov["status"] = "failed"
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    assert main(["resume", str(run_dir), "-q", "--model", model,
                 "--data", "template:furniture_grid"]) == 0
    record = load_run(run_dir)
    assert record.provenance.status == "complete"
    assert record.provenance.model_dump()["data"]["spec"] == "template:furniture_grid"


def test_resume_help_lists_sae_and_data(capsys):
    from mi_ideas.cli import main

    with pytest.raises(SystemExit):
        main(["resume", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--model", "--sae", "--data", "--remote"))


def test_a_config_over_the_memory_budget_is_refused_before_anything_is_written(toy_host, tmp_path):
    from mi_ideas.errors import UsageError

    with pytest.raises(UsageError, match=r"need about 3\.8 MiB.*budget of 1\.0 MiB.*Lower n"):
        mi_ideas.run("toy-echo", n=1_000_000, memory_budget="1MiB", out=tmp_path, quiet=True)
    assert not (tmp_path / "toy-echo").exists()
    ok = mi_ideas.run("toy-echo", n=1000, memory_budget="1MiB", out=tmp_path, quiet=True)
    assert ok.provenance.model_dump()["memory_estimate_bytes"] == 4000
    with pytest.raises(UsageError, match="not a size"):
        mi_ideas.run("toy-echo", memory_budget="lots", out=tmp_path, quiet=True)


def test_resume_runs_the_ideas_check_first(toy_host, tmp_path, monkeypatch):
    """A resumed run is checked again before anything is touched: a refusal leaves the run's
    provenance exactly as it was."""
    from mi_ideas.errors import UsageError
    from mi_ideas.runs.execute import resume
    from tests.toy_plugin import Fail

    with pytest.raises(RunError):
        mi_ideas.run("toy-fail", out=tmp_path, quiet=True)
    (run_dir,) = (tmp_path / "toy-fail").iterdir()
    before = (run_dir / "provenance.json").read_text()

    def refuse(cls, config, subject=None, **inputs):
        raise UsageError("refused on resume")

    monkeypatch.setattr(Fail, "check", classmethod(refuse))
    with pytest.raises(UsageError, match="refused on resume"):
        resume(run_dir, host=toy_host, quiet=True)
    assert (run_dir / "provenance.json").read_text() == before


def test_a_check_with_the_wrong_signature_is_refused_at_registration():
    from mi_ideas.host.manager import _validate_idea_class
    from tests.toy_plugin import Echo

    class Instance(Echo):
        name = "toy-bad-check"

        def check(self, config, subject=None, **inputs):  # not a classmethod
            pass

    class NoKeywords(Echo):
        name = "toy-bad-check-2"

        @classmethod
        def check(cls, config, subject=None):
            pass

    for bad, why in ((Instance, "must be a @classmethod"), (NoKeywords, r"lacks \['dataset'")):
        with pytest.raises(TypeError, match=why):
            _validate_idea_class(bad)
    _validate_idea_class(Echo)


def test_an_ideas_check_refuses_before_anything_is_written_and_sees_the_inputs(toy_host, tmp_path):
    """Idea.check runs after the inputs are resolved and before the run directory: a refusal
    is a usage error that writes nothing (CLI exit 2, one paragraph), a config it accepts
    runs, and it is handed the run's host."""
    from mi_ideas.cli import main
    from mi_ideas.errors import UsageError
    from tests.toy_plugin import Echo

    with pytest.raises(UsageError, match="mode=max of a single draw"):
        mi_ideas.run("toy-echo", n=1, mode="max", out=tmp_path, quiet=True)
    assert not (tmp_path / "toy-echo").exists()
    assert main(["run", "toy-echo", "--set", "n=1", "--set", "mode=max", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "toy-echo").exists()
    Echo.checked.clear()
    ok = mi_ideas.run("toy-echo", n=2, mode="max", out=tmp_path, quiet=True)
    assert ok.metrics["value"] >= 0 and Echo.checked["config"].n == 2
    assert Echo.checked["host"] is not None and "toy-echo" in Echo.checked["host"].ideas
