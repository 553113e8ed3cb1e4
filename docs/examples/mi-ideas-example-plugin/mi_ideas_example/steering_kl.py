"""A model-using example idea: is the mean-activation direction special for steering?

Adds a vector of a fixed length at one site of the model (at every position) and measures
how far the next-token distribution at the last token moves (KL against the clean run).
The treatment is the mean activation's direction at that site; the control is a random
direction of the same length. A third direction, the all-ones vector, is a planted null:
every read of a residual-stream site goes through a LayerNorm, which subtracts each
token's mean over the d_model components, so on a LayerNorm model adding c * (1, ..., 1)
to the residual stream changes nothing and its KL must be 0.

Everything it needs comes from the host: ``ctx.subject`` (the model, ``--model``),
``ctx.dataset`` (``--data``), ``ctx.harvest`` (activations streamed to disk and cached),
``Intervention`` and ``StatsRequest`` for the steered runs (so the KL is computed next to
the model, server-side when the run is remote).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from mi_ideas import Headline, Idea, IdeaConfig, IdeaResult, RunContext


class SteeringKLConfig(IdeaConfig):
    site: str = Field("resid_pre.2", description="Residual-stream site where the vector is added.")
    lengths: list[float] = Field(
        [0.5, 1.0, 2.0],
        description="Lengths of the added vector, in units of the mean activation norm at the "
        "site; the headline metrics use the last (largest). Length 0 is always run as well.",
    )
    n_random: int = Field(4, ge=1, le=64, description="Random directions (the control), averaged.")
    n_prompts: int = Field(16, ge=1, description="Texts of the dataset whose last token is scored.")
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass.")
    max_length: int = Field(32, ge=2, description="Tokens per text (harvest and prompts).")

    @field_validator("lengths")
    @classmethod
    def _ascending_positive(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v) or v != sorted(v):
            raise ValueError("lengths must be a non-empty ascending list of positive numbers")
        return v


DEFINITIONS = {
    "kl_mean_direction": "Mean over prompts of KL(clean || steered) in nats at the last token, "
    "adding the unit mean-activation direction times the largest length at every position.",
    "kl_random": "The same KL for random isotropic unit directions of the same length (the "
    "control), averaged over n_random directions.",
    "kl_ratio_mean_vs_random": "kl_mean_direction / kl_random (above 1: the mean direction moves "
    "the output more than a random direction of the same norm).",
    "kl_ones": "The same KL along the unit all-ones direction: a planted null, 0 up to float "
    "error on a LayerNorm model (LayerNorm removes each token's mean over components).",
    "kl_at_zero": "Largest KL over prompts when a zero vector is added (a planted check: 0).",
    "activation_norm": "Mean L2 norm of the harvested activations at the site (the unit of "
    "length).",
    "mean_norm_fraction": "L2 norm of the mean activation / activation_norm.",
    "n_rows": "Harvested activation rows (token positions, BOS skipped) the mean is taken over.",
}


class SteeringKL(Idea):
    """Steer along the mean-activation direction vs. a random direction of the same norm.

    Harvests the site's activations over the dataset (``ctx.harvest``), takes their mean
    direction, and adds it at every position, at several lengths, to the first n_prompts
    texts; reports the mean KL of the last token's next-token distribution against the
    clean run, next to random directions of the same length (the control), the all-ones
    direction (a planted null on LayerNorm models) and a zero vector (a planted check).
    """

    name = "example-steering-kl"
    summary = "KL from steering along the mean activation vs. a random direction (example plugin)."
    size = "short"
    Config = SteeringKLConfig
    Result = IdeaResult
    uses_model = True                        # gets ctx.subject; --model overrides the default
    default_model = "zoo:stories-gpt2"
    uses_data = True                         # gets ctx.dataset; --data overrides the default
    default_data = "zoo:stories:64"
    remote = True                            # every model call goes through ctx.subject

    def run(self, ctx: RunContext, config: SteeringKLConfig) -> IdeaResult:
        import torch

        from mi_ideas.subject import Intervention, StatsRequest

        subject = ctx.subject
        site = subject.site(config.site).name
        acts = ctx.harvest([site], positions="all", max_length=config.max_length)
        x = acts.load(site)                  # (n_rows, d_model), one row per token
        mean = x.mean(0)
        unit = float(x.norm(dim=1).mean())
        d = subject.d_model
        random = torch.randn(config.n_random, d, generator=ctx.generator)
        directions = {
            "mean_direction": (mean / mean.norm())[None],
            "random": random / random.norm(dim=1, keepdim=True),
            "ones": torch.ones(1, d) / math.sqrt(d),
        }
        ctx.log(f"{site}: {acts.n_rows} rows, mean norm {unit:.3f}, "
                f"|mean| / norm {float(mean.norm()) / unit:.3f}")

        texts = ctx.dataset.texts[:config.n_prompts]
        lengths = [0.0, *config.lengths]
        kl = {name: torch.zeros(len(lengths), len(dirs), len(texts))
              for name, dirs in directions.items()}
        for start in range(0, len(texts), config.batch_size):
            batch = subject.tokenize(texts[start:start + config.batch_size],
                                     max_length=config.max_length)
            stop = start + len(batch)
            request = StatsRequest(positions="last", kl_reference=subject.logprobs(batch))
            for name, dirs in directions.items():
                for i, length in enumerate(lengths):
                    for j, v in enumerate(dirs):
                        out = subject.forward(batch, stats=request, interventions=[
                            Intervention(site, "add", length * unit * v)])
                        kl[name][i, j, start:stop] = out.stats["kl"].float()

        kl_mean, kl_random = float(kl["mean_direction"][-1].mean()), float(kl["random"][-1].mean())
        result = IdeaResult(details={
            "lengths": lengths,
            "kl_curves": {name: k.mean((1, 2)).tolist() for name, k in kl.items()},
        })

        def add(name: str, value) -> None:  # every metric with its definition
            result.add(name, value, DEFINITIONS[name])

        add("kl_mean_direction", kl_mean)
        add("kl_random", kl_random)
        add("kl_ratio_mean_vs_random", kl_mean / kl_random if kl_random > 0 else float("nan"))
        add("kl_ones", kl["ones"][-1].mean())
        add("kl_at_zero", max(float(k[0].max()) for k in kl.values()))
        add("activation_norm", unit)
        add("mean_norm_fraction", mean.norm() / unit)
        add("n_rows", acts.n_rows)
        tensors = {**{f"kl_{n}": k for n, k in kl.items()},
                   **{f"dir_{n}": v for n, v in directions.items()}}
        ctx.artifacts.save_tensors("steering_kl", tensors,
                                   {"site": site, "kl": "KL(clean || steered), nats, last token"})
        return result

    @classmethod
    def estimate_memory(cls, config: SteeringKLConfig, subject=None, dataset=None):
        """The harvested activations (up to max_length tokens of every text x d_model,
        float32, loaded at once) and one forward's logits (batch x max_length x vocab)."""
        from mi_ideas import MemoryItem

        d, vocab = subject.d_model, subject.d_vocab
        n_rows = (len(dataset) if dataset is not None else 64) * config.max_length
        return [
            MemoryItem("harvested activations", 4 * n_rows * d, ("max_length",)),
            MemoryItem("one forward's logits", 4 * config.batch_size * config.max_length * vocab,
                       ("batch_size", "max_length")),
        ]

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        """The steered KL against random directions of the same norm, and the planted nulls."""
        return [
            Headline("kl_mean_direction", "kl_random", "KL along the mean direction vs random"),
            Headline("kl_ratio_mean_vs_random", None, "mean-direction KL / random KL"),
            Headline("kl_ones", "kl_at_zero", "planted nulls: all-ones vs zero vector"),
        ]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        """A ratio within [2/3, 3/2] of the random control is called no clear difference."""
        m = result.metrics
        a, b, ratio = m["kl_mean_direction"], m["kl_random"], m["kl_ratio_mean_vs_random"]
        if not math.isfinite(ratio):
            return f"No comparison: random directions moved nothing (KL {b:.3g} nats)."
        how = ("more than" if ratio > 1.5 else "less than" if ratio < 2 / 3
               else "about as much as (no clear difference from)")
        return (f"Steering along the mean activation moves the next-token distribution {how} "
                f"random directions of the same norm: KL {a:.3g} vs {b:.3g} nats ({ratio:.2f}x); "
                f"the planted nulls give {m['kl_ones']:.1g} (all-ones) and {m['kl_at_zero']:.1g} "
                f"(zero vector).")
