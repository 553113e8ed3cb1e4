"""The run page, ``report.html``: what the idea asks and what the run answers first, then
every metric with its definition, every figure, the config and the provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mi_ideas.io import atomic_write_text
from mi_ideas.report.common import (
    RunView, esc, figure_html, fmt, headline_table, load_view, metrics_table, page, scroll,
    status_badge,
)


def _question(view: RunView) -> str:
    if view.idea_cls is None:
        return ""
    desc = view.idea_cls.description()
    first, _, rest = desc.partition("\n\n")
    more = (f"<details class='small'><summary>the idea in full</summary><pre>{esc(rest)}</pre>"
            f"</details>") if rest.strip() else ""
    return (f"<div class='question'><strong>What it asks.</strong> {esc(view.question)}"
            f"<br><span class='small'>{esc(first)}</span>{more}</div>")


def _answer(view: RunView) -> str:
    parts = ["<h2 id='answer'>Answer</h2>"]
    if view.result is None:
        parts.append("<p class='muted'>This run has no result (it did not complete), so there "
                     "is no answer; what it wrote before it stopped is listed below.</p>")
        return "".join(parts)
    if view.answer:
        parts.append(f"<p class='answer'>{esc(view.answer)}</p>")
    if not view.headlines_named and view.headlines:
        parts.append("<p class='muted small'>This idea names no headline numbers "
                     "(<code>Idea.headlines</code>); its first metrics are shown.</p>")
    parts.append(headline_table(view))
    return "".join(parts)


def _kv(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items if v not in (None, ""))
    return f"<dl class='kv'>{rows}</dl>"


def provenance_items(prov: dict[str, Any]) -> list[tuple[str, Any]]:
    """The provenance a reader checks, as (label, HTML) pairs."""
    model = prov.get("model") or {}
    data = prov.get("data") or {}
    where = "local"
    if model.get("remote"):
        where = f"remote ({esc(str(model['remote']))})"
    elif not model:
        where = "local (no model)"
    plugin = prov.get("plugin") or ""
    if prov.get("plugin_distribution"):
        plugin += f" ({prov['plugin_distribution']} {prov.get('plugin_version') or ''})"
    items: list[tuple[str, Any]] = [
        ("status", status_badge(str(prov.get("status", "unknown")))),
        ("idea", esc(str(prov.get("idea", "")))),
        ("plugin", esc(plugin)),
        ("seed", esc(str(prov.get("seed")))),
        ("preset", esc(str(prov["preset"])) if prov.get("preset") else None),
        ("where", where),
        ("model", esc(" · ".join(str(model[k]) for k in ("spec", "backend") if model.get(k)))
         if model else None),
        ("model fingerprint", f"<code>{esc(str(model.get('fingerprint')))}</code>"
         if model.get("fingerprint") else None),
        ("dictionaries", "<br>".join(
            esc(f"{d.get('spec')} ({d.get('class')}, site {d.get('site')}, d_sae {d.get('d_sae')})")
            for d in prov.get("dictionaries") or []) or None),
        ("data", esc(f"{data.get('spec')} ({data.get('n_texts')} texts)") if data else None),
        ("data fingerprint", f"<code>{esc(str(data.get('fingerprint')))}</code>"
         if data.get("fingerprint") else None),
        ("git revision", f"<code>{esc(str(prov.get('git_revision')))}</code>"
         if prov.get("git_revision") else "unknown (not a git checkout)"),
        ("mi-ideas", esc(str(prov.get("mi_ideas_version", "")))),
        ("packages", esc(", ".join(f"{k} {v}" for k, v in (prov.get("packages") or {}).items()))),
        ("python / platform", esc(f"{prov.get('python', '')} · {prov.get('platform', '')}")),
        ("started", esc(str(prov.get("started_at") or ""))),
        ("finished", esc(str(prov.get("finished_at") or ""))),
        ("wall time", f"{fmt(prov.get('wall_time_s'))} s" if prov.get("wall_time_s") is not None
         else None),
        ("memory estimate", f"{prov['memory_estimate_bytes'] / 2**20:.1f} MiB"
         if isinstance(prov.get("memory_estimate_bytes"), (int, float)) else None),
        ("command", f"<code>{esc(' '.join(map(str, prov.get('command') or [])))}</code>"),
        ("earlier attempts", esc("; ".join(f"{a.get('status')} at {a.get('started_at')}"
                                           for a in prov.get("attempts") or [])) or None),
    ]
    return items


def _files(view: RunView) -> str:
    run_dir = view.path
    listed: dict[str, str] = {}
    if view.result:
        listed.update({k: v for k, v in (view.result.get("artifacts") or {}).items()})
    for rel in view.provenance.get("partial_artifacts") or []:
        listed.setdefault(Path(rel).stem + (" (partial)" if view.result is None else ""), rel)
    own = [f for f in ("config.json", "result.json", "provenance.json", "log.txt")
           if (run_dir / f).is_file()]
    items = "".join(f"<li><a href='{esc(rel)}'>{esc(name)}</a> <code>{esc(rel)}</code></li>"
                    for name, rel in listed.items())
    items += "".join(f"<li><a href='{esc(f)}'>{esc(f)}</a></li>" for f in own)
    return f"<h2 id='artifacts'>Artifacts and files</h2><ul>{items}</ul>"


def render(run_dir: str | Path, host: Any = None) -> str:
    """The HTML of a run directory's report (reads JSON and PNG files only)."""
    view = load_view(run_dir, host=host)
    prov = view.provenance
    parts = [
        f"<h1>{esc(view.idea)} {status_badge(view.status)}</h1>",
        f"<p class='muted small'>{esc(view.path.name)} · seed {esc(str(prov.get('seed')))}"
        + (f" · {esc(view.model)}" if view.model else "")
        + f" · started {esc(str(prov.get('started_at')))} · wall time "
          f"{fmt(prov.get('wall_time_s'))} s</p>",
        _question(view),
    ]
    if prov.get("error") or view.status in ("failed", "interrupted", "stale"):
        error = prov.get("error") or ("the process writing this run died without a word "
                                      "(e.g. kill -9); `mi-ideas resume` continues it"
                                      if view.status == "stale" else "no error recorded")
        tb = prov.get("traceback")
        parts.append(f"<h2 id='error'>Error</h2><div class='error'><pre>{esc(str(error))}</pre>"
                     + (f"<details><summary>traceback</summary><pre>{esc(tb)}</pre></details>"
                        if tb else "") + "</div>")
    parts.append(_answer(view))
    for note in view.notes:
        parts.append(f"<p class='muted small'>note: {esc(note)}</p>")
    if view.result:
        parts.append(f"<h2 id='all-metrics'>All metrics ({len(view.metrics)})</h2>")
        parts.append(metrics_table(view.metrics, view.definitions))
        figures = view.result.get("figures") or {}
        if figures:
            parts.append("<h2 id='figures'>Figures</h2><div class='figs'>")
            parts.extend(figure_html(view.path, name, rel) for name, rel in figures.items())
            parts.append("</div>")
    else:
        partial_figs = [r for r in prov.get("partial_artifacts") or [] if r.endswith(".png")]
        if partial_figs:
            parts.append("<h2 id='figures'>Figures written before it stopped</h2><div class='figs'>")
            parts.extend(figure_html(view.path, Path(r).stem, r) for r in partial_figs)
            parts.append("</div>")
    parts.append(_files(view))
    parts.append("<h2 id='config'>Config</h2>")
    cfg_rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(json.dumps(v))}</code></td></tr>"
                       for k, v in view.config.items())
    parts.append(scroll(f"<table class='config'><tr><th>field</th><th>value</th></tr>{cfg_rows}"
                        "</table>"))
    parts.append("<h2 id='provenance'>Provenance</h2>")
    parts.append(_kv(provenance_items(prov)))
    shown = {k: v for k, v in prov.items() if k != "traceback"}
    parts.append(f"<details class='noprint'><summary>provenance.json</summary>"
                 f"<pre>{esc(json.dumps(shown, indent=2))}</pre></details>")
    return page(f"{view.idea} — {view.path.name}", "\n".join(parts))


def write_report(run_dir: str | Path, host: Any = None) -> Path:
    """Write ``report.html`` into a run directory (atomically); returns its path."""
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, render(run_dir, host=host))
    return path
