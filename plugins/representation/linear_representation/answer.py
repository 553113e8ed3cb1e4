"""The one-sentence answer of a linear-representation run, derived from its numbers."""

from __future__ import annotations

from typing import Any


def answer_text(result: Any) -> str:
    """What the headline site's numbers say, next to their controls (plain text)."""
    m, d = result.metrics, result.details or {}
    site = d.get("headline_site")
    if not site or f"{site}.additive_r2" not in m:
        return ""
    r2, chance = m[f"{site}.additive_r2"], m.get("shuffled.additive_r2_chance", float("nan"))
    shuf = m.get(f"shuffled.{site}.additive_r2", float("nan"))
    re = m.get(f"reinit.{site}.additive_r2")
    parts = [f"At {site} the grid's cells are {'close to ' if r2 >= 0.9 else ''}additive in the "
             f"slots (additive R² {r2:.3f}; shuffled labels {shuf:.3f}, expected {chance:.3f}"
             + (f"; re-initialised model {re:.3f}" if re is not None else "") + ")"]
    if re is not None and re >= r2 - 0.02:
        parts.append("but a re-initialised network is as additive, so additivity alone says "
                     "nothing about what training learned")
    acc, nn_chance = m.get(f"{site}.loco_nn_accuracy"), m.get("loco_nn_chance")
    if acc is not None:
        parts.append(f"held-out combinations are retrieved from their predicted sum "
                     f"{acc:.0%} of the time (chance {nn_chance:.1%})")
    rho, cos = m.get(f"{site}.intensity.spearman"), m.get(f"{site}.intensity.diff_cosine")
    if rho is not None:
        lo, hi = m.get(f"{site}.intensity.spearman_ci_low"), m.get(f"{site}.intensity.spearman_ci_high")
        mag = (rho == rho and lo == lo and lo > 0 and cos == cos and cos > 0.5)
        parts.append(f"on the intensity ladder the Spearman ρ between level and the projection "
                     f"on the concept's direction is {rho:.2f} [{lo:.2f}, {hi:.2f}] and "
                     f"consecutive steps have cosine {cos:.2f}: " + ("intensity looks like magnitude along one direction"
                                        if mag else "intensity is not one magnitude along the "
                                        "concept's direction"))
    return "; ".join(parts) + "."
