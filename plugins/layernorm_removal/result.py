"""Result of the layernorm-removal idea and the definition of every fixed-name metric (no torch)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mi_ideas import IdeaResult

_HELD = ("mean next-token cross-entropy (nats) over every predicted token of the held-out "
         "texts (--data), each scored as [eot] text [eot] cut at n_ctx")

DEFINITIONS: dict[str, str] = {
    "ce_original": f"{_HELD}, original model (with LayerNorm, before fine-tuning)",
    "ce_control": f"{_HELD}, the control: fine-tuned with LayerNorm for the same steps, data, "
                  "order and learning rate as the removal run",
    "ce_ln_free": f"{_HELD}, the LN-free model of the main schedule (every LN a fixed sigma, no "
                  "special positions)",
    "ce_gap_vs_control": "ce_ln_free - ce_control (nats): what removing LN costs beyond fine-tuning",
    "ce_all_at_once": f"{_HELD}, the control that removes every LN and both special cases at the "
                      "main schedule's first removal step, same steps otherwise",
    "ce_gap_all_at_once_vs_control": "ce_all_at_once - ce_control (nats)",
    "ce_all_at_once_last": f"{_HELD}, the control that removes every LN and both special cases at "
                           "the main schedule's last removal step (the same LN-free recovery steps)",
    "ce_gap_all_at_once_last_vs_control": "ce_all_at_once_last - ce_control (nats)",
    "ln_free_is_fully_removed": "1 if the main run's final model has every site removed and no "
                                "special-position sigma, else 0",
    "gap_per_prompt_mean": "mean over held-out prompts of each prompt's mean per-token (ln-free - "
                           "control) loss difference (nats; prompts are the units, paired)",
    "gap_per_prompt_ci_low": "lower end of the 95% t-interval of gap_per_prompt_mean",
    "gap_per_prompt_ci_high": "upper end of the 95% t-interval of gap_per_prompt_mean",
    "gap_per_prompt_p_wilcoxon": "two-sided Wilcoxon signed-rank p-value of the per-prompt "
                                 "differences against 0",
    "n_prompts": "held-out prompts compared",
    "n_tokens": "held-out predicted tokens compared",
    "spearman_gap_vs_ln_scale_deviation": "Spearman correlation over held-out tokens between the "
        "(ln-free - control) loss difference and |log| of the original model's relative LN scale "
        "at the predicting position (geometric mean over sites of std_token / mean std of the site)",
    "tokens_per_step": "training tokens per optimiser step (batch_rows x n_ctx)",
    "control_curve_loss": "the control's final held-out loss on the first n_curve_texts texts (the "
                          "reference of the steps_to_target_* metrics)",
    "gpt2_small_tokens_per_s_cpu": "CPU MEASUREMENT: tokens per second of one fake-LN AdamW training "
        "step (best of 2 after a warm-up) of a GPT-2-small-sized model (GPT2Config(), random weights), "
        "batch 1 x gpt2_small_tokens",
    "gpt2_small_fake_ln_overhead": "CPU MEASUREMENT: fake-LN step time / plain Hugging Face step time "
                                   "- 1 on the GPT-2-small-sized model",
    "weight_change_median_ln_free": "median over weight matrices of ||W_ln_free - W_original||_F / "
                                    "||W_original||_F",
    "weight_change_median_control": "median over weight matrices of ||W_control - W_original||_F / "
                                    "||W_original||_F (fine-tuning alone)",
    "weight_change_median_ln_free_vs_control": "median over weight matrices of ||W_ln_free - "
                                               "W_control||_F / ||W_control||_F",
    "weight_change_max_ln_free": "largest ||W_ln_free - W_original||_F / ||W_original||_F over matrices",
    "ce_ln_free_sae_loss": f"{_HELD}, the LN-free model of the main schedule trained with the "
                           "extra SAE loss (sae_loss_weight x (1 - EV) at the SAE's hook)",
    "sae_loss_ce_cost": "ce_ln_free_sae_loss - ce_ln_free (nats): what keeping the SAE working costs",
    "export_hf_max_abs_logit_diff": "max |logit| difference, over 16 held-out texts, between the "
        "exported stock Hugging Face directory (loaded by AutoModelForCausalLM, no custom code) and "
        "the fake-LN model",
    "export_tl_max_abs_logit_diff": "max |logit| difference between the exported TransformerLens "
                                    "model (normalization_type=None) and the fake-LN model",
    "dla_max_abs_residual": "max over positions and vocabulary of |logits - sum of direct "
        "contributions| of the exported TransformerLens model (embeddings, every head, attention "
        "biases, every MLP, b_U)",
    "wall_seconds": "wall time of the whole run (seconds)",
}
for _k, _what in (("original", "the original model"), ("control", "the with-LN control"),
                  ("ln_free", "the LN-free model"),
                  ("ln_free_sae_loss", "the LN-free model trained with the SAE loss")):
    DEFINITIONS[f"sae_ev_{_k}"] = (
        f"explained variance 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 of the SAE (trained on "
        f"the original model) on {_what}'s activations at its hook, held-out tokens, position 0 "
        f"excluded")
    DEFINITIONS[f"sae_ce_recovered_{_k}"] = (
        f"(CE_mean_ablated - CE_spliced) / (CE_mean_ablated - CE_clean) on {_what}: the SAE's "
        f"reconstruction vs the mean activation spliced in at positions >= 1")


class LNRemovalResult(IdeaResult):
    """Metrics (flat, each defined), per-run schedules; details hold the curves, the
    per-token tables, weight changes, SAE numbers and sigmas."""

    schedules: dict[str, Any] = Field(default_factory=dict,
                                      description="Each run's schedule (None for the control).")
