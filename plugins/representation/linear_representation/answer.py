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
    rho = m.get(f"{site}.intensity.spearman")
    if rho is not None and rho != rho:  # NaN: the part's projection does not vary
        parts.append("on the intensity ladder the concept-specific part does not move with "
                     "the level (Spearman ρ undefined): intensity is not one magnitude along "
                     "the concept's direction")
    elif rho is not None:
        lo, hi = (m.get(f"{site}.intensity.spearman_ci_{e}", float("nan")) for e in ("low", "high"))
        ratio = m.get(f"{site}.intensity.norm_ratio", float("nan"))
        cos = m.get(f"{site}.intensity.diff_cosine", float("nan"))
        parts.append(f"on the intensity ladder the Spearman ρ between level and the projection "
                     f"of the concept-specific part on the concept's direction is {rho:.2f} "
                     f"[{lo:.2f}, {hi:.2f}], that part's norm grows {ratio:.2f}x from the "
                     f"weakest to the strongest level and its consecutive steps have cosine "
                     f"{cos:.2f}: " + ("intensity looks like magnitude along the concept's "
                                       "direction" if is_magnitude(rho, lo, ratio, cos) else
                                       "intensity is not one magnitude along the concept's "
                                       "direction"))
    return "; ".join(parts) + "."


#: the norm ratio ‖s_top‖ / ‖s_bottom‖ a magnitude code must reach (10% growth; 1 = none)
MIN_NORM_RATIO = 1.1
#: the concept-specific part's consecutive steps must be this aligned (1: one direction)
MIN_STEP_COSINE = 0.5


def is_magnitude(rho: float, rho_low: float, norm_ratio: float, step_cosine: float) -> bool:
    """The verdict "intensity is magnitude along the concept's direction", from the concept-
    specific part only: the level orders its projection (ρ's interval above 0), its norm
    grows (ratio ≥ MIN_NORM_RATIO) and its steps share a direction (cosine ≥
    MIN_STEP_COSINE; NaN, no step at all, fails). The raw-activation step cosine is not
    used: a shared intensity axis makes it 1 with no concept change."""
    vals = (rho, rho_low, norm_ratio, step_cosine)
    if not all(v == v for v in vals):
        return False
    return rho_low > 0 and norm_ratio >= MIN_NORM_RATIO and step_cosine >= MIN_STEP_COSINE
