"""What every report page shares: reading a run directory into a :class:`RunView`, the
headline numbers, number formatting, and the page skeleton (style for screen, phone and
print; no JavaScript needed)."""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mi_ideas.errors import UsageError

esc = html.escape

#: How many metrics stand in for the headlines of an idea that names none.
FALLBACK_HEADLINES = 4

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .4em}
a{color:#0a58ca}.muted{color:#666}.small{font-size:.85em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{padding:.3em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6;white-space:nowrap}td.v,th.v{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}td.def{min-width:14em}
.status{display:inline-block;padding:.1em .5em;border-radius:.3em;color:#fff;font-size:.85em}
.complete{background:#2a7}.failed,.interrupted,.stale{background:#c33}.running{background:#888}
.unknown{background:#888}
.question{font-size:1.05em;background:#f4f7fb;border-left:4px solid #0a58ca;padding:.6em 1em;margin:1em 0}
.answer{font-size:1.08em;font-weight:500;margin:.8em 0;padding-left:.6em;border-left:4px solid #2a7}
.headlines td.v{font-size:1.05em}.headlines th{white-space:normal}
.headlines tr.defs td{border-bottom:1px solid #ddd;color:#444;padding-top:0}
.headlines tr:not(.defs) td,.headlines tr:not(.defs) th{border-bottom:none}
.error{background:#fdecea;border-left:4px solid #c33;padding:.6em 1em}
.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:1em 0;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #eee}
.side{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1em}
.side figure{margin:.3em 0}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em;white-space:pre-wrap;
word-break:break-word}
code{font-size:.9em;word-break:break-all}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.4em 0}
dl.kv dt{color:#555}dl.kv dd{margin:0;word-break:break-word}
.pos{color:#1a7f37}.neg{color:#b42318}
th.sortable{cursor:pointer}
@media (max-width:600px){body{margin:.6em auto;padding:0 .6em}h1{font-size:1.25em}
dl.kv{grid-template-columns:1fr}dl.kv dt{font-weight:600;color:#333}td,th{padding:.25em .4em}
td.def{min-width:9em}}
@media print{body{max-width:none;margin:0;color:#000}a{color:#000;text-decoration:none}
.noprint{display:none}.scroll{overflow:visible}figure,table,.question{break-inside:avoid}
pre{white-space:pre-wrap}h2{break-after:avoid}}
"""


def page(title: str, body: str, script: str = "") -> str:
    """A complete, self-contained HTML page (viewport meta for phones, print styles)."""
    tail = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n{body}\n{tail}"
        "</body></html>\n"
    )


def fmt(v: Any) -> str:
    """A number as a report shows it: integers whole, others to 4 significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        v = float(v)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == int(v) and abs(v) < 1e12:
            return str(int(v))
        return f"{v:.4g}"
    return esc(str(v))


def scroll(table_html: str) -> str:
    """Wrap a table so it scrolls sideways on a narrow screen instead of widening the page."""
    return f"<div class='scroll'>{table_html}</div>"


def status_badge(status: str) -> str:
    return f"<span class='status {esc(status)}'>{esc(status)}</span>"


def png_data_uri(path: Path) -> str | None:
    """The PNG at ``path`` as a data: URI (pages are self-contained), or None if absent."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def rel_href(target: Path, start: Path) -> str:
    """A relative link from a page in ``start`` to ``target`` (pages move with their runs)."""
    return Path(os.path.relpath(target, start)).as_posix()


@dataclass
class HeadlineRow:
    """A headline number resolved against a result: value and definition, with its control."""

    label: str
    metric: str
    value: float
    definition: str
    control: str | None = None
    control_value: float | None = None
    control_definition: str = ""


@dataclass
class RunView:
    """A run directory as the report reads it: JSON only (no tensors, no model)."""

    path: Path
    provenance: dict[str, Any]
    config: dict[str, Any]
    result: dict[str, Any] | None
    status: str
    idea_cls: Any = None
    result_obj: Any = None
    headlines: list[HeadlineRow] = field(default_factory=list)
    headlines_named: bool = False   # did the idea name them (vs the first few metrics)?
    answer: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def idea(self) -> str:
        return str(self.provenance.get("idea", "?"))

    @property
    def metrics(self) -> dict[str, float]:
        return dict((self.result or {}).get("metrics") or {})

    @property
    def definitions(self) -> dict[str, str]:
        return dict((self.result or {}).get("definitions") or {})

    @property
    def model(self) -> str:
        return str((self.provenance.get("model") or {}).get("spec") or "")

    @property
    def question(self) -> str:
        """What the idea asks: its one-line summary."""
        return str(getattr(self.idea_cls, "summary", "") or "")


def _get_host(host: Any) -> Any:
    if host is not None:
        return host
    from mi_ideas.host import get_host

    return get_host()


def load_view(run_dir: str | Path, host: Any = None) -> RunView:
    """Read a run directory (provenance, config, result) and resolve its headline numbers
    through the idea's ``headlines`` / ``answer``; an idea that is not installed (or names
    no headlines) falls back to the first few metrics."""
    from mi_ideas.io import read_run_file
    from mi_ideas.locks import shown_status

    run_dir = Path(run_dir)
    if not (run_dir / "provenance.json").is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not a run directory (no provenance.json); run directories "
            f"look like runs/<idea>/<timestamp>-<hash>/."
        )
    prov = read_run_file(run_dir / "provenance.json")
    config = read_run_file(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    result = read_run_file(run_dir / "result.json") if (run_dir / "result.json").is_file() else None
    view = RunView(path=run_dir, provenance=prov, config=config, result=result,
                   status=shown_status(run_dir, prov.get("status", "unknown")))
    try:
        view.idea_cls = _get_host(host).get_idea(view.idea)
    except Exception:  # noqa: BLE001 - a report of a run whose plugin is gone still works
        view.notes.append(f"the idea {view.idea!r} is not installed here, so its headline "
                          f"numbers and question are not known; the first metrics are shown.")
    if result is not None and view.idea_cls is not None:
        try:
            view.result_obj = view.idea_cls.Result.model_validate(
                {k: v for k, v in result.items() if k not in ("provenance",)})
        except Exception as exc:  # noqa: BLE001
            view.notes.append(f"result.json does not validate as {view.idea}'s Result ({exc}); "
                              f"the first metrics are shown as headlines.")
    view.headlines, view.headlines_named = resolve_headlines(view)
    if view.result_obj is not None:
        try:
            view.answer = str(view.idea_cls.answer(view.result_obj) or "").strip()
        except Exception as exc:  # noqa: BLE001 - a broken answer() must not hide the numbers
            view.notes.append(f"{view.idea_cls.__name__}.answer raised {exc!r}; no sentence shown.")
    return view


def resolve_headlines(view: RunView) -> tuple[list[HeadlineRow], bool]:
    """The idea's headlines present in the metrics (controls dropped when absent), or the
    first :data:`FALLBACK_HEADLINES` metrics when the idea names none."""
    metrics, defs = view.metrics, view.definitions
    named: list[Any] = []
    if view.result_obj is not None:
        try:
            named = list(view.idea_cls.headlines(view.result_obj) or [])
        except Exception as exc:  # noqa: BLE001
            view.notes.append(f"{view.idea_cls.__name__}.headlines raised {exc!r}; the first "
                              f"metrics are shown instead.")
    rows = []
    for h in named:
        if h.metric not in metrics:
            continue
        control = h.control if h.control in metrics else None
        rows.append(HeadlineRow(
            label=h.label or h.metric, metric=h.metric, value=metrics[h.metric],
            definition=defs.get(h.metric, ""), control=control,
            control_value=metrics[control] if control else None,
            control_definition=defs.get(control, "") if control else ""))
    if rows:
        return rows, True
    if named:
        view.notes.append("none of the headline metrics this idea names ("
                          + ", ".join(h.metric for h in named[:5]) + ") is in this result "
                          "(another task or version?); its first metrics are shown.")
    return [HeadlineRow(label=k, metric=k, value=v, definition=defs.get(k, ""))
            for k, v in list(metrics.items())[:FALLBACK_HEADLINES]], False


def headline_table(view: RunView) -> str:
    """The headline numbers, each value next to its control's, the definitions beneath."""
    if not view.headlines:
        return ""
    rows = []
    for h in view.headlines:
        control = (f"<td class='v'>{fmt(h.control_value)}<br><span class='muted small'>"
                   f"{esc(h.control or '')}</span></td>" if h.control
                   else "<td class='v muted'>— <span class='small'>no control</span></td>")
        defs = esc(h.definition) + (f"<br><span class='muted'>control: {esc(h.control_definition)}"
                                    f"</span>" if h.control else "")
        rows.append(f"<tr><th scope='row'>{esc(h.label)}</th><td class='v' "
                    f"title='{esc(h.definition)}'>{fmt(h.value)}</td>{control}</tr>"
                    f"<tr class='defs'><td colspan='3' class='small'>{defs}</td></tr>")
    head = "<tr><th>headline</th><th class='v'>value</th><th class='v'>control</th></tr>"
    return scroll(f"<table class='headlines'>{head}{''.join(rows)}</table>")


def metrics_table(metrics: dict[str, float], definitions: dict[str, str]) -> str:
    """Every metric with its value and definition."""
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td class='v'>{fmt(v)}</td><td class='def'>"
        f"{esc(definitions.get(k, ''))}</td></tr>" for k, v in metrics.items())
    return scroll("<table class='metrics' id='metrics'><tr><th>metric</th><th class='v'>value</th>"
                  f"<th>definition</th></tr>{rows}</table>")


def figure_html(run_dir: Path, name: str, rel: str, caption: str = "") -> str:
    uri = png_data_uri(run_dir / rel)
    if uri is None:
        return (f"<figure><p class='muted'>figure {esc(name)} is missing "
                f"(<code>{esc(rel)}</code>)</p></figure>")
    return (f"<figure><img alt='{esc(name)}' src='{uri}'>"
            f"<figcaption class='small'>{esc(caption or name)} (<code>{esc(rel)}</code>)"
            f"</figcaption></figure>")


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (``root/<idea>/<run>/provenance.json``; ``root``
    may itself be one idea's folder or a run directory)."""
    root = Path(root)
    if (root / "provenance.json").is_file():
        return [root]
    found = {p.parent for p in root.glob("*/provenance.json")}
    found |= {p.parent for p in root.glob("*/*/provenance.json")}
    return sorted(found)


def unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
