"""A comparison page of several runs of one idea (two models, two seeds, a config change):
what differs between them (config and inputs), the metrics side by side with their
differences, and the figures side by side."""

from __future__ import annotations

import hashlib
import json
import math
import string
from pathlib import Path
from typing import Any

from mi_ideas.errors import UsageError
from mi_ideas.io import atomic_write_text
from mi_ideas.report.common import (
    RunView, esc, figure_html, fmt, load_view, page, rel_href, scroll, status_badge, unique,
)


def _letters(n: int) -> list[str]:
    return [string.ascii_uppercase[i % 26] + (str(i // 26) if i >= 26 else "") for i in range(n)]


def inputs_of(view: RunView) -> dict[str, Any]:
    """What a run was given besides its config: seed, preset, model, dictionaries, data."""
    prov = view.provenance
    model = prov.get("model") or {}
    return {
        "seed": prov.get("seed"),
        "preset": prov.get("preset"),
        "model": model.get("spec"),
        "model fingerprint": model.get("fingerprint"),
        "remote": model.get("remote"),
        "dictionaries": [d.get("spec") for d in prov.get("dictionaries") or []] or None,
        "data": (prov.get("data") or {}).get("spec"),
        "data fingerprint": (prov.get("data") or {}).get("fingerprint"),
    }


def differing(rows: list[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in every mapping (missing counts as None)."""
    keys = unique(k for r in rows for k in r)
    return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in rows}) > 1]


def _delta(values: list[float | None]) -> str:
    """For two runs, B - A (and relative); for more, the spread max - min."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if len(vals) < 2 or len(vals) != len(values):
        return "<td class='v muted'>—</td>"
    if len(values) == 2:
        a, b = values
        d = b - a
        rel = f" ({d / abs(a):+.1%})" if d != 0 and a != 0 and math.isfinite(a) else ""
        cls = "pos" if d > 0 else "neg" if d < 0 else ""
        return f"<td class='v {cls}' data-v='{d!r}'>{'+' if d > 0 else ''}{fmt(d)}{rel}</td>"
    return f"<td class='v'>{fmt(max(vals) - min(vals))}</td>"


def render_comparison(run_dirs: list[str | Path], host: Any = None,
                      page_dir: Path | None = None) -> str:
    """The comparison page of two or more runs of the same idea."""
    if len(run_dirs) < 2:
        raise UsageError("a comparison needs at least two run directories; `mi-ideas report "
                         "RUN_DIR` writes one run's page, `mi-ideas report runs/` the index.")
    views = [load_view(p, host=host) for p in run_dirs]
    ideas = unique(v.idea for v in views)
    if len(ideas) > 1:
        raise UsageError(
            f"the runs are of different ideas ({', '.join(ideas)}); a comparison puts the same "
            f"metrics side by side, so give runs of one idea (`mi-ideas report runs/` lists "
            f"every run of every idea).")
    letters = _letters(len(views))
    page_dir = Path(page_dir) if page_dir is not None else Path(".")
    idea = ideas[0]
    parts = [f"<h1>{esc(idea)}: {len(views)} runs compared</h1>"]
    if views[0].question:
        parts.append(f"<div class='question'><strong>What it asks.</strong> "
                     f"{esc(views[0].question)}</div>")
    run_rows = "".join(
        f"<tr><th>{ltr}</th><td><a href='{esc(rel_href(v.path / 'report.html', page_dir))}'>"
        f"{esc(v.path.name)}</a></td><td>{status_badge(v.status)}</td>"
        f"<td>{esc(v.model) or '—'}</td><td class='v'>{esc(str(v.provenance.get('seed')))}</td>"
        f"<td>{esc(v.answer)}</td></tr>" for ltr, v in zip(letters, views))
    parts.append(scroll("<table><tr><th></th><th>run</th><th>status</th><th>model</th>"
                        f"<th class='v'>seed</th><th>answer</th></tr>{run_rows}</table>"))

    # What differs: config fields and inputs, only those that are not all equal.
    parts.append("<h2 id='differences'>What differs</h2>")
    cfgs = [v.config for v in views]
    ins = [inputs_of(v) for v in views]
    diff_cfg, diff_in = differing(cfgs), differing(ins)
    if not diff_cfg and not diff_in:
        parts.append("<p>Nothing: the configs, seeds and inputs are identical, so any "
                     "difference below is nondeterminism.</p>")
    else:
        head = "<tr><th>what</th>" + "".join(f"<th>{ltr}</th>" for ltr in letters) + "</tr>"
        body = "".join(
            f"<tr><td>{esc(kind)} <code>{esc(k)}</code></td>" + "".join(
                f"<td><code>{esc(json.dumps(r.get(k)))}</code></td>" for r in rows) + "</tr>"
            for kind, keys, rows in (("config", diff_cfg, cfgs), ("input", diff_in, ins))
            for k in keys)
        parts.append(scroll(f"<table class='diff'>{head}{body}</table>"))
        same = len(unique(k for c in cfgs for k in c)) - len(diff_cfg)
        parts.append(f"<p class='muted small'>{same} other config field(s) are equal in every "
                     f"run.</p>")

    metric_names = unique(k for v in views for k in v.metrics)
    delta_head = "B − A" if len(views) == 2 else "spread (max − min)"

    def side_by_side(names: list[str], labels: dict[str, str], table_id: str) -> str:
        head = ("<tr><th>metric</th>" + "".join(f"<th class='v'>{ltr}</th>" for ltr in letters)
                + f"<th class='v'>{delta_head}</th><th>definition</th></tr>")
        rows = []
        for k in names:
            vals = [v.metrics.get(k) for v in views]
            definition = next((v.definitions[k] for v in views if k in v.definitions), "")
            rows.append(f"<tr><td>{esc(labels.get(k, k))}</td>" + "".join(
                f"<td class='v'>{fmt(x) if x is not None else '—'}</td>" for x in vals)
                + _delta(vals) + f"<td class='def small'>{esc(definition)}</td></tr>")
        return scroll(f"<table class='metrics' id='{table_id}'>{head}{''.join(rows)}</table>")

    headline_names, labels = [], {}
    for v in views:
        for h in v.headlines:
            for name, label in ((h.metric, h.label), (h.control, f"{h.label} (control)")):
                if name and name not in labels:
                    headline_names.append(name)
                    labels[name] = label
    if headline_names:
        parts.append("<h2 id='headlines'>Headline numbers</h2>")
        parts.append(side_by_side(headline_names, labels, "headlines"))
    parts.append(f"<h2 id='all-metrics'>All metrics ({len(metric_names)})</h2>")
    parts.append(side_by_side(metric_names, {}, "metrics"))

    fig_names = unique(n for v in views for n in ((v.result or {}).get("figures") or {}))
    if fig_names:
        parts.append("<h2 id='figures'>Figures side by side</h2>")
        for name in fig_names:
            cells = []
            for ltr, v in zip(letters, views):
                rel = ((v.result or {}).get("figures") or {}).get(name)
                cells.append(figure_html(v.path, name, rel, caption=f"{ltr}: {name}") if rel
                             else f"<figure><p class='muted'>{ltr}: no figure {esc(name)}</p></figure>")
            parts.append(f"<h3>{esc(name)}</h3><div class='side'>{''.join(cells)}</div>")
    return page(f"{idea}: comparison of {len(views)} runs", "\n".join(parts))


def default_page_path(run_dirs: list[str | Path], kind: str = "comparisons") -> Path:
    """``<runs root>/<kind>/<idea>-<hash of the run names>.html`` (root = the first run's
    grandparent: ``runs/<idea>/<run>``)."""
    first = Path(run_dirs[0])
    key = hashlib.sha256("\n".join(sorted(str(Path(p).resolve()) for p in run_dirs))
                         .encode()).hexdigest()[:8]
    return first.parent.parent / kind / f"{first.parent.name}-{key}.html"


def write_comparison(run_dirs: list[str | Path], out: str | Path | None = None,
                     host: Any = None) -> Path:
    """Write the comparison page (default :func:`default_page_path`); returns its path."""
    from mi_ideas.report.run_page import write_report

    path = Path(out) if out is not None else default_page_path(run_dirs)
    for run_dir in run_dirs:  # so every column links to its run's page
        if (Path(run_dir) / "provenance.json").is_file() and not (Path(run_dir) / "report.html").is_file():
            write_report(run_dir, host=host)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_comparison(run_dirs, host=host, page_dir=path.parent))
    return path
