"""The result: every metric with its definition, the details behind the figures."""

from __future__ import annotations

from typing import Any

from mi_ideas import IdeaResult

from .stats import mean_ci, paired, resample_indices, retained

SCORES = ("concept", "fluency", "relevance", "harmonic")

METHOD_TEXT = {
    "unsteered": "the prompt alone, no steering (the baseline)",
    "ignore_only": "the ignore instruction + the prompt, no steering (a nuisance baseline: "
                   "what the ignore line alone does)",
    "prompting": "the concept instruction + the prompt (the prompting baseline)",
    "prompting.ignore": "the concept instruction, then the ignore instruction, + the prompt",
    "steering": "the prompt with the steering vector added at every position, at the "
                "coefficient chosen on the first split",
    "steering.ignore": "the ignore instruction + the prompt, with the steering vector at "
                       "the chosen coefficient",
    "control": "the prompt with a random direction of the steering vector's norm added at "
               "every position (the control)",
}


def score_text(kind: str, judges: dict) -> str:
    if kind == "harmonic":
        return ("harmonic mean of the concept, fluency and relevance scores of each "
                "continuation, 0 when any of them is 0 (AxBench's zero gate); scale [0, 1]")
    name, _, description = judges[kind]
    return f"{kind} score by the judge {name!r}: {description}"


def build_result(exp: dict[str, Any], config: Any, rng: Any) -> IdeaResult:
    import numpy as np

    per = exp["per_concept"]
    judges = exp["judges"]
    words = list(per)
    conds = list(next(iter(per.values()))["eval"])
    n_eval = len(exp["split"].eval_prompts)

    def prompt_means(cond: str, kind: str) -> Any:
        """Per evaluation prompt, the score averaged over concepts (prompts are the units)."""
        return np.mean([per[w]["eval"][cond][kind] for w in words], axis=0)

    idx = resample_indices(n_eval, config.n_boot, rng)
    result = IdeaResult()
    unit = (f"over the {n_eval} evaluation prompts (second split; each prompt's score "
            f"averaged over the {len(words)} concept(s) {words})")
    ci = (f"; 95% percentile bootstrap interval over prompts ({config.n_boot} resamples, "
          f"the same resamples for every metric)")

    def add(name: str, value: Any, definition: str) -> None:
        result.add(name, value, definition)

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for cond in conds:
        summary[cond] = {}
        for kind in SCORES:
            s = mean_ci(prompt_means(cond, kind), idx)
            summary[cond][kind] = s
            base = f"Mean {score_text(kind, judges)}, for {METHOD_TEXT[cond]}, {unit}"
            add(f"{cond}.{kind}", s["mean"], base + ".")
            add(f"{cond}.{kind}.ci_low", s["ci_low"], f"Lower end of {cond}.{kind}" + ci + ".")
            add(f"{cond}.{kind}.ci_high", s["ci_high"], f"Upper end of {cond}.{kind}" + ci + ".")
        add(f"{cond}.distinct_fraction", float(prompt_means(cond, "distinct").mean()),
            f"Mean fraction of distinct token ids among a continuation's tokens, for "
            f"{METHOD_TEXT[cond]}, {unit} (a repetition check next to fluency: the unsteered "
            f"model can find repetition likely).")

    def add_share(name: str, r: dict[str, float], defn: str) -> None:
        add(name, r["mean"], defn + ".")
        for end, word in (("ci_low", "Lower"), ("ci_high", "Upper")):
            add(f"{name}.{end}", r[end],
                f"{word} end of {name}" + ci + " (resamples with no effect skipped).")

    retained_out: dict[str, dict[str, float]] = {}
    for method in ("steering", "prompting"):
        r = retained(prompt_means(f"{method}.ignore", "concept"), prompt_means(method, "concept"),
                     prompt_means("unsteered", "concept"), idx)
        retained_out[method] = r
        defn = (f"Share of {method}'s concept effect that survives the ignore instruction: "
                f"(concept[{method}.ignore] − concept[unsteered]) / (concept[{method}] − "
                f"concept[unsteered]), ratio of means {unit}; 1 = the ignore line changes "
                f"nothing, 0 = back to the unsteered rate, < 0 = below it; NaN when "
                f"concept[{method}] − concept[unsteered] ≤ 0 (no effect to retain)")
        add_share(f"{method}.ignore.retained", r, defn)
        r2 = retained(prompt_means(f"{method}.ignore", "concept"), prompt_means(method, "concept"),
                      prompt_means("unsteered", "concept"), idx,
                      ignore_baseline=prompt_means("ignore_only", "concept"))
        retained_out[f"{method}.vs_ignore_only"] = r2
        defn2 = (f"Share of {method}'s concept effect that it still adds on top of the ignore "
                 f"line alone: (concept[{method}.ignore] − concept[ignore_only]) / "
                 f"(concept[{method}] − concept[unsteered]), ratio of means {unit}. Differs from "
                 f"{method}.ignore.retained by the ignore line's own effect (concept[ignore_only] − "
                 f"concept[unsteered]), positive when the line makes the model name the word more; "
                 f"NaN when concept[{method}] − concept[unsteered] ≤ 0")
        add_share(f"{method}.ignore.retained_vs_ignore_only", r2, defn2)
        eff = mean_ci(prompt_means(method, "concept") - prompt_means("unsteered", "concept"), idx)
        add(f"{method}.concept_effect", eff["mean"],
            f"concept[{method}] − concept[unsteered] {unit}: the effect the retained shares "
            f"divide by (read them only where this interval excludes 0).")
        add(f"{method}.concept_effect.ci_low", eff["ci_low"],
            f"Lower end of {method}.concept_effect" + ci + ".")
        add(f"{method}.concept_effect.ci_high", eff["ci_high"],
            f"Upper end of {method}.concept_effect" + ci + ".")
        add(f"{method}.ignore.retained.undefined_fraction", r["undefined_fraction"],
            f"Fraction of the bootstrap resamples in which {method} had no positive concept "
            f"effect, so the retained share is undefined there (left out of its interval).")

    ig = mean_ci(prompt_means("ignore_only", "concept") - prompt_means("unsteered", "concept"), idx)
    add("ignore_only.concept_effect", ig["mean"],
        f"concept[ignore_only] − concept[unsteered] {unit}: what the ignore line alone does to "
        f"concept presence (negative: the model obeys it; positive: it names the word more "
        f"often after being told not to).")
    add("ignore_only.concept_effect.ci_low", ig["ci_low"],
        "Lower end of ignore_only.concept_effect" + ci + ".")
    add("ignore_only.concept_effect.ci_high", ig["ci_high"],
        "Upper end of ignore_only.concept_effect" + ci + ".")

    comparisons: dict[str, dict[str, float]] = {}
    pairs = [("steering_vs_prompting", "steering", "prompting"),
             ("steering_vs_prompting.ignore", "steering.ignore", "prompting.ignore")]
    if "control" in conds:
        pairs.append(("steering_vs_control", "steering", "control"))
    for label, a, b in pairs:
        for kind in ("concept", "harmonic"):
            p = paired(prompt_means(a, kind), prompt_means(b, kind), idx)
            comparisons[f"{label}.{kind}"] = p
            what = (f"per-prompt difference {kind}[{a}] − {kind}[{b}] (paired: the same "
                    f"evaluation prompts and concepts), {unit}")
            add(f"{label}.{kind}.diff", p["mean"], f"Mean {what}.")
            add(f"{label}.{kind}.ci_low", p["ci_low"], f"Lower end of the mean {what}" + ci + ".")
            add(f"{label}.{kind}.ci_high", p["ci_high"], f"Upper end of the mean {what}" + ci + ".")
            add(f"{label}.{kind}.p_wilcoxon", p["p_wilcoxon"],
                f"Two-sided Wilcoxon signed-rank p-value (scipy.stats.wilcoxon, zero "
                f"differences dropped; exact without ties, else the normal approximation with "
                f"tie correction; 1 when all differences are zero) of the {what}.")

    for w in words:
        add(f"{w}.coefficient", per[w]["chosen"],
            f"Steering coefficient chosen for {w!r} on the first split ({config.n_select} "
            f"prompts, never the evaluation prompts): the c in {list(config.coefficients)} with "
            f"the highest mean harmonic score (ties: the smallest); the added vector is c × "
            f"(mean activation norm at {exp['site']}) × unit direction.")
        add(f"{w}.activation_norm", per[w]["vector"].norm_unit,
            f"Mean L2 norm of the activations at {exp['site']} over every non-BOS position of "
            f"the texts without {w!r}: the unit of the coefficient.")
        add(f"{w}.steering.concept", float(np.mean(per[w]["eval"]["steering"]["concept"])),
            f"Mean concept score for {w!r} alone, steering at its chosen coefficient, over the "
            f"evaluation prompts.")
        add(f"{w}.prompting.concept", float(np.mean(per[w]["eval"]["prompting"]["concept"])),
            f"Mean concept score for {w!r} alone, with the concept instruction, over the "
            f"evaluation prompts.")
        if "control" in conds:
            add(f"{w}.control.norm_ratio", per[w]["control_norm_ratio"],
                f"|control vector| / |steering vector| for {w!r} (1: matched norm).")
            add(f"{w}.control.cos", per[w]["control_cos"],
                f"cos(control vector, steering vector) for {w!r} (a random direction: near 0).")

    result.details = {
        "site": exp["site"], "vector": exp["kind"], "concepts": words,
        "coefficients": [0.0, *config.coefficients],
        "judges": {k: v[0] for k, v in judges.items()},
        "sweep": {w: {f"{c:g}": per[w]["sweep"][c] for c in per[w]["sweep"]} for w in words},
        "chosen": {w: per[w]["chosen"] for w in words},
        "latents": {w: per[w]["vector"].latent for w in words},
        "vector_texts": {w: [per[w]["vector"].n_pos, per[w]["vector"].n_neg] for w in words},
        "summary": summary, "retained": retained_out, "comparisons": comparisons,
        "split": {"select": exp["split"].select, "eval": exp["split"].eval,
                  "select_prompts": exp["split"].select_prompts,
                  "eval_prompts": exp["split"].eval_prompts},
        "examples": examples(exp["samples"]),
    }
    return result


def examples(samples: list[dict], per_condition: int = 2) -> list[dict]:
    """A few evaluation continuations per condition (for the run page and the docs)."""
    out, seen = [], {}
    for s in samples:
        if s["split"] != "eval" or seen.get((s["concept"], s["condition"]), 0) >= per_condition:
            continue
        seen[(s["concept"], s["condition"])] = seen.get((s["concept"], s["condition"]), 0) + 1
        out.append({k: s[k] for k in ("concept", "condition", "shown_prompt", "continuation",
                                      "score.concept", "score.fluency", "score.relevance",
                                      "score.harmonic") if k in s})
    return out
