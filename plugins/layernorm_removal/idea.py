"""The layernorm-removal idea class (cheap to import: no torch)."""

from __future__ import annotations

import math

from mi_ideas import Headline, Idea, MemoryItem, RunContext

from .config import LNRemovalConfig
from .result import LNRemovalResult


class LayernormRemoval(Idea):
    """Remove every LayerNorm of a GPT-2 by fine-tuning, against the controls that decide it.

    Seed (medium idea 3): LN can be removed from GPT-2 small gradually while fine-tuning
    without losing much; which prompts did the model use LN for, can it be done far
    faster, how much did the weights change, and do SAEs still work?

    Each LN site (``ln_2``, ``ln_1`` split into its query/key and value paths, ``ln_f``)
    becomes a fake LN that divides by a scalar sigma, the moving average (momentum 0.9) of
    the site's std, frozen when the site is removed; position 0 and end-of-text tokens keep
    their own sigma until the schedule's ``bos_step`` / ``eot_step`` (Heimersheim 2024,
    arXiv 2409.13710; Baroni et al. 2025, arXiv 2507.02559). Schedules: ``zoo`` (tuned
    here), ``heimersheim`` and ``baroni`` (the published GPT-2-small schedules scaled to
    ``steps`` and the model's layers). Controls: the same fine-tuning with LN (same data,
    order, steps, learning rate) and removing every LN at once.

    Reports held-out loss of the original, control and LN-free models; per-token
    differences by token category and position (prompts as units) with the original
    model's LN scale there; compute to reach the control per schedule; per-matrix weight
    change; the zoo SAE's explained variance and CE recovered on each model, and a removal
    run with an SAE-keeping loss. Exports the LN-free model as a stock Hugging Face
    directory (eps = 1e12, weights rescaled; ``hf:DIR``, ``tl:DIR`` and ``tlsae:DIR`` load it)
    and a TransformerLens model without LN, where direct logit attribution is exact.
    """

    name = "layernorm-removal"
    summary = "Fine-tune LayerNorm away (fake LN, published schedules) vs the with-LN control; which tokens need LN; SAE transfer."
    size = "medium"
    Config = LNRemovalConfig
    Result = LNRemovalResult
    remote = False  # fine-tuning needs the weights here
    uses_model = True
    uses_data = True
    default_data = "zoo:stories:200"
    uses_saes = True
    presets = {
        "quick": {"steps": 40, "compare_schedules": [], "batch_rows": 4, "eval_every": 5,
                  "n_curve_texts": 16, "checkpoint_every": 10},
    }

    @classmethod
    def check(cls, config: LNRemovalConfig, subject=None, **inputs) -> None:
        """A model that cannot be fine-tuned here, or a schedule that does not finish on this
        model, is refused before the run directory exists (run() checks both again)."""
        if subject is None:
            return
        from .run import build_schedule, hf_gpt2_of

        hf_gpt2_of(subject)
        for name in {config.schedule, *config.compare_schedules}:
            build_schedule(name, config, subject.n_layers, main=name == config.schedule)

    @classmethod
    def estimate_memory(cls, config: LNRemovalConfig, subject=None, dataset=None):
        """Float32: the runs' models (kept for the analysis) plus one model's gradients and
        AdamW state; one training batch's activations (about 16 d_model-wide and 2 d_vocab-
        wide tensors per layer and token, with their gradients); the held-out logits of one
        evaluation batch of 32 texts."""
        if subject is None:
            return None
        d, L, v = subject.d_model, subject.n_layers, subject.d_vocab
        n_params = 12 * L * d * d + (v + 1024) * d
        n_runs = 2 + len(set(config.compare_schedules) - {config.schedule}) \
            + len(config.all_at_once) + int(config.sae_loss_weight > 0)
        t = config.n_ctx or 128
        f = 4
        return [
            MemoryItem("the models of every run, gradients and AdamW state", f * n_params * (n_runs + 1 + 3),
                       ("compare_schedules", "all_at_once", "sae_loss_weight")),
            MemoryItem("one training batch's activations and their gradients",
                       2 * f * config.batch_rows * t * (16 * L * d + 2 * v), ("batch_rows", "n_ctx")),
            MemoryItem("held-out per-token losses and one evaluation batch's logits",
                       f * (32 * t * v * 2 + (len(dataset) if dataset is not None else 1000) * t * (n_runs + 2)),
                       ()),
        ]

    @classmethod
    def headlines(cls, result: LNRemovalResult) -> list[Headline]:
        m = result.metrics
        sched = next((k[len("steps_to_target_"):] for k in m if k.startswith("steps_to_target_")), None)
        out = [Headline("ce_ln_free", "ce_control", "held-out loss: LN-free vs fine-tuned with LN"),
               Headline("ce_all_at_once", "ce_ln_free", "all LNs at once vs gradual removal"),
               Headline("sae_ce_recovered_ln_free", "sae_ce_recovered_original",
                        "SAE CE recovered: LN-free vs original"),
               Headline("weight_change_median_ln_free", "weight_change_median_control",
                        "median relative weight change: LN-free vs control")]
        if sched:
            out.append(Headline(f"steps_to_target_{sched}", "tokens_per_step",
                                f"steps to within target of the control ({sched})"))
        return out

    @classmethod
    def answer(cls, result: LNRemovalResult) -> str:
        m = result.metrics
        if "ce_ln_free" not in m:
            return ""
        gap, lo, hi = m["ce_gap_vs_control"], m.get("gap_per_prompt_ci_low", math.nan), \
            m.get("gap_per_prompt_ci_high", math.nan)
        verb = "costs" if gap >= 0 else "changes the loss by"
        s = (f"Removing every LayerNorm {verb} {gap:+.3f} nats against the with-LN control "
             f"(per-prompt 95% CI [{lo:+.3f}, {hi:+.3f}]; original {m['ce_original']:.3f}, control "
             f"{m['ce_control']:.3f}, LN-free {m['ce_ln_free']:.3f})")
        if "ce_gap_all_at_once_vs_control" in m:
            s += (f"; removing all at once costs {m['ce_gap_all_at_once_vs_control']:+.3f} "
                  f"({'more' if m['ce_gap_all_at_once_vs_control'] > gap else 'less'} than the "
                  f"gradual schedule)")
        if "sae_ce_recovered_ln_free" in m:
            s += (f"; the original's SAE recovers {m['sae_ce_recovered_ln_free']:.2f} of CE on the "
                  f"LN-free model vs {m['sae_ce_recovered_original']:.2f} on the original")
        return s + "."

    def run(self, ctx: RunContext, config: LNRemovalConfig) -> LNRemovalResult:
        from .run import run_ln_removal

        with ctx.torch_threads(config.threads):
            result = run_ln_removal(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
