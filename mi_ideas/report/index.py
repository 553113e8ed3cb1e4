"""``runs/index.html``: every run under a runs directory, newest first, one table per idea
with the idea's headline numbers as columns (sortable with a little JavaScript; the page
is complete and in order without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mi_ideas.errors import UsageError
from mi_ideas.io import atomic_write_text
from mi_ideas.report.common import (
    RunView, esc, find_runs, fmt, load_view, page, rel_href, scroll, status_badge, unique,
)

#: Progressive enhancement: click a column header to sort by it (numbers by value).
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.classList.add('sortable');th.title='click to sort';
    th.addEventListener('click',function(){
      var rows=Array.prototype.slice.call(t.querySelectorAll('tr')).slice(1);
      var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
      rows.sort(function(a,b){
        var x=a.children[i].dataset.v||a.children[i].textContent;
        var y=b.children[i].dataset.v||b.children[i].textContent;
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));
        return asc?c:-c;});
      rows.forEach(function(r){t.appendChild(r);});});});});
"""


def _num_cell(v: float | None, extra: str = "") -> str:
    if v is None:
        return "<td class='v muted' data-v=''>—</td>"
    return f"<td class='v' data-v='{v!r}'>{fmt(v)}{extra}</td>"


def _idea_table(views: list[RunView], root: Path) -> str:
    labels = unique(h.label for v in views for h in v.headlines)
    head = ("<tr><th>run</th><th>status</th><th>model</th><th class='v'>seed</th>"
            "<th>preset</th><th class='v'>wall s</th>"
            + "".join(f"<th class='v'>{esc(lab)}</th>" for lab in labels) + "</tr>")
    rows = []
    for v in views:
        report = v.path / "report.html"
        name = esc(v.path.name)
        link = f"<a href='{esc(rel_href(report, root))}'>{name}</a>" if report.is_file() else name
        by_label = {h.label: h for h in v.headlines}
        cells = []
        for lab in labels:
            h = by_label.get(lab)
            if h is None:
                cells.append(_num_cell(None))
            else:
                ctrl = (f"<br><span class='muted small'>ctrl {fmt(h.control_value)}</span>"
                        if h.control else "")
                cells.append(_num_cell(h.value, ctrl))
        prov = v.provenance
        wall = prov.get("wall_time_s")
        rows.append(
            f"<tr><td data-v='{esc(str(prov.get('started_at', '')))}'>{link}</td>"
            f"<td>{status_badge(v.status)}</td><td>{esc(v.model) or '—'}</td>"
            f"<td class='v' data-v='{esc(str(prov.get('seed')))}'>{esc(str(prov.get('seed')))}</td>"
            f"<td>{esc(str(prov.get('preset') or ''))}</td>"
            + _num_cell(wall if isinstance(wall, (int, float)) else None)
            + "".join(cells) + "</tr>")
    return scroll(f"<table class='sortable runs'>{head}{''.join(rows)}</table>")


def _all_runs_table(views: list[RunView], root: Path) -> str:
    """Every run newest first: when, idea, status, model, seed, and its answer sentence."""
    rows = []
    for v in views:
        prov = v.provenance
        report = v.path / "report.html"
        name = esc(v.path.name)
        link = f"<a href='{esc(rel_href(report, root))}'>{name}</a>" if report.is_file() else name
        rows.append(
            f"<tr><td data-v='{esc(str(prov.get('started_at', '')))}'>"
            f"{esc(str(prov.get('started_at', ''))[:19].replace('T', ' '))}</td>"
            f"<td><a href='#idea-{esc(v.idea)}'>{esc(v.idea)}</a></td><td>{link}</td>"
            f"<td>{status_badge(v.status)}</td><td>{esc(v.model) or '—'}</td>"
            f"<td class='v'>{esc(str(prov.get('seed')))}</td><td class='small'>{esc(v.answer)}</td></tr>")
    head = ("<tr><th>started (UTC)</th><th>idea</th><th>run</th><th>status</th><th>model</th>"
            "<th class='v'>seed</th><th>answer</th></tr>")
    return scroll(f"<table class='sortable runs all'>{head}{''.join(rows)}</table>")


def render_index(root: str | Path, host: Any = None, write_missing: bool = True) -> str:
    """The index page of a runs directory. With ``write_missing``, runs that have no
    ``report.html`` yet (failed, interrupted, older versions) get one, so every row links."""
    from mi_ideas.report.run_page import write_report

    root = Path(root)
    paths = find_runs(root)
    if not paths:
        raise UsageError(
            f"{str(root)!r} holds no run directories (looked for <idea>/<run>/provenance.json "
            f"below it). Give the runs directory itself (`mi-ideas report runs/`), a run "
            f"directory, or several run directories to compare."
        )
    views = []
    for p in paths:
        try:
            if write_missing and not (p / "report.html").is_file():
                write_report(p, host=host)
            views.append(load_view(p, host=host))
        except UsageError as exc:  # one corrupt run must not hide the others
            views.append(RunView(path=p, provenance={"idea": p.parent.name}, config={},
                                 result=None, status="unreadable", notes=[str(exc)]))
    views.sort(key=lambda v: str(v.provenance.get("started_at") or ""), reverse=True)
    ideas = unique(v.idea for v in views)
    parts = [f"<h1>Runs in {esc(str(root))}</h1>",
             f"<p class='muted'>{len(views)} run(s) of {len(ideas)} idea(s), newest first. "
             "Headline columns show the numbers each idea names as deciding its question "
             "(its first metrics when it names none), with their control below.</p>",
             "<ul class='noprint'>" + "".join(
                 f"<li><a href='#idea-{esc(i)}'>{esc(i)}</a> "
                 f"({sum(v.idea == i for v in views)})</li>" for i in ideas) + "</ul>"]
    sweeps = sorted((root / "sweeps").glob("*.html")) if (root / "sweeps").is_dir() else []
    comps = sorted((root / "comparisons").glob("*.html")) if (root / "comparisons").is_dir() else []
    if sweeps or comps:
        parts.append("<h2>Sweeps and comparisons</h2><ul>" + "".join(
            f"<li><a href='{esc(rel_href(p, root))}'>{esc(p.parent.name)}/{esc(p.name)}</a></li>"
            for p in [*sweeps, *comps]) + "</ul>")
    parts.append("<h2 id='all-runs'>All runs</h2>")
    parts.append(_all_runs_table(views, root))
    for idea in ideas:
        group = [v for v in views if v.idea == idea]
        summary = group[0].question
        parts.append(f"<h2 id='idea-{esc(idea)}'>{esc(idea)}</h2>")
        if summary:
            parts.append(f"<p class='small'>{esc(summary)}</p>")
        parts.append(_idea_table(group, root))
        for v in group:
            if v.status == "unreadable":
                parts.append(f"<p class='error small'>{esc(v.path.name)}: {esc(v.notes[0])}</p>")
    return page(f"mi-ideas runs — {root}", "\n".join(parts), script=SORT_JS)


def write_index(root: str | Path, host: Any = None) -> Path:
    """Write ``ROOT/index.html`` (atomically); returns its path."""
    root = Path(root)
    path = root / "index.html"
    atomic_write_text(path, render_index(root, host=host))
    return path
