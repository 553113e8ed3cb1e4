"""Definitions of linear-representation's metrics (no torch). Names are given without their
``SITE.`` prefix (and ``reinit.`` / ``shuffled.`` / ``cmp.`` wrappers are described by
:func:`definition`)."""

from __future__ import annotations

_CELL = ("cells are the grid's slot-value combinations; each cell's activation is the mean "
         "over its context renderings of the site's activation at the read position")

_COND_LADDER = ("The interval is conditional on the design: every concept's s is taken "
                "relative to the mean over the same concepts, so they are not independent "
                "draws; it says how much the mean depends on which of these concepts it "
                "averages, not what another concept set would give")

DEFINITIONS: dict[str, str] = {
    "additive_r2": "additive R² = 1 − Σ_c ‖h_c − ĥ_c‖² / Σ_c ‖h_c − h̄‖², summed over cells c "
                   "and dimensions, ĥ_c = μ + Σ_slot a_slot[value of c] the least-squares fit "
                   "with the full-rank sum-to-zero coding, h̄ the mean cell (" + _CELL + ")",
    "share": "variance share of the slot: Σ_c ‖a_slot[value of c]‖² / Σ_c ‖h_c − h̄‖² (its main "
             "effect's sum of squares over the total; on the full factorial grid the slots' "
             "shares add up to additive_r2)",
    "loco_cosine": "leave-one-combination-out cosine: mean over cells of cos(p_c − m_c, h_c − "
                   "m_c), p_c the additive model's prediction of cell c fitted without c (exact "
                   "hat-matrix formula), m_c the mean of the other cells",
    "loco_nn_accuracy": "leave-one-combination-out retrieval accuracy: the fraction of cells c "
                        "whose nearest (Euclidean) held-out prediction among all cells' "
                        "predictions p_1..p_N is its own p_c (chance: loco_nn_chance)",
    "interaction_share": "slot x slot interaction share: (RSS_base − RSS_base+ab) / TSS over "
                         "every (cell, context) rendering, base = additive in the slots plus "
                         "an additive context shift, +ab adds the pair's interaction columns",
    "interaction_f_ratio": "slot x slot interaction mean-square ratio: [(RSS_base − "
                           "RSS_base+ab) / ((n_a − 1)(n_b − 1))] / [RSS_cells / ((N − 1)(K − "
                           "1))], RSS_cells the residual of the saturated cell + context model "
                           "(the replicates' scatter), pooled over dimensions: about 1 when the "
                           "pair adds nothing beyond replicate noise (dimensions are not "
                           "independent, so no p-value is given)",
    "context_noise_share": "RSS_cells / TSS: the part of the variance over every (cell, "
                           "context) rendering that neither the cell nor an additive context "
                           "shift explains (context x cell interplay, the interactions' noise "
                           "floor)",
    "intensity.spearman": "mean over concepts of the Spearman ρ between the level (1 = the "
                          "weakest) and the projection p = <s_l, u_c> of the concept-specific "
                          "part s_l = h_l,c − mean_c' h_l,c' on the concept's direction u_c = "
                          "unit(mean of its prompts − mean of all ladder prompts); ρ computed "
                          "per context and averaged; ties (no spread) give no ρ",
    "intensity.spearman_ci_low": "low end of the 95% bootstrap interval of the mean over "
                                 "concepts of the per-concept ρ, resampling concepts (the "
                                 "units): percentile method, Hesterberg's expanded percentile "
                                 "interval below 10 concepts. " + _COND_LADDER,
    "intensity.spearman_ci_high": "high end of the same interval",
    "intensity.diff_cosine": "mean over concepts, contexts and l of cos(δ_l, δ_l+1), δ_l = "
                             "s_l+1 − s_l the step between consecutive levels of the "
                             "concept-specific part s_l = h_l,c − mean_c' h_l,c' (the same s "
                             "as spearman and norm_ratio): 1 when the concept's part moves "
                             "along one direction (magnitude), 0 when each step takes its own "
                             "orthogonal direction, −0.5 when the levels are unrelated points "
                             "of equal norm; a step whose norm is below 1e-4 of the part's "
                             "norm is no step (NaN: the level does not change the concept's "
                             "part)",
    "intensity.diff_cosine_ci_low": "low end of the 95% bootstrap interval of the mean over "
                                    "concepts of the per-concept diff_cosine, resampling "
                                    "concepts (expanded percentile below 10). " + _COND_LADDER,
    "intensity.diff_cosine_ci_high": "high end of the same interval",
    "intensity.raw_diff_cosine": "the step cosine on the raw activations: mean over concepts, "
                                 "contexts and l of cos(h_l+1 − h_l, h_l+2 − h_l+1). It "
                                 "includes what the intensity word adds to every concept "
                                 "alike, so it describes the level words' geometry, not the "
                                 "concept's: 1 for a shared intensity axis even when no "
                                 "concept changes (use diff_cosine for the concept)",
    "intensity.raw_diff_cosine_ci_low": "low end of the 95% bootstrap interval of the mean "
                                        "over concepts of the per-concept raw_diff_cosine, "
                                        "resampling concepts (expanded percentile below 10). "
                                        + _COND_LADDER,
    "intensity.raw_diff_cosine_ci_high": "high end of the same interval",
    "intensity.norm_ratio": "mean over concepts and contexts of ‖s_top‖ / ‖s_bottom‖, the norm "
                            "of the concept-specific part at the strongest level over that at "
                            "the weakest (1: intensity does not scale the concept's own part)",
}

GLOBAL: dict[str, str] = {
    "n_cells": "number of cells of the grid (the product of the slots' value counts)",
    "n_contexts": "number of context renderings per cell (replicates)",
    "n_params": "free parameters of the additive model beyond μ: Σ_slot (n_slot − 1)",
    "loco_nn_chance": "chance level of loco_nn_accuracy: 1 / n_cells",
    "shuffled.additive_r2_chance": "exact expectation of the additive R² with the cells' "
                                   "labels uniformly permuted: n_params / (n_cells − 1) (the "
                                   "expected projection of centred data on p random-permuted "
                                   "design columns)",
    "ladder.n_concepts": "concepts of the ladder (the units of its intervals)",
    "ladder.n_levels": "levels of the ladder",
    "ladder.n_contexts": "context renderings per (level, concept)",
}

_CMP = {
    "mean_diff": "mean over units of (model − control)",
    "ci_low": "2.5th percentile of that mean over bootstrap resamples of the units "
              "(percentile method; Hesterberg's expanded percentile interval below 10 units). "
              "The interval and the p-value are conditional on the design: the units share "
              "one fit (cells: one additive fit of all cells; concepts: s relative to the "
              "mean of the same concepts), so they are not independent draws from a "
              "population of grids; they measure the spread over these units only",
    "ci_high": "97.5th percentile of the same bootstrap",
    "p_wilcoxon": "two-sided Wilcoxon signed-rank p-value of the per-unit differences "
                  "(scipy.stats.wilcoxon), conditional on the design as the interval",
    "n_units": "units compared (finite in both conditions)",
}


def split_site(name: str) -> tuple[str, str]:
    """``"resid_post.1.additive_r2"`` -> ``("resid_post.1", "additive_r2")``."""
    import re

    m = re.match(r"^(ln_final|logits|[a-z_]+\.-?\d+)\.(.+)$", name)
    if not m:
        raise KeyError(f"no site in metric name {name!r}")
    return m.group(1), m.group(2)


def definition(name: str) -> str:
    """The definition of a full metric name (``SITE.X``, ``reinit.SITE.X``, ...)."""
    if name in GLOBAL:
        return GLOBAL[name]
    if name.startswith("cmp."):
        # cmp.SITE.WHAT.vs_CONTROL.STAT
        head, stat = name.rsplit(".", 1)
        rest = head[len("cmp."):]
        what = ("per-cell additive fit 1 − ‖h_c − ĥ_c‖² / (TSS / N) (its mean over cells is "
                "additive_r2), cells as units" if ".additive_r2." in rest else
                "per-concept intensity Spearman ρ, concepts as units")
        control = "the re-initialised model" if rest.endswith("vs_reinit") else \
            "the shuffled-label fits (per cell, averaged over the permutations)"
        return f"model vs {control}, paired by unit, {what}: {_CMP[stat]}"
    prefix = ""
    if name.startswith("reinit."):
        prefix, name = "On the re-initialised model (same architecture, fresh weights): ", \
            name[len("reinit."):]
    elif name.startswith("shuffled."):
        prefix, name = ("With the cells' labels shuffled (mean over n_shuffles uniform "
                        "permutations of which activation belongs to which cell): "), \
            name[len("shuffled."):]
    site, key = split_site(name)
    if key.startswith("share."):
        return prefix + DEFINITIONS["share"].replace("the slot", f"slot {key[6:]!r}", 1)
    if key.startswith("interaction."):
        pair, stat = key[len("interaction."):].rsplit(".", 1)
        return prefix + DEFINITIONS[f"interaction_{stat}"] + f" (pair {pair.replace('_x_', ' x ')})"
    return prefix + DEFINITIONS[key] + f" (site {site})"
