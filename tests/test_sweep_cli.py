"""`mi-ideas sweep`: every grid point x seed is a normal run; one page with the headline
numbers per point (mean and spread over seeds) and their plots against each parameter."""

from __future__ import annotations

import base64
import json
import math
import re
import statistics

import pytest

from mi_ideas.cli import main
from mi_ideas.errors import ConfigError
from mi_ideas.report.sweep import grid_points, parse_grid, parse_seeds, point_values
from mi_ideas.runs import load_run
from tests import test_report_planted


@pytest.fixture
def host(register_plugin, mi_ideas_host):
    register_plugin(test_report_planted, name="planted")
    return mi_ideas_host


def test_grid_and_seed_parsing():
    assert parse_grid(["a=1,2.5,x", "b=[1,2],[3]", "c.d=true"]) == {
        "a": [1, 2.5, "x"], "b": [[1, 2], [3]], "c.d": [True]}
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert point_values({"c.d": 1, "e": 2}) == {"c": {"d": 1}, "e": 2}
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    for bad in (["a"], ["a="], ["a=1,,2"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)
    for bad in ("x", "1,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_sweep_runs_every_point_and_seed_and_reports_the_spread(host, tmp_path, capsys):
    # planted: treatment = effect + noise; the mean over seeds must track effect
    rc = main(["sweep", "planted-effect", "--grid", "effect=0,1,3", "--seeds", "0,1,2",
               "--set", "noise=0.5", "--set", "n=6", "--out", str(tmp_path), "-q", "--index"])
    assert rc == 0
    out = capsys.readouterr().out
    page_path = tmp_path / re.search(r"sweep page: .*?(sweeps/\S+\.html)", out).group(1)
    manifest = json.loads(page_path.with_suffix(".json").read_text())
    assert len(manifest["runs"]) == 9 and {r["status"] for r in manifest["runs"]} == {"complete"}
    values: dict[float, list[float]] = {}
    for r in manifest["runs"]:
        record = load_run(r["run_dir"])  # each point is a normal run directory
        assert record.config.effect == r["point"]["effect"] and record.seed == r["seed"]
        assert record.config.noise == 0.5 and record.config.n == 6
        values.setdefault(record.config.effect, []).append(record.result.metrics["difference"])
    assert sorted(values) == [0, 1, 3]
    page = page_path.read_text()
    table = page[page.index("id='metrics'"):page.index("id='plots'")]
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td>(.*?)</tr>", table)
    assert [float(r[0]) for r in rows] == [0, 1, 3]
    for effect, cells in rows:
        diffs = values[float(effect)]
        # headline columns: treatment, its control, the difference: mean ± sd [min, max] n
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        cell = re.findall(r"<td class='v' data-v='([^']+)'>(.*?)</td>", cells)[2]
        assert math.isclose(float(cell[0]), mean, rel_tol=1e-9)
        assert f"± {sd:.4g}" in cell[1] and "n=3" in cell[1]
        assert abs(mean - float(effect)) < 3 * 0.5 * math.sqrt(2 / 6)  # tracks the planted effect
    # one plot per headline against the swept key, embedded
    imgs = re.findall(r"<img alt='([^']+) against effect' src='data:image/png;base64,([^']+)'", page)
    assert [a for a, _ in imgs] == ["treatment vs control", "treatment minus control",
                                    "units (its control is absent)"]
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for _, b in imgs)
    index = (tmp_path / "index.html").read_text()
    assert f"sweeps/{page_path.name}" in index and index.count("report.html") >= 9


def test_a_failing_point_is_listed_and_the_others_complete(host, tmp_path, capsys):
    rc = main(["sweep", "planted-effect", "--grid", "fail=false,true", "--out", str(tmp_path), "-q"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "1 of 2 sweep runs failed" in captured.err
    page = next((tmp_path / "sweeps").glob("*.html")).read_text()
    assert "Runs that did not complete" in page and "planted failure after the figure" in page
    statuses = sorted(load_run(p).provenance.status for p in (tmp_path / "planted-effect").iterdir())
    assert statuses == ["complete", "failed"]


def test_a_bad_grid_is_refused_before_anything_runs(host, tmp_path, capsys):
    cases = [
        (["--grid", "n=5,0"], "greater than or equal to 1"),
        (["--grid", "nn=1,2"], "nn: unknown field"),
        (["--grid", "n=1,2", "--set", "n=3"], "both to --grid and --set"),
        (["--grid", "n"], "--grid expects KEY=V1,V2"),
        (["--grid", "n=1", "--seeds", "a"], "--seeds expects integers"),
        (["--grid", "n=1", "--preset", "nope"], "no preset 'nope'"),
    ]
    for extra, phrase in cases:
        assert main(["sweep", "planted-effect", *extra, "--out", str(tmp_path)]) == 2, extra
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, err
    assert not (tmp_path / "planted-effect").exists() and not (tmp_path / "sweeps").exists()


def test_sweep_of_the_example_idea_recovers_the_theory(tmp_path, capsys, mi_ideas_host):
    """Random unit vectors in d dimensions: mean |cos| ~ sqrt(2 / (pi d)) at every d, and
    the page plots it against d with the theory as the control."""
    rc = main(["sweep", "example-random-directions", "--grid", "d=16,256", "--seeds", "0,1",
               "--set", "n=200", "--out", str(tmp_path), "-q"])
    assert rc == 0
    manifest = json.loads(next((tmp_path / "sweeps").glob("*.json")).read_text())
    for r in manifest["runs"]:
        m = load_run(r["run_dir"]).result.metrics
        assert m["mean_abs_cos"] == pytest.approx(m["theory_mean_abs_cos"], rel=0.1)
    page = next((tmp_path / "sweeps").glob("*.html")).read_text()
    assert "mean |cos| vs theory (mean_abs_cos) against d, control theory_mean_abs_cos dashed" in page


def test_a_two_key_sweep_plots_each_headline_against_each_key(host, tmp_path):
    assert main(["sweep", "planted-effect", "--grid", "effect=0,2", "--grid", "n=2,4",
                 "--out", str(tmp_path), "-q"]) == 0
    page = next((tmp_path / "sweeps").glob("*.html")).read_text()
    table = page[page.index("id='metrics'"):page.index("id='plots'")]
    points = re.findall(r"<tr><td><code>([^<]+)</code></td><td><code>([^<]+)</code></td>", table)
    assert points == [("0", "2"), ("0", "4"), ("2", "2"), ("2", "4")]
    alts = re.findall(r"<img alt='([^']+)'", page)
    assert sorted(alts) == sorted(f"{h} against {k}" for k in ("effect", "n") for h in (
        "treatment vs control", "treatment minus control", "units (its control is absent)"))
