"""The discrete-output-states idea class (large idea 1.1).

Cheap to import (no torch, numpy, scikit-learn or matplotlib); the experiment lives in
:mod:`.run` (model calls, probes, sweeps), :mod:`.cluster` (clustering, choice of k,
probes; pure numpy / scikit-learn) and :mod:`.figures`.
"""

from __future__ import annotations

from typing import Any

from mi_ideas import Headline, Idea, MemoryItem, RunContext

from .config import DiscreteOutputStatesConfig
from .result import DiscreteOutputStatesResult


class DiscreteOutputStates(Idea):
    """Restrict prompts to a template family, cluster the next-token distributions into
    output states, and ask whether the states are activation plateaus.

    Seed (large idea 1.1): restrict the data distribution (e.g. "a person described by an
    adjective") so there are few output states; cluster the model's outputs and check
    whether the clusters map to activation plateaus.

    1. One clean forward over the prompts: next-token log-probs at the last position and
       the residual stream at every probed site.
    2. Cluster the distributions (``representation``; Hellinger k-means by default) for
       k = k_min..k_max and choose k (``criterion``: silhouette with a minimum, or the gap
       statistic, which can answer k = 1). Report the curves, the cluster sizes and top
       tokens, and the adjusted mutual information / Rand index of the clusters with each
       slot label of the template (e.g. trait, person, name).
    3. Probe: held-out (cross-validated) accuracy of a logistic-regression probe predicting
       the cluster from the last-position activation at each site, against the same probe
       on shuffled labels (chance) and the majority-class rate.
    4. Plateaus: for ``n_pairs`` reference prompts, interpolate the activation at ``site``
       (last position) towards a same-cluster prompt's and towards an other-cluster
       prompt's activation with the shared sweep engine (kind='target'); read KL(clean ||
       perturbed), JS and total variation (bounded) and the L2 distance of the final
       residual. The verdict "plateau-like or not" rests on onset metrics of the bounded JS
       read-out (:mod:`.onsets`): where JS reaches 10% and 50% of its endpoint and the gap
       between them (jump width: about 0 for a step, 0.39 for a quadratic), with the
       log-log exponent near alpha = 0; max-slope sharpness (about 2 for a smooth KL curve
       and for a flat-then-linear one alike) is reported next to them. Paths whose endpoint
       is below a floor are excluded and counted (``n_excluded``). Every "A vs B" is paired
       by reference prompt (Wilcoxon signed-rank, bootstrap interval). Controls: a null partition (random clusters of
       the same sizes: within / across should then not differ) and a distance-matched
       path (along the same-cluster direction, as far as the other-cluster partner is:
       separates crossing a cluster boundary from moving far).
    """

    name = "discrete-output-states"
    summary = ("Cluster next-token distributions of a template family into output states; "
               "probe them per layer and test whether they are activation plateaus.")
    size = "large"
    Config = DiscreteOutputStatesConfig
    Result = DiscreteOutputStatesResult
    remote = True
    uses_model = True
    uses_data = True
    default_data = "template:person_adjective"

    @classmethod
    def estimate_memory(cls, config: DiscreteOutputStatesConfig, subject: Any = None,
                        dataset: Any = None) -> list[MemoryItem] | None:
        """The run's peak (the dataset gives the number and length of the prompts): see
        :mod:`.memory`."""
        from .memory import estimate

        return estimate(config, subject, dataset)

    @classmethod
    def headlines(cls, result: Any) -> list[Headline]:
        probes = [k for k in result.metrics if k.startswith("probe_acc_")]
        out = [Headline("k", "best_silhouette", "output states (and the silhouette that chose k)")]
        if probes:
            last = probes[-1]
            out.append(Headline(last, last.replace("probe_acc_", "probe_shuffled_"),
                                "probe accuracy for the state vs shuffled labels"))
        out += [
            Headline("across.jump_js_median", "within_far.jump_js_median",
                     "JS jump width (onset50 - onset10): other-state vs distance-matched paths"),
            Headline("cmp.jump_js.across_vs_within_far.diff_mean",
                     "cmp.jump_js.across_vs_within_far.wilcoxon_p",
                     "paired difference of the jump width (Wilcoxon p)"),
            Headline("across.sharpness_kl_median", "within_far.sharpness_kl_median",
                     "max-slope KL sharpness (cannot tell a plateau from a smooth rise)"),
        ]
        return out

    @classmethod
    def answer(cls, result: Any) -> str:
        from .onsets import answer_sentence

        return answer_sentence(result.metrics)

    def run(self, ctx: RunContext,
            config: DiscreteOutputStatesConfig) -> DiscreteOutputStatesResult:
        from .run import run

        result = run(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
