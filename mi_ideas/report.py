"""A self-contained HTML report of a run: what was asked, what came out, where it came from.

``report.html`` sits in the run directory next to what it shows: the headline metrics with
their definitions, the figures (embedded, so the file can be sent on its own), the config,
and the provenance (versions, seed, git revision, model / dictionary / data fingerprints,
status). Written when a run completes; ``mi-ideas report RUN_DIR`` writes it again, e.g.
for a failed run or one made by an older version.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from mi_ideas.io import atomic_write_text

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .6em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.v{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:.1em .5em;border-radius:.3em;color:#fff}
.complete{background:#2a7}.failed,.interrupted{background:#c33}.running{background:#888}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}pre{background:#f6f6f6;
padding:.8em;overflow:auto;font-size:.85em}
"""


def _value(v: Any) -> str:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if isinstance(v, float) and v == int(v) and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def render(run_dir: str | Path) -> str:
    """The HTML of a run directory's report (reads JSON and PNG files only)."""
    run_dir = Path(run_dir)
    from mi_ideas.io import read_run_file

    prov = read_run_file(run_dir / "provenance.json")
    config = read_run_file(run_dir / "config.json")
    result_path = run_dir / "result.json"
    result = read_run_file(result_path) if result_path.is_file() else None
    from mi_ideas.locks import shown_status

    status = shown_status(run_dir, prov.get("status", "unknown"))
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(prov['idea'])} — {esc(run_dir.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(prov['idea'])} <span class='status {esc(status)}'>{esc(status)}</span></h1>",
        f"<p>{esc(run_dir.name)} · seed {prov.get('seed')} · started {esc(str(prov.get('started_at')))}"
        f" · wall time {prov.get('wall_time_s')} s</p>",
    ]
    if prov.get("error"):
        parts.append(f"<h2>Error</h2><pre>{esc(prov['error'])}</pre>")
    if result:
        rows = "".join(
            f"<tr><td>{esc(k)}</td><td class='v'>{_value(v)}</td>"
            f"<td>{esc(result.get('definitions', {}).get(k, ''))}</td></tr>"
            for k, v in result.get("metrics", {}).items()
        )
        parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>"
                     f"<th>definition</th></tr>{rows}</table>")
        figures = result.get("figures", {})
        if figures:
            parts.append("<h2>Figures</h2>")
        for name, rel in figures.items():
            path = run_dir / rel
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{esc(name)} ({esc(rel)})</figcaption></figure>")
        artifacts = result.get("artifacts", {})
        if artifacts:
            items = "".join(f"<li>{esc(k)}: <code>{esc(v)}</code></li>" for k, v in artifacts.items())
            parts.append(f"<h2>Artifacts</h2><ul>{items}</ul>")
    parts.append(f"<h2>Config</h2><pre>{esc(json.dumps(config, indent=2))}</pre>")
    shown = {k: v for k, v in prov.items() if k not in ("traceback",)}
    parts.append(f"<h2>Provenance</h2><pre>{esc(json.dumps(shown, indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into a run directory (atomically); returns its path."""
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, render(run_dir))
    return path
