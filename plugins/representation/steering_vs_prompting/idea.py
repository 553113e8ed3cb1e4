"""The steering-vs-prompting idea class (short idea 3): a prompting baseline for steering,
and whether steering is harder to ignore than a prompt.

Cheap to import (no torch): the experiment lives in :mod:`.run`, the judges in
:mod:`.judges`, the statistics in :mod:`.stats`, the metrics in :mod:`.report` and the
figures in :mod:`.figures`.
"""

from __future__ import annotations

import math
from typing import Any

from mi_ideas import Headline, Idea, IdeaResult, MemoryItem, RunContext

from .config import SteeringVsPromptingConfig


class SteeringVsPrompting(Idea):
    """Steering vectors against a prompting baseline, and how much of each survives an
    instruction to ignore the concept.

    Seed (Heimersheim, short idea 3): a prompting baseline for steering ("Remember, you're
    obsessed with X" after every message); steering should be harder for the model to
    ignore. Procedure after ActAdd, CAA and AxBench (arXiv 2501.17148): per concept word, a
    steering vector at ``site`` (difference of means over every token of texts with vs
    without the word, or with ``--sae`` an SAE latent's decoder direction), added at every
    position with a coefficient swept on a first split of prompts and chosen by the mean
    harmonic score; then, on a second, disjoint split, every method is scored: the prompt
    alone, the concept instruction in the context (before the prompt, or re-inserted after
    every message), steering at the chosen coefficient, a random direction of the same
    norm (the control), and each of these after an instruction to ignore the concept.

    Scores come from judges, each replaceable by a plugin (``mi_ideas_register_judges``):
    concept presence (the concept word in the continuation), fluency (the continuation's
    geometric-mean token probability under the unsteered model given the prompt) and
    relevance (the share of continuation tokens the prompt makes more likely, tokens
    copied verbatim from the prompt counting 0); the
    harmonic mean is 0 when any is 0. Intervals are prompt-level bootstrap intervals;
    steering and prompting are compared on the same prompts (Wilcoxon signed-rank).
    ``steering.ignore.retained`` / ``prompting.ignore.retained`` say how much of each
    method's concept effect survives the ignore instruction.
    """

    name = "steering-vs-prompting"
    summary = ("Difference-of-means / SAE steering against a concept instruction in the "
               "prompt (AxBench's protocol), and how much of each survives 'Never mention X.'")
    size = "short"
    Config = SteeringVsPromptingConfig
    Result = IdeaResult
    remote = True
    uses_model = True
    uses_saes = True
    default_saes: tuple[str, ...] = ()   # --sae switches the vector to an SAE latent
    uses_data = True
    default_data = "zoo:stories:600"
    presets = {
        # the docs page's numbers: six place words, 20 + 24 prompts, 32 new tokens
        "docs": {"concepts": ["park", "beach", "forest", "garden", "farm", "school"],
                 "n_select": 20, "n_eval": 24, "max_new_tokens": 32,
                 "coefficients": [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]},
    }

    @classmethod
    def check(cls, config: SteeringVsPromptingConfig, subject: Any = None, *, dataset: Any = None,
              saes: Any = None, host: Any = None) -> None:
        """What can be checked without the model running: the judges, the site, and that the
        dataset has the prompts and vector texts (run() checks them again)."""
        from .precheck import precheck

        precheck(config, subject, dataset, saes=saes, host=host)

    @classmethod
    def estimate_memory(cls, config: SteeringVsPromptingConfig, subject: Any = None,
                        dataset: Any = None) -> list[MemoryItem] | None:
        """Float32 activations of one concept's vector texts (the largest tensor), and one
        generation batch's logits."""
        if subject is None:
            return None
        d, v = subject.d_model, subject.d_vocab
        rows = min(config.batch_size, (1 + len(config.coefficients)) * config.n_select)
        return [
            MemoryItem("activations of one concept's vector texts",
                       4 * 2 * config.vector_texts * config.max_length * d,
                       ("vector_texts", "max_length")),
            MemoryItem("one generation batch's logits", 4 * rows * v * 2,
                       ("batch_size",)),
        ]

    def run(self, ctx: RunContext, config: SteeringVsPromptingConfig) -> IdeaResult:
        from .figures import save_figures
        from .report import build_result
        from .run import run_experiment

        with ctx.torch_threads(1):
            exp = run_experiment(ctx, config)
        ctx.artifacts.save_json("samples", exp["samples"])
        result = build_result(exp, config, ctx.rng_for("bootstrap"))
        save_figures(ctx, result)
        return result

    @classmethod
    def headlines(cls, result: Any) -> list[Headline]:
        return [
            Headline("steering.harmonic", "prompting.harmonic",
                     "harmonic score: steering vs prompting (second split)"),
            Headline("steering.concept", "control.concept",
                     "concept presence: steering vs a random direction of the same norm"),
            Headline("steering_vs_prompting.harmonic.diff",
                     "steering_vs_prompting.harmonic.p_wilcoxon",
                     "paired difference steering − prompting and its Wilcoxon p"),
            Headline("steering.ignore.retained", "prompting.ignore.retained",
                     "share of the concept effect that survives 'ignore': steering vs prompting"),
        ]

    @classmethod
    def answer(cls, result: Any) -> str:
        m = result.metrics
        if "steering.harmonic" not in m:
            return ""

        def fmt(name: str) -> str:
            return (f"{m[name]:.3f} [{m[name + '.ci_low']:.3f}, {m[name + '.ci_high']:.3f}]")

        diff, p = m["steering_vs_prompting.harmonic.diff"], m["steering_vs_prompting.harmonic.p_wilcoxon"]
        if p < 0.05:
            order = "steering scores higher than prompting" if diff > 0 else \
                "prompting scores higher than steering"
        else:
            order = "no significant difference between steering and prompting"
        parts = [f"Harmonic score: steering {fmt('steering.harmonic')}, prompting "
                 f"{fmt('prompting.harmonic')}; {order} (paired Wilcoxon p = {p:.3g})."]
        if "control.concept" in m:
            parts.append(f"Concept presence: steering {fmt('steering.concept')}, random "
                         f"direction {fmt('control.concept')}, unsteered {fmt('unsteered.concept')}.")
        if "ignore_only.concept_effect" in m:
            e = m["ignore_only.concept_effect"]
            lo, hi = m["ignore_only.concept_effect.ci_low"], m["ignore_only.concept_effect.ci_high"]
            what = ("raises concept presence (the model does not obey it: it names the word "
                    "more often after being told not to)" if lo > 0 else "lowers concept presence (the model obeys it)"
                    if hi < 0 else "does not change concept presence measurably")
            parts.append(f"The ignore line alone {what}: {e:+.3f} [{lo:+.3f}, {hi:+.3f}].")
        for method in ("steering", "prompting"):
            r = m.get(f"{method}.ignore.retained")
            lo = m.get(f"{method}.concept_effect.ci_low", math.nan)
            hi = m.get(f"{method}.concept_effect.ci_high", math.nan)
            if r is None or r != r:
                parts.append(f"{method.capitalize()} has no concept effect to retain.")
            elif not (lo > 0 or hi < 0):
                # the docs' rule: a retained share is read only where the effect it divides
                # by is measurably non-zero
                parts.append(f"{method.capitalize()}'s concept effect "
                             f"{fmt(method + '.concept_effect')} is not distinguishable from 0, "
                             f"so its retained share under the ignore instruction is not "
                             f"stated.")
            else:
                parts.append(f"{method.capitalize()} retains {fmt(method + '.ignore.retained')} "
                             f"of its concept effect under the ignore instruction "
                             f"({fmt(method + '.ignore.retained_vs_ignore_only')} on top of the "
                             f"ignore line's own effect).")
        return " ".join(parts)
