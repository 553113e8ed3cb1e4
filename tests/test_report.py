"""Run pages, the runs index, comparisons, presets and progress output.

The runs are of the planted-effect idea (tests/test_report_planted.py), whose numbers are
known before it runs, so each page is checked against the truth, not against itself."""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path

import pytest

from mi_ideas.cli import main
from mi_ideas.errors import ConfigError, RunError, UsageError
from mi_ideas.runs import execute
from tests import test_report_planted, toy_plugin


@pytest.fixture
def host(register_plugin, mi_ideas_host):
    register_plugin(test_report_planted, name="planted")
    register_plugin(toy_plugin, name="toy")
    return mi_ideas_host


def _run(host, tmp_path, seed=0, idea="planted-effect", **values):
    return execute(idea, config=values, seed=seed, out=tmp_path, host=host, quiet=True, command=[])


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_run_page_opens_with_the_question_and_the_answer_next_to_the_controls(host, tmp_path):
    record = _run(host, tmp_path, effect=2.0, n=8)
    page = (record.path / "report.html").read_text()
    # the order a reader needs: question, answer, all metrics, figures, config, provenance
    marks = ["What it asks.", "id='answer'", "id='all-metrics'", "id='figures'", "id='config'",
             "id='provenance'"]
    positions = [page.index(m) for m in marks]
    assert positions == sorted(positions)
    assert "Does the treatment beat its control?" in page
    # the planted effect is 2 exactly (no noise): the sentence and the numbers say so
    assert "The treatment exceeds its control by 2 over 8 units." in page
    headlines = page[page.index("class='headlines'"):page.index("id='all-metrics'")]
    rows = re.findall(r"<tr><th scope='row'>(.*?)</th>(.*?)</tr>", headlines)
    assert [r[0] for r in rows] == ["treatment vs control", "treatment minus control",
                                    "units (its control is absent)"]
    cells = re.findall(r"<td class='v'[^>]*>([^<]*)", rows[0][1])
    assert cells == ["2", "0"]  # value next to its control's value
    assert "never shown" not in page  # a headline naming no metric is skipped
    # every metric with its definition, the figure embedded byte for byte
    for name, definition in record.result.definitions.items():
        assert f"<td>{name}</td>" in page and html.escape(definition) in page
    png = (record.path / record.result.figures["units"]).read_bytes()
    assert base64.b64encode(png).decode() in page
    # artifacts are linked relative to the page, and the links resolve
    for href in re.findall(r"href='([^']+)'", page):
        assert (record.path / href).is_file(), href
    assert "<meta name='viewport'" in page and "@media print" in page and "<script" not in page


def test_run_page_provenance_names_model_data_fingerprints_and_where_it_ran(host, tmp_path):
    from mi_ideas.report import render

    record = _run(host, tmp_path, seed=3)
    prov = json.loads((record.path / "provenance.json").read_text())
    # planted inputs (a model-free idea is cheap; the page reads them from provenance.json)
    prov.update(model={"spec": "zoo:stories-gpt2", "backend": "nnsight", "fingerprint": "fp-m-123",
                       "remote": "https://ndif.example"},
                data={"spec": "zoo:stories:64", "fingerprint": "fp-d-456", "n_texts": 64},
                dictionaries=[{"spec": "zoo:sae-x", "class": "TopKSAE", "site": "resid_pre.2",
                               "d_sae": 512}])
    (record.path / "provenance.json").write_text(json.dumps(prov))
    text = _text(render(record.path, host=host))
    for shown in ("zoo:stories-gpt2", "fp-m-123", "zoo:stories:64 (64 texts)", "fp-d-456",
                  "zoo:sae-x (TopKSAE, site resid_pre.2, d_sae 512)", prov["packages"]["torch"],
                  prov["mi_ideas_version"]):
        assert shown in text, shown
    assert re.search(r"seed\s+3", text) and "remote (https://ndif.example)" in text
    assert (prov["git_revision"] or "not a git checkout") in text
    assert re.search(rf"wall time\s+{prov['wall_time_s']:.4g} s", text)
    assert re.search(r"where\s+local \(no model\)", _text((record.path / "report.html").read_text()))


def test_an_idea_without_headlines_gets_its_first_metrics_and_says_so(host, tmp_path):
    record = _run(host, tmp_path, idea="planted-bare", effect=3.0)
    page = (record.path / "report.html").read_text()
    assert "names no headline numbers" in page
    headlines = page[page.index("class='headlines'"):page.index("id='all-metrics'")]
    assert re.findall(r"<th scope='row'>(.*?)</th>", headlines) == ["m0", "m1", "m2", "m3"]


def test_failed_run_page_shows_the_error_and_what_it_wrote(host, tmp_path, capsys):
    with pytest.raises(RunError):
        _run(host, tmp_path, fail=True)
    (run_dir,) = (tmp_path / "planted-effect").iterdir()
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "status failed" in page and "planted failure after the figure" in page
    assert "<summary>traceback</summary>" in page and "RuntimeError" in page
    assert "has no result" in page
    # the figure and tensors it wrote before failing are shown / linked
    png = (run_dir / "figures" / "units.png").read_bytes()
    assert base64.b64encode(png).decode() in page
    assert "href='artifacts/units.safetensors'" in page


def test_index_lists_every_run_newest_first_with_headline_columns(host, tmp_path, capsys):
    a = _run(host, tmp_path, effect=1.0, seed=1)
    time.sleep(0.01)
    b = _run(host, tmp_path, idea="toy-echo", seed=2)
    time.sleep(0.01)
    c = _run(host, tmp_path, effect=4.0, seed=3)
    with pytest.raises(RunError):
        _run(host, tmp_path, fail=True)
    (failed,) = [p for p in (tmp_path / "planted-effect").iterdir()
                 if p not in (a.path, c.path)]
    assert main(["report", str(tmp_path)]) == 0
    index = tmp_path / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    page = index.read_text()
    # newest first within the idea's table, and every row links to an existing page
    section = page[page.index("id='idea-planted-effect'"):page.index("id='idea-toy-echo'")]
    order = [m for m in re.findall(r"href='planted-effect/([^/]+)/report.html'", section)]
    assert order == [failed.name, c.path.name, a.path.name]
    everything = page[page.index("id='all-runs'"):page.index("id='idea-planted-effect'")]
    assert re.findall(r"href='[^/]+/([^/]+)/report.html'", everything) == [
        failed.name, c.path.name, b.path.name, a.path.name]  # every run, newest first
    for href in re.findall(r"href='([^'#]+)'", page):
        assert (tmp_path / href).is_file(), href
    assert (failed / "report.html").is_file()  # written for the failed run so it links
    # headline columns of this idea: values with their control, sortable data attributes
    head = re.search(r"<tr><th>run</th>.*?</tr>", section).group(0)
    assert "treatment vs control" in head and "treatment minus control" in head
    assert "data-v='4.0'" in section and "data-v='1.0'" in section
    assert "status failed" in section
    assert "table.sortable" in page  # progressive enhancement; the order above needs no JS


def test_index_shows_a_corrupt_run_without_hiding_the_others(host, tmp_path):
    good = _run(host, tmp_path)
    bad = _run(host, tmp_path, seed=9)
    (bad.path / "provenance.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert good.path.name in page
    assert "unreadable" in page and "is corrupt" in page


def test_comparison_shows_what_differs_and_the_differences(host, tmp_path, capsys):
    a = _run(host, tmp_path, effect=1.0, n=5, seed=0)
    b = _run(host, tmp_path, effect=3.5, n=5, seed=1)
    out = tmp_path / "cmp.html"
    assert main(["report", str(a.path), str(b.path), "--out", str(out)]) == 0
    page = out.read_text()
    diff = page[page.index("id='differences'"):page.index("id='headlines'")]
    shown = set(re.findall(r"(config|input) <code>([^<]+)</code>", diff))
    assert shown == {("config", "effect"), ("input", "seed")}  # n, noise, steps are equal
    # metrics side by side with B - A: the planted differences are 1 and 3.5 (no noise)
    row = re.search(r"<tr><td>difference</td>(.*?)</tr>", page[page.index("id='metrics'"):]).group(1)
    assert re.findall(r"<td class='v[^']*'[^>]*>([^<]*)", row)[:3] == ["1", "3.5", "+2.5 (+250.0%)"]
    # figures side by side: both runs' PNGs embedded
    for r in (a, b):
        assert base64.b64encode((r.path / "figures" / "units.png").read_bytes()).decode() in page
    for href in re.findall(r"href='([^']+)'", page):
        assert (out.parent / href).is_file(), href


def test_comparison_of_three_runs_shows_the_spread(host, tmp_path):
    from mi_ideas.report import render_comparison

    runs = [_run(host, tmp_path, effect=e) for e in (1.0, 4.0, 2.5)]
    page = render_comparison([r.path for r in runs], host=host)
    assert "spread (max − min)" in page
    row = re.search(r"<tr><td>difference</td>(.*?)</tr>", page[page.index("id='metrics'"):]).group(1)
    assert re.findall(r"<td class='v'>([^<]*)</td>", row) == ["1", "4", "2.5", "3"]


def test_comparison_of_identical_runs_says_nothing_differs(host, tmp_path):
    from mi_ideas.report import render_comparison

    a, b = _run(host, tmp_path), _run(host, tmp_path)
    page = render_comparison([a.path, b.path], host=host)
    assert "Nothing: the configs, seeds and inputs are identical" in page
    deltas = re.findall(r"<td class='v[^']*' data-v='([^']*)'>([^<]*)</td>", page)
    assert deltas and all(v == "0.0" and text == "0" for v, text in deltas)


def test_bad_report_arguments_are_one_clear_paragraph(host, tmp_path, capsys):
    a = _run(host, tmp_path)
    e = _run(host, tmp_path, idea="toy-echo")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(empty)], "holds no run directories"),
        ([str(a.path), str(e.path)], "different ideas"),
        ([str(a.path), str(empty)], "not run directories"),
        ([str(tmp_path / "nope")], "is not a directory"),
    ]
    for argv, phrase in cases:
        assert main(["report", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err and err.count("\n") == 1, err


def test_preset_is_the_base_that_config_and_set_override(host, tmp_path, capsys):
    assert main(["run", "planted-effect", "--preset", "quick", "--out", str(tmp_path), "-q"]) == 0
    (run_dir,) = (tmp_path / "planted-effect").iterdir()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["n"], cfg["effect"]) == (4, 2.5)
    assert json.loads((run_dir / "provenance.json").read_text())["preset"] == "quick"
    rec = execute("planted-effect", preset="quick", sets=["effect=0.5"], out=tmp_path / "b",
                  host=host, quiet=True)
    assert (rec.config.n, rec.config.effect) == (4, 0.5)  # --set beats the preset
    import mi_ideas

    res = mi_ideas.run("planted-effect", preset="quick", effect=0.75, out=tmp_path / "c",
                       host=host, quiet=True)  # the Python API: keywords beat the preset
    cfg = json.loads((Path(res.run_dir) / "config.json").read_text())
    assert (cfg["n"], cfg["effect"]) == (4, 0.75)
    out = capsys.readouterr().out
    assert "The treatment exceeds its control by 2.5 over 4 units." in out  # the summary
    assert main(["show", "planted-effect"]) == 0
    assert "presets (--preset NAME): quick (n=4, effect=2.5); broken (n_units=3)" in capsys.readouterr().out


def test_bad_presets_are_config_errors_naming_the_presets(host, tmp_path):
    with pytest.raises(ConfigError, match=r"no preset 'quik'; did you mean 'quick'\? its presets "
                                          r"are 'quick', 'broken'"):
        execute("planted-effect", preset="quik", out=tmp_path, host=host)
    with pytest.raises(ConfigError, match="it defines none"):
        execute("toy-echo", preset="quick", out=tmp_path, host=host)
    with pytest.raises(ConfigError, match="n_units: unknown field"):
        execute("planted-effect", preset="broken", out=tmp_path, host=host)
    assert not (tmp_path / "planted-effect").exists()  # nothing written


def test_run_summary_ends_with_report_headlines_and_answer(host, tmp_path, capsys):
    assert main(["run", "planted-effect", "--set", "effect=0", "--out", str(tmp_path), "-q",
                 "--index"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    (run_dir,) = (tmp_path / "planted-effect").iterdir()
    assert out[-5:] == [
        f"report: {run_dir / 'report.html'}",
        "  treatment vs control: 0   (control control_mean: 0)",
        "  treatment minus control: 0",
        "  units (its control is absent): 20",
        "No effect: the treatment and its control differ by 0.",
    ]
    assert f"index: {tmp_path / 'index.html'}" in out and (tmp_path / "index.html").is_file()


def test_progress_is_one_line_per_stage_when_stderr_is_not_a_terminal(host, tmp_path, capsys):
    execute("planted-effect", config={"steps": 7}, out=tmp_path, host=host, quiet=False)
    err = capsys.readouterr().err
    assert "\r" not in err  # no redrawn bars in a log
    lines = err.splitlines()
    assert sum(line.startswith("  planted steps: 7/7 in ") for line in lines) == 1
    stages = [line for line in lines if line.startswith("mi-ideas: ")]
    assert len(stages) == 1 and stages[0].startswith("mi-ideas: planted-effect: complete (seed 0) in ")
    execute("planted-effect", config={"steps": 7}, out=tmp_path, host=host, quiet=True)
    assert capsys.readouterr().err == ""  # quiet is silent


def test_progress_draws_a_bar_on_a_terminal(host, tmp_path, monkeypatch):
    from tqdm import tqdm

    from mi_ideas.context import RunContext, StageLine

    ctx = RunContext(seed=0, run_dir=tmp_path)
    monkeypatch.setattr("mi_ideas.context.progress_bars_wanted", lambda: True)
    bar = ctx.progress(range(3), desc="x")
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    monkeypatch.setattr("mi_ideas.context.progress_bars_wanted", lambda: False)
    line = ctx.progress(range(3), desc="x")
    assert isinstance(line, StageLine) and list(line) == [0, 1, 2]


def test_quiet_runs_do_not_print_transformers_loading_bars(host, tmp_path, capfd):
    assert main(["run", "toy-probe", "--out", str(tmp_path), "-q"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "\r" not in err
    import transformers.utils.logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # restored for whoever loads next


def test_report_views_read_only_json(host, tmp_path):
    """A run page is rebuilt from the run directory alone: the same page after the
    tensors are gone (no model, no artifacts are read)."""
    from mi_ideas.report import render

    record = _run(host, tmp_path)
    before = render(record.path, host=host)
    (record.path / "artifacts" / "units.safetensors").unlink()
    assert render(record.path, host=host) == before
    with pytest.raises(UsageError, match="not a run directory"):
        render(tmp_path, host=host)
