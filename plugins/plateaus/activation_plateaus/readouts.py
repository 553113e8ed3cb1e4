"""The read-outs activation-plateaus asks of the shared sweep engine (definitions only).

Onset metrics need a bounded read-out: KL keeps growing after a boundary, so "where it
reaches half its endpoint" is not where the output jumped. The engine
(``common/sweep.py``) computes them next to the model (``StatsRequest(js=True, tv=True)``:
``mi_ideas.trace_ops.stats`` on every engine, float64), so a remote run downloads four
numbers per row, never a distribution, and a local run takes the last-position path:

- ``kl``: KL(clean ‖ perturbed) of the next-token distribution at the last position, nats;
- ``l2``: L2 distance of the final residual stream (last position) from the clean run's;
- ``js``: Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q), between the
  clean (p) and perturbed (q) next-token distributions, nats (≤ ln 2);
- ``tv``: their total variation distance ½ Σ |p − q| (≤ 1).
"""

from __future__ import annotations

#: the read-outs of a relative-step (interpolation) sweep
BOUNDED = ("kl", "l2", "js", "tv")
