"""Building an idea's config from files and ``--set`` overrides, with readable errors."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError

from mi_ideas.errors import ConfigError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a dict."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"--config {str(path)!r} is a directory; give a config file inside it "
            f"({', '.join(CONFIG_SUFFIXES)})."
        )
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"config file {str(path)!r} has suffix {path.suffix!r}; use one of "
            f"{', '.join(CONFIG_SUFFIXES)} so mi-ideas knows how to read it."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist; check the path.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.start} is "
            f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8 and run again."
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}.") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        elif path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - json/toml/yaml each raise their own class
        raise ConfigError(
            f"config file {str(path)!r} is not valid {path.suffix.lstrip('.').upper()}: "
            f"{exc}. Fix the syntax and run again."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of field names to values, "
            f"not a {type(data).__name__}."
        )
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML scalars / lists.

    ``--set n=100`` gives an int, ``--set flag=true`` a bool, ``--set sizes=[1,2]`` a list,
    ``--set a.b=1`` a nested mapping.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set expects KEY=VALUE, got {item!r}; for example --set task=u-and."
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {part!r}.")
        node[leaf] = value
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    config_cls: type[BaseModel],
    *,
    file: str | Path | None = None,
    sets: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
    idea: str = "",
    base: Mapping[str, Any] | None = None,
) -> BaseModel:
    """Validate ``base`` (a preset's values), then file values, then ``--set`` overrides,
    then keyword values, each overriding the one before, into a config."""
    data: dict[str, Any] = dict(base or {})
    if file is not None:
        data = merge(data, load_config_file(file))
    data = merge(data, parse_overrides(sets))
    if values:
        data = merge(data, values)
    try:
        return config_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            render_validation_error(exc, idea=idea, fields=list(config_cls.model_fields))
        ) from None


def preset_values(idea_cls: Any, preset: str | None) -> dict[str, Any]:
    """The config values of ``idea_cls.presets[preset]`` (``--preset NAME``; {} for None).

    A preset is the base a config file and ``--set`` override. An unknown name is a
    :class:`ConfigError` listing the idea's presets."""
    if preset is None:
        return {}
    presets = dict(getattr(idea_cls, "presets", None) or {})
    name = getattr(idea_cls, "name", "?")
    if preset not in presets:
        close = difflib.get_close_matches(preset, list(presets), n=1)
        have = (f"its presets are {', '.join(repr(p) for p in presets)}" if presets
                else "it defines none (Idea.presets)")
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{name!r} has no preset {preset!r}; {hint}{have}. Run without --preset, or set "
            f"the fields yourself with --set (`mi-ideas show {name}` lists them)."
        )
    return dict(presets[preset])


def render_validation_error(
    exc: ValidationError, idea: str = "", fields: list[str] | None = None
) -> str:
    """One line per bad field: location, the value given, and why it was refused."""
    head = f"invalid config for {idea!r}" if idea else "invalid config"
    lines = [f"{head} ({exc.error_count()} error{'s' if exc.error_count() != 1 else ''}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), fields or [], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"  {loc}: unknown field (value {err['input']!r}); {hint}"
                         f"`mi-ideas show {idea or 'IDEA'}` lists the fields")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required field is missing")
        else:
            lines.append(f"  {loc}: {err['input']!r} is not valid: {err['msg']}")
    return "\n".join(lines)
