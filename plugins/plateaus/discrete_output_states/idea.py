"""The discrete-output-states idea (large idea 1.1): config, result and idea class.

Cheap to import (no torch, numpy, scikit-learn or matplotlib); the experiment lives in
:mod:`.dos_run` (model calls, probes, sweeps), :mod:`.dos_cluster` (clustering, choice of
k, probes; pure numpy / scikit-learn) and :mod:`.dos_figures`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mi_ideas import Idea, IdeaConfig, IdeaResult, RunContext


class DiscreteOutputStatesConfig(IdeaConfig):
    """Settings of the discrete-output-states experiment.

    The prompt family is the run's ``--data`` (default ``template:person_adjective``);
    every random choice (prompt subset, k-means starts, probe folds, pairs, the null
    partition) is drawn from the run's ``--seed``.
    """

    max_prompts: int = Field(
        256, ge=8,
        description="Use at most this many prompts of the dataset (a random subset, drawn "
        "from the run's seed, when the dataset is larger).",
    )
    representation: Literal["hellinger", "logprob", "js"] = Field(
        "hellinger",
        description="What is clustered: 'hellinger' = k-means on sqrt(p) (Euclidean "
        "distance = sqrt(2) x Hellinger distance; weights tokens by probability), "
        "'logprob' = k-means on log-probs clamped at logprob_floor, 'js' = average-linkage "
        "agglomerative clustering on Jensen-Shannon distances.",
    )
    logprob_floor: float = Field(
        -20.0, lt=0, description="Clamp for log-probs in the 'logprob' representation (nats)."
    )
    k_min: int = Field(2, ge=2, description="Smallest k tried by the silhouette criterion.")
    k_max: int = Field(
        16, ge=2, description="Largest k tried (both criteria); capped at n_prompts - 1."
    )
    criterion: Literal["silhouette", "gap"] = Field(
        "silhouette",
        description="How k is chosen: 'silhouette' = the k in k_min..k_max with the largest "
        "mean silhouette, or k = 1 when that is below min_silhouette; 'gap' = the gap "
        "statistic (Tibshirani et al. 2001) over k = 1..k_max, the smallest k with "
        "Gap(k) >= Gap(k+1) - s(k+1). Both curves are reported either way.",
    )
    min_silhouette: float = Field(
        0.5, ge=-1, le=1,
        description="Silhouette criterion: below this best mean silhouette the answer is "
        "k = 1, no discrete states (Kaufman & Rousseeuw: <= 0.5 is weak structure that "
        "may be artificial, > 0.5 reasonable, > 0.7 strong).",
    )
    kmeans_restarts: int = Field(10, ge=1, description="k-means restarts (n_init) per k.")
    gap_references: int = Field(
        10, ge=2, description="Gap statistic: uniform reference sets per k."
    )
    stability_resamples: int = Field(
        5, ge=1,
        description="Cluster stability: random 80% subsets of the prompts re-clustered "
        "with the chosen k and compared with the full clustering (adjusted Rand index).",
    )
    probe_sites: list[str] | None = Field(
        None,
        description="Sites probed for the cluster label, at the last position; None means "
        "resid_pre.0 (token + position embedding) and resid_post.L for every layer.",
    )
    probe_folds: int = Field(5, ge=2, description="Cross-validation folds of the probe.")
    probe_c: float = Field(
        1.0, gt=0, description="Inverse L2 regularisation strength of the logistic probe."
    )
    probe_shuffles: int = Field(
        3, ge=1, description="Shuffled-label control: label permutations per site."
    )
    site: str = Field(
        "resid_pre.1",
        description="Where pairs are interpolated (a resid_pre.L site, last position), "
        "with the shared sweep engine, kind='target'.",
    )
    n_pairs: int = Field(
        48, ge=2,
        description="Reference prompts; each gets a same-cluster partner, an other-cluster "
        "partner, a distance-matched same-cluster path and two null-partition partners.",
    )
    n_steps: int = Field(21, ge=3, description="Interpolation steps, alpha = 0..1 inclusive.")
    kl_threshold: float = Field(
        0.5, gt=0,
        description="KL (nats) a curve must exceed to count as having left its start's "
        "output state (plateau length = first step above it).",
    )
    rows_per_forward: int = Field(
        512, ge=1, description="Sweep rows (prompt x path x step) per forward pass."
    )

    @model_validator(mode="after")
    def _check(self) -> "DiscreteOutputStatesConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min}).")
        if self.criterion == "gap" and self.representation == "js":
            raise ValueError("the gap criterion needs a Euclidean representation "
                             "(hellinger or logprob), not js.")
        return self


class DiscreteOutputStatesResult(IdeaResult):
    """Metrics are flat floats, each defined in ``definitions``; ``details`` hold the
    k-selection curves, per-site probe scores, cluster summaries and median curves."""

    k: int | None = Field(None, description="The number of output states chosen.")


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
       perturbed) and the L2 distance of the final residual; sharpness of each curve
       (plugins/plateaus/metrics.py: 1 for a linear response, ~2 for a smooth quadratic
       KL, >> 1 for a plateau and a jump). Controls: a null partition (random clusters of
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

    def run(self, ctx: RunContext,
            config: DiscreteOutputStatesConfig) -> DiscreteOutputStatesResult:
        from .dos_run import run

        result = run(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
