"""The read-outs discrete-output-states asks of the shared sweep engine (definitions only).

Onset metrics need a bounded read-out (JS ≤ ln 2, TV ≤ 1): KL keeps growing after a
boundary, so "where it reaches half its endpoint" is not where the output jumped. The engine
(``common/sweep.py``) computes all four next to the model (``StatsRequest(js=True,
tv=True)``, ``mi_ideas.trace_ops.stats`` in float64), so a remote run downloads four numbers
per row, never a distribution:

- ``kl``: KL(clean ‖ perturbed) of the next-token distribution at the last position, nats;
- ``l2``: L2 distance of the final residual stream (last position) from the clean run's;
- ``js``: Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q), of the clean
  (p) and perturbed (q) next-token distributions, nats;
- ``tv``: their total variation distance ½ Σ |p − q|.
"""

from __future__ import annotations

#: the read-outs of the pair paths
BOUNDED = ("kl", "l2", "js", "tv")
