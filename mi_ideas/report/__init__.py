"""Reports people look at: run pages, the index of a runs directory, comparisons, sweeps.

Every page is one self-contained HTML file (figures embedded as PNG data, no JavaScript
needed; readable on a phone and in print), built from a run directory's JSON and PNG
files only (no tensors, no model):

- :func:`write_report` — ``RUN_DIR/report.html``: what the idea asks, the answer (the
  idea's headline numbers, each next to its control, and its one-sentence ``answer``),
  every metric with its definition, every figure, the config, the provenance and the
  artifacts; a failed or interrupted run shows its error and what it wrote. Written when
  a run completes; ``mi-ideas report RUN_DIR`` writes it again.
- :func:`write_index` — ``runs/index.html``: every run, newest first, one sortable table
  per idea with its headline numbers (``mi-ideas report runs/``).
- :func:`write_comparison` — several runs of one idea: what differs, the metrics side by
  side with their differences, the figures side by side (``mi-ideas report RUN RUN ...``).
- :func:`write_sweep` — a sweep's page (``mi-ideas sweep``): the headline metrics against
  each swept parameter with the spread over seeds.
"""

from mi_ideas.report.common import RunView, find_runs, load_view
from mi_ideas.report.compare import render_comparison, write_comparison
from mi_ideas.report.index import render_index, write_index
from mi_ideas.report.run_page import render, write_report
from mi_ideas.report.sweep import grid_points, parse_grid, parse_seeds, write_sweep

__all__ = [
    "RunView", "find_runs", "grid_points", "load_view", "parse_grid", "parse_seeds", "render",
    "render_comparison", "render_index", "write_comparison", "write_index", "write_report",
    "write_sweep",
]
