"""Configs from files and --set overrides; errors rendered one line per field."""

from __future__ import annotations

import pytest

from mi_ideas.config import build_config, parse_overrides
from mi_ideas.errors import ConfigError
from tests.toy_plugin import EchoConfig


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "n: 7\nmode: max\n"),
    (".toml", 'n = 7\nmode = "max"\n'),
    (".json", '{"n": 7, "mode": "max"}'),
])
def test_files_in_three_formats(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert build_config(EchoConfig, file=path) == EchoConfig(n=7, mode="max")


def test_set_overrides_file_and_parses_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n: 7\nscale: 2.0\n")
    cfg = build_config(EchoConfig, file=path, sets=["n=9", "mode=max"])
    assert cfg == EchoConfig(n=9, scale=2.0, mode="max")
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "flag=true", "s=hello"]) == {
        "a": {"b": 1, "c": [1, 2]}, "flag": True, "s": "hello"}


def test_configs_are_frozen():
    cfg = EchoConfig()
    with pytest.raises(Exception):
        cfg.n = 5


def test_errors_one_line_per_field():
    with pytest.raises(ConfigError) as err:
        build_config(EchoConfig, sets=["n=0", "mode=avg", "scael=2"], idea="toy-echo")
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid config for 'toy-echo' (3 errors):"
    assert lines[1].startswith("  n: 0 is not valid: Input should be greater than or equal to 1")
    assert lines[2].startswith("  mode: 'avg' is not valid: Input should be 'sum' or 'max'")
    assert "scael: unknown field" in lines[3] and "did you mean 'scale'?" in lines[3]


@pytest.mark.parametrize("name,text,message", [
    ("c.ini", "", "use one of .yaml"),
    ("missing.yaml", None, "does not exist"),
    ("bad.json", "{", "is not valid JSON"),
    ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_files_give_clear_errors(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_config(EchoConfig, file=path)


def test_set_without_equals_is_a_usage_error():
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_overrides(["n"])
