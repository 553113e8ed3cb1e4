"""The command line: commands, exit codes, readable errors, a lean start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mi_ideas.cli import main


def test_list_groups_by_size(toy_host, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Medium ideas:" in out and "Short ideas:" in out
    medium = out.split("Medium ideas:")[1].split("Short ideas:")[0]
    assert "cis-toy-model" in medium and "toy-echo" in out.split("Short ideas:")[1]


def test_list_does_not_import_heavy_libraries():
    code = (
        "import sys; from mi_ideas.cli import main; rc = main(['list']);"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'nnsight', 'sae_lens', 'transformers', 'transformer_lens', 'matplotlib'});"
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "cis-toy-model" in out.stdout  # every installed plugin was imported...
    assert "HEAVY []" in out.stdout  # ...and none pulled in a heavy library


def test_show_prints_fields_and_schema(toy_host, capsys):
    assert main(["show", "toy-echo"]) == 0
    out = capsys.readouterr().out
    assert "n: int = 3" in out and "How many numbers to draw." in out
    assert "mode: 'sum' | 'max' = 'sum'" in out
    assert main(["show", "toy-echo", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["n"]["minimum"] == 1 and schema["additionalProperties"] is False


def test_run_prints_metrics_and_writes_the_run(toy_host, tmp_path, capsys):
    rc = main(["run", "toy-echo", "--set", "n=4", "--seed", "5", "--out", str(tmp_path), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "value" in out and "sum of the draws" in out
    (run_dir,) = (tmp_path / "toy-echo").iterdir()
    assert f"run directory: {run_dir}" in out
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["command"][:4] == ["mi-ideas", "run", "toy-echo", "--set"] or prov["command"]


def test_long_metric_tables_become_a_count_unless_asked(capsys):
    """A run with hundreds of metrics prints a count (the summary follows); --metrics all
    prints every row, and patterns print only the matching rows."""
    import io
    from types import SimpleNamespace

    from mi_ideas.cli import METRICS_SHOWN, print_metrics

    n = METRICS_SHOWN + 5
    result = SimpleNamespace(metrics={f"a.{i}.ev": float(i) for i in range(n)} | {"b.x": 1.5},
                             definitions={"b.x": "the planted one"})
    rows = lambda text: [ln for ln in text.splitlines() if ln.startswith(("a.", "b."))]
    out = io.StringIO(); print_metrics(result, out)
    assert rows(out.getvalue()) == [] and f"{n + 1} metrics" in out.getvalue()
    out = io.StringIO(); print_metrics(result, out, which="all")
    assert len(rows(out.getvalue())) == n + 1
    out = io.StringIO(); print_metrics(result, out, which="b.*,a.3.*")
    got = rows(out.getvalue())
    assert [r.split()[0] for r in got] == ["a.3.ev", "b.x"] and "the planted one" in got[1]
    out = io.StringIO(); print_metrics(result, out, which="zzz*")
    assert "no metric matches" in out.getvalue()


@pytest.mark.parametrize("argv,code,needle", [
    (["run", "toy-echo", "--set", "n=-1", "--set", "mode=x"], 2, "  n: -1 is not valid"),
    (["run", "toy-ecko"], 2, "Did you mean 'toy-echo'"),
    (["show", "nope-nothing"], 2, "no idea named 'nope-nothing'"),
    (["run", "toy-echo", "--config", "missing.yaml"], 2, "does not exist"),
    (["run", "toy-fail"], 1, "marked failed"),
])
def test_errors_have_exit_codes_and_no_traceback(toy_host, tmp_path, capsys, argv, code, needle):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == code
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2


def test_plugins_json_and_disable(toy_host, capsys):
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cis-toy-model"]["status"] == "loaded"
    assert rows["cis-toy-model"]["distribution"] == "mi-ideas"
    assert rows["toy"]["ideas"] == ["toy-echo", "toy-fail", "toy-probe", "toy-steps", "toy-dict"]
    assert main(["plugins", "--json", "--disable-plugin", "cis-toy-model"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cis-toy-model"]["status"] == "disabled" and rows["cis-toy-model"]["ideas"] == []


def test_plugins_shows_a_broken_plugin(install_entrypoint_plugin, mi_ideas_host, capsys, monkeypatch):
    monkeypatch.delenv("MI_IDEAS_STRICT_PLUGINS", raising=False)
    install_entrypoint_plugin("broken-plugin", "raise ImportError('needs libfoo')\n")
    assert main(["plugins", "--disable-plugin", "none"]) == 0
    out = capsys.readouterr().out
    assert "broken-plugin  [failed]  broken-plugin 0.0.1" in out
    assert "error: could not import 'broken_plugin': ImportError: needs libfoo" in out
