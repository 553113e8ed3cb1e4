"""Sweeps: parsing ``--grid key=v1,v2`` / ``--seeds 0,1,2``, and the sweep page (the
headline metrics against each swept parameter, with the spread over seeds).

Running the grid is the command line's job (each point is a normal run, made by
:func:`mi_ideas.runs.execute`); this module only reads run directories."""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_ideas.errors import ConfigError, UsageError
from mi_ideas.io import atomic_write_text
from mi_ideas.report.common import RunView, esc, fmt, load_view, page, rel_href, scroll, unique


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets and quotes, so ``sizes=[1,2],[3,4]`` is two values."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["lr=0.1,0.01", "task=tms"]`` -> ``{"lr": [0.1, 0.01], "task": ["tms"]}`` (values
    read as YAML scalars or lists, as ``--set`` reads them)."""
    import yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = _split_values(raw) if sep else []
        if not sep or not key or not raw.strip() or any(v == "" for v in values):
            raise ConfigError(
                f"--grid expects KEY=V1,V2,... (a config field and its values, comma-separated, "
                f"no empty value), got {item!r}; for example --grid tms_feature_prob=0.05,0.1.")
        if key in grid:
            raise ConfigError(f"--grid {key}=... is given twice; list all its values in one "
                              f"--grid {key}=V1,V2,...")
        parsed = []
        for v in values:
            try:
                parsed.append(yaml.safe_load(v))
            except yaml.YAMLError:
                parsed.append(v)
        grid[key] = parsed
    if not grid:
        raise ConfigError("a sweep needs at least one --grid KEY=V1,V2,...")
    return grid


def parse_seeds(raw: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"0-4"`` -> ``[0, 1, 2, 3, 4]``."""
    if raw is None or not str(raw).strip():
        return [0]
    seeds: list[int] = []
    try:
        for part in str(raw).split(","):
            a, dash, b = part.strip().partition("-")
            seeds.extend(range(int(a), int(b) + 1) if dash and a else [int(part)])
    except ValueError:
        raise ConfigError(f"--seeds expects integers like 0,1,2 or a range 0-4, got {raw!r}.") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {raw!r} names a seed twice; each seed is one run per point.")
    return seeds


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_values(point: dict[str, Any]) -> dict[str, Any]:
    """A grid point as config values: dotted keys (``a.b``) become nested mappings, as
    ``--set a.b=1`` does."""
    out: dict[str, Any] = {}
    for key, value in point.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dataclass
class SweepRun:
    """One run of a sweep: its grid point, seed, directory (None if it never started) and
    status."""

    point: dict[str, Any]
    seed: int
    run_dir: str | None
    status: str
    error: str = ""


def _mean_sd(vals: list[float]) -> tuple[float, float | None]:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return float("nan"), None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _spread(vals: list[float]) -> str:
    good = [v for v in vals if not math.isnan(v)]
    if not good:
        return "<td class='v muted'>—</td>"
    mean, sd = _mean_sd(good)
    text = fmt(mean)
    if sd is not None:
        text += (f" ± {fmt(sd)}<br><span class='muted small'>[{fmt(min(good))}, {fmt(max(good))}]"
                 f" n={len(good)}</span>")
    return f"<td class='v' data-v='{mean!r}'>{text}</td>"


def _key_of(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plot(metric: str, control: str | None, label: str, key: str, grid: dict[str, list[Any]],
          values: dict[tuple[str, int], dict[str, float]], runs: list[SweepRun]) -> str:
    """``metric`` (and its control, dashed) against grid key ``key``: one line per setting
    of the other keys, the line through the mean over seeds, bars of one standard deviation,
    each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = grid[key]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    pos = {json.dumps(x): (float(x) if numeric else i) for i, x in enumerate(xs)}
    others = [k for k in grid if k != key]
    combos = unique(json.dumps({k: r.point[k] for k in others}, sort_keys=True) for r in runs)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci, combo in enumerate(combos):
        fixed = json.loads(combo)
        color = colors[ci % len(colors)]
        for name, style in ((metric, "-"), (control, "--")):
            if not name:
                continue
            line_x, line_y, line_e = [], [], []
            for x in xs:
                seeds = [values[(_key_of(r.point), r.seed)].get(name, math.nan) for r in runs
                         if r.point[key] == x and all(r.point[k] == fixed[k] for k in others)
                         and (_key_of(r.point), r.seed) in values]
                if not seeds:
                    continue
                px = pos[json.dumps(x)]
                ax.plot([px] * len(seeds), seeds, "o", color=color, alpha=.35, ms=4)
                mean, sd = _mean_sd(seeds)
                line_x.append(px)
                line_y.append(mean)
                line_e.append(sd or 0.0)
            tag = ", ".join(f"{k}={v}" for k, v in fixed.items())
            lab = (f"{label}" if name == metric else f"control: {name}") + (f" ({tag})" if tag else "")
            ax.errorbar(line_x, line_y, yerr=line_e, fmt=style, color=color, capsize=3, label=lab)
    ax.set_xlabel(key)
    ax.set_ylabel(label)
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    elif all(float(x) > 0 for x in xs) and max(map(float, xs)) / min(map(float, xs)) >= 100:
        ax.set_xscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=.3)
    return (f"<figure><img alt='{esc(label)} against {esc(key)}' src='{_png(fig)}'>"
            f"<figcaption class='small'>{esc(label)} ({esc(metric)}) against {esc(key)}"
            + (f", control {esc(control)} dashed" if control else "")
            + "; dots are single seeds, lines their mean, bars one standard deviation over "
              "seeds.</figcaption></figure>")


def render_sweep(idea: str, grid: dict[str, list[Any]], seeds: list[int], runs: list[SweepRun],
                 page_dir: Path, host: Any = None, command: str = "") -> str:
    """The sweep page: grid and seeds, the headline metrics per point (mean ± sd over seeds,
    with the range), a plot of each against each swept key, and links to every run."""
    views: dict[tuple[str, int], RunView] = {}
    for r in runs:
        if r.run_dir and r.status == "complete":
            views[(_key_of(r.point), r.seed)] = load_view(r.run_dir, host=host)
    values = {k: v.metrics for k, v in views.items()}
    first = next(iter(views.values()), None)
    parts = [f"<h1>Sweep of {esc(idea)}</h1>"]
    if first is not None and first.question:
        parts.append(f"<div class='question'><strong>What it asks.</strong> {esc(first.question)}</div>")
    grid_txt = "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items())
    n_ok = sum(r.status == "complete" for r in runs)
    parts.append(f"<p>{esc(grid_txt)}; seeds {', '.join(map(str, seeds))}. {len(runs)} runs, "
                 f"{n_ok} complete.</p>")
    if command:
        parts.append(f"<p class='small'>Reproduce: <code>{esc(command)}</code></p>")
    failed = [r for r in runs if r.status != "complete"]
    if failed:
        items = "".join(f"<li>{esc(json.dumps(r.point))} seed {r.seed}: {esc(r.status)} "
                        f"{esc(r.error)}</li>" for r in failed)
        parts.append(f"<div class='error'><strong>Runs that did not complete</strong><ul>{items}</ul></div>")
    if first is None:
        parts.append("<p>No run completed, so there is nothing to plot.</p>")
        return page(f"sweep of {idea}", "\n".join(parts))

    heads = [(h.metric, h.control, h.label) for h in first.headlines]
    points = grid_points(grid)
    keys = list(grid)
    # Summary table: one row per point, headline metrics as mean ± sd over seeds.
    head = ("<tr>" + "".join(f"<th>{esc(k)}</th>" for k in keys)
            + "".join(f"<th class='v'>{esc(lab)}</th>" + (f"<th class='v'>control {esc(c)}</th>" if c else "")
                      for _, c, lab in heads) + "<th>runs</th></tr>")
    rows = []
    for p in points:
        mine = [r for r in runs if r.point == p]
        cells = "".join(f"<td><code>{esc(json.dumps(p[k]))}</code></td>" for k in keys)
        for m, c, _ in heads:
            for name in ([m, c] if c else [m]):
                cells += _spread([values[(_key_of(p), r.seed)].get(name, math.nan) for r in mine
                                  if (_key_of(p), r.seed) in values])
        links = " ".join(
            f"<a href='{esc(rel_href(Path(r.run_dir) / 'report.html', page_dir))}'>s{r.seed}</a>"
            if r.run_dir and (Path(r.run_dir) / "report.html").is_file() else f"s{r.seed} ({esc(r.status)})"
            for r in mine)
        rows.append(f"<tr>{cells}<td>{links}</td></tr>")
    parts.append("<h2 id='headlines'>Headline numbers per point</h2>")
    parts.append("<p class='small muted'>Each cell: mean ± sample standard deviation over "
                 "seeds, [min, max] and n (the number of seeds that completed).</p>")
    parts.append(scroll(f"<table class='metrics' id='metrics'>{head}{''.join(rows)}</table>"))
    if not first.headlines_named:
        parts.append("<p class='muted small'>This idea names no headline numbers; its first "
                     "metrics are shown.</p>")
    parts.append("<h2 id='plots'>Against each swept parameter</h2><div class='side'>")
    for m, c, lab in heads:
        for k in keys:
            parts.append(_plot(m, c, lab, k, grid, values, runs))
    parts.append("</div>")
    # Every metric, mean over seeds per point.
    names = unique(n for v in values.values() for n in v)
    defs = {n: d for v in views.values() for n, d in v.definitions.items()}
    label_of = {_key_of(p): ", ".join(f"{k}={p[k]}" for k in keys) for p in points}
    head = ("<tr><th>metric</th>" + "".join(f"<th class='v'>{esc(label_of[_key_of(p)])}</th>"
                                            for p in points) + "<th>definition</th></tr>")
    body = "".join(
        f"<tr><td>{esc(n)}</td>" + "".join(
            _spread([values[(_key_of(p), r.seed)].get(n, math.nan) for r in runs
                     if r.point == p and (_key_of(p), r.seed) in values]) for p in points)
        + f"<td class='def small'>{esc(defs.get(n, ''))}</td></tr>" for n in names)
    parts.append(f"<h2 id='all-metrics'>All metrics ({len(names)})</h2>")
    parts.append(scroll(f"<table class='metrics'>{head}{body}</table>"))
    return page(f"sweep of {idea}", "\n".join(parts))


def write_sweep(idea: str, grid: dict[str, list[Any]], seeds: list[int], runs: list[SweepRun],
                root: str | Path, stamp: str, host: Any = None, command: str = "") -> Path:
    """Write ``ROOT/sweeps/<idea>-<stamp>.html`` and its manifest ``.json``; returns the page."""
    out = Path(root) / "sweeps" / f"{idea}-{stamp}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"idea": idea, "grid": grid, "seeds": seeds, "command": command,
                "runs": [r.__dict__ for r in runs]}
    atomic_write_text(out.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out, render_sweep(idea, grid, seeds, runs, out.parent, host=host,
                                        command=command))
    return out


def read_sweep(manifest: str | Path) -> tuple[str, dict[str, list[Any]], list[int], list[SweepRun]]:
    """A sweep's manifest (written next to its page) back as (idea, grid, seeds, runs)."""
    from mi_ideas.io import read_run_file

    data = read_run_file(Path(manifest))
    try:
        return data["idea"], data["grid"], data["seeds"], [SweepRun(**r) for r in data["runs"]]
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{str(manifest)!r} is not a sweep manifest ({exc}).") from None
