"""The layernorm-removal run: data, the runs and controls, the three questions, export."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from mi_ideas.errors import ConfigError, UsageError

from . import schedule as sched
from .analysis import compare_tokens, ln_scales, sae_metrics, token_categories, weight_change
from .config import LNRemovalConfig
from .model import FakeLNGPT2, export_hf, export_tl
from .result import DEFINITIONS, LNRemovalResult
from .train import RunOutput, make_eval_set, mean_loss, per_token_nll, steps_to_target, train_run


def hf_gpt2_of(subject: Any):
    """The local Hugging Face GPT-2 behind ``subject``, or a UsageError saying what to pass."""
    module = getattr(getattr(subject, "model", None), "_module", None)
    if module is None or getattr(getattr(module, "config", None), "model_type", None) != "gpt2" \
            or getattr(subject, "remote", False):
        raise UsageError(
            f"layernorm-removal fine-tunes a local Hugging Face GPT-2 (GPT2LMHeadModel), and "
            f"{getattr(subject, 'spec', subject)!r} is not one (back-end "
            f"{getattr(subject, 'backend', '?')}). Pass --model zoo:stories-gpt2 or --model "
            f"hf:DIR with a GPT-2 directory (TransformerLens and remote models cannot be "
            f"fine-tuned here)."
        )
    return module


def build_schedule(name: str, config: LNRemovalConfig, n_layers: int, main: bool) -> sched.Schedule:
    """A published / zoo schedule scaled to the run, with the config's overrides on the main one."""
    s = sched.scaled(sched.PUBLISHED[name], config.steps, n_layers)
    if main:
        s = sched.with_overrides(s, ln2_start=config.ln2_start, ln2_gap=config.ln2_gap,
                                 ln1qk_start=config.ln1qk_start, ln1qk_gap=config.ln1qk_gap,
                                 ln1v_start=config.ln1v_start, ln1v_gap=config.ln1v_gap,
                                 lnf_step=config.lnf_step, eot_step=config.eot_step,
                                 bos_step=config.bos_step)
    last = s.last_removal()
    if last >= config.steps:
        raise ConfigError(
            f"schedule {s.name!r} removes its last LayerNorm at step {last}, but the runs have "
            f"only steps={config.steps}: nothing would be trained LN-free. Raise steps, or "
            f"lower the removal overrides (ln2_start ... bos_step) so every removal happens "
            f"before the end."
        )
    return s


def train_rows_for(tokenizer, config: LNRemovalConfig, n_ctx: int, eot: int, seed: int) -> np.ndarray:
    """Fine-tuning rows from freshly generated zoo stories (a seed namespace neither the zoo
    model's training corpus nor ``zoo:stories`` datasets use), packed like the zoo's."""
    from mi_ideas.data.stories import generate_stories
    from mi_ideas.zoo.build.lm import encode_texts, pack_rows

    need = config.steps * config.batch_rows
    n_stories = config.n_train_stories or max(50, int(need * n_ctx / 60) + 50)
    stories = generate_stories(n_stories, seed=f"layernorm-removal-train-{seed}")
    rows = pack_rows(encode_texts(tokenizer, [s.text for s in stories]), n_ctx, eot)
    if rows.shape[0] < config.batch_rows:
        raise ConfigError(f"n_train_stories={n_stories} packs into {rows.shape[0]} rows of "
                          f"{n_ctx} tokens, fewer than batch_rows={config.batch_rows}: raise "
                          f"n_train_stories (or leave it None).")
    return rows


def run_ln_removal(ctx: Any, config: LNRemovalConfig) -> LNRemovalResult:
    t_start = time.perf_counter()
    hf = hf_gpt2_of(ctx.subject)
    tok = ctx.subject.tokenizer
    eot = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    n_layers = hf.config.n_layer
    n_ctx = min(config.n_ctx or 128, hf.config.n_positions)
    main = build_schedule(config.schedule, config, n_layers, main=True)
    others = [build_schedule(n, config, n_layers, main=False)
              for n in config.compare_schedules if n != config.schedule]
    lr = config.lr or main.lr
    aux_w = main.aux_loss_weight if config.aux_loss_weight is None else config.aux_loss_weight

    rows = train_rows_for(tok, config, n_ctx, eot, ctx.seed)
    order = ctx.rng_for("train-order").permutation(rows.shape[0])
    ds = ctx.dataset
    ev_rows, cats = token_categories(tok, ds.texts, ds.spans, n_ctx, eot)
    ev = make_eval_set(ev_rows, eot)
    ctx.log(f"layernorm-removal: {rows.shape[0]} training rows of {n_ctx} tokens, "
            f"{len(ev_rows)} held-out texts; main schedule {main.name}, last removal at step "
            f"{main.last_removal()} of {config.steps}")

    original = FakeLNGPT2(hf, eot, config.momentum).eval()
    sae, sae_layer = _sae_of(ctx)

    def run(name: str, s: sched.Schedule | None, aux: float, sae_weight: float = 0.0) -> RunOutput:
        ctx.log(f"  run {name} ...")
        return train_run(ctx, name, original, s, rows, order, ev, config, config.steps, lr,
                         main.warmup_steps, main.min_lr_frac, aux_weight=aux, sae=sae,
                         sae_layer=sae_layer, sae_weight=sae_weight)

    runs: dict[str, RunOutput] = {"control": run("control", None, 0.0)}
    runs[main.name] = run(main.name, main, aux_w)
    for s in others:
        runs[s.name] = run(s.name, s, s.aux_loss_weight if config.aux_loss_weight is None
                           else config.aux_loss_weight)
    for at in config.all_at_once:
        name = "all-at-once" if at == "first" else "all-at-once-last"
        runs[name] = run(name, sched.all_at_once(main, at), aux_w)
    if sae is not None and config.sae_loss_weight > 0:
        runs["sae-loss"] = run("sae-loss", main, aux_w, config.sae_loss_weight)

    result = LNRemovalResult(schedules={k: r.schedule for k, r in runs.items()})

    def add(name: str, value: Any, definition: str | None = None) -> None:
        result.add(name, value, definition or DEFINITIONS[name])

    # ---- losses on the held-out texts ------------------------------------------------
    valid = ev.target_valid
    nll = {"original": per_token_nll(original, ev)}
    for k, r in runs.items():
        nll[k] = per_token_nll(r.model, ev)
    free, ctrl = runs[main.name].model, runs["control"].model
    add("ce_original", mean_loss(nll["original"], valid))
    add("ce_control", mean_loss(nll["control"], valid))
    add("ce_ln_free", mean_loss(nll[main.name], valid))
    add("ce_gap_vs_control", result.metrics["ce_ln_free"] - result.metrics["ce_control"])
    for k in ("all-at-once", "all-at-once-last"):
        if k in runs:
            key = k.replace("-", "_")
            add(f"ce_{key}", mean_loss(nll[k], valid))
            add(f"ce_gap_{key}_vs_control", result.metrics[f"ce_{key}"] - result.metrics["ce_control"])
    add("ln_free_is_fully_removed", float(free.fully_removed()))

    # ---- question 1: which tokens need LN --------------------------------------------
    scale = ln_scales(original, ev)
    q1 = compare_tokens(nll[main.name], nll["control"], ev, cats, scale, tok, config.top_k)
    ov = q1["overall"]
    add("gap_per_prompt_mean", ov["mean"])
    add("gap_per_prompt_ci_low", ov["ci_low"])
    add("gap_per_prompt_ci_high", ov["ci_high"])
    add("gap_per_prompt_p_wilcoxon", ov["p_wilcoxon"])
    add("n_prompts", ov["n"])
    add("n_tokens", q1["n_tokens"])
    worst = q1["by_category"][0] if q1["by_category"] else None
    if worst is not None:
        add("worst_category_gap", worst["mean_diff"],
            f"mean per-prompt (ln-free - control) loss difference of the worst target-token "
            f"category, '{worst['group']}' ({worst['n_tokens']} tokens in {worst['n_prompts']} "
            f"prompts; 95% t-interval [{worst['ci_low']:.4f}, {worst['ci_high']:.4f}], Wilcoxon "
            f"p = {worst['p_wilcoxon']:.3g})")
    add("spearman_gap_vs_ln_scale_deviation", q1["spearman_diff_vs_abs_log_scale"])

    # ---- question 2: compute to reach the control -----------------------------------
    target = result.metrics["ce_control"]
    target_curve = mean_loss(per_token_nll(ctrl, ev, rows=slice(0, min(config.n_curve_texts, ev.ids.shape[0]))),
                             valid[:config.n_curve_texts])
    compute: dict[str, Any] = {}
    tokens_per_step = config.batch_rows * n_ctx
    for k, r in runs.items():
        if k == "control":
            continue
        hit = steps_to_target(r.history, target_curve + config.target_nats)
        secs = None
        if hit is not None:
            secs = r.history["seconds"][r.history["eval_step"].index(hit)]
        compute[k] = {"steps": hit, "tokens": None if hit is None else hit * tokens_per_step,
                      "seconds": secs, "final_curve_loss": r.history["eval_loss"][-1],
                      "last_removal": None if r.schedule is None else r.schedule["last_removal"]}
    ctrl_curve = dict(zip(runs["control"].history["eval_step"], runs["control"].history["eval_loss"]))
    for k, r in runs.items():
        if k == "control":
            continue
        gaps = [loss - ctrl_curve[st] for st, loss in zip(r.history["eval_step"], r.history["eval_loss"])
                if st in ctrl_curve]
        add(f"peak_gap_{k.replace('-', '_')}", max(gaps),
            f"largest (run - control) held-out loss difference over the evaluations (every "
            f"{config.eval_every} steps, first {config.n_curve_texts} texts) of the '{k}' run: "
            f"the removal spike")
    for s in [main, *others]:
        c = compute[s.name]
        add(f"steps_to_target_{s.name}", math.nan if c["steps"] is None else c["steps"],
            f"first evaluation step (every {config.eval_every} steps) at which the '{s.name}' run "
            f"is fully LN-free and its held-out loss on the first {config.n_curve_texts} texts is "
            f"<= the control's final loss there + {config.target_nats} nats (NaN: never)")
        add(f"seconds_to_target_{s.name}", math.nan if c["seconds"] is None else c["seconds"],
            f"training wall time (seconds, evaluation excluded, this CPU, {config.threads} "
            f"thread(s)) of the '{s.name}' run up to steps_to_target_{s.name}")
        add(f"ce_final_{s.name}", mean_loss(nll[s.name], valid),
            f"held-out loss of the '{s.name}' run's final model (nats, all held-out texts)")
    add("tokens_per_step", tokens_per_step)
    add("control_curve_loss", target_curve)
    result.details["compute"] = compute
    result.details["curves"] = {k: {"eval_step": r.history["eval_step"], "eval_loss": r.history["eval_loss"],
                                    "eval_ln_free": r.history["eval_ln_free"],
                                    "train_loss": r.history["train_loss"]}
                                for k, r in runs.items()}
    result.details["curves"]["original"] = {"eval_loss": runs["control"].history["eval_loss"][0]}
    if config.gpt2_small_step:
        small = gpt2_small_throughput(config.gpt2_small_tokens)
        add("gpt2_small_tokens_per_s_cpu", small["tokens_per_s"])
        add("gpt2_small_fake_ln_overhead", small["overhead"])
        for s in (sched.HEIMERSHEIM, sched.BARONI):
            tokens = s.total_steps * s.tokens_per_step
            add(f"gpt2_small_{s.name}_cpu_hours_extrapolated", tokens / small["tokens_per_s"] / 3600,
                f"EXTRAPOLATION, CPU: the published {s.name} schedule's {s.total_steps} steps x "
                f"{s.tokens_per_step} tokens divided by gpt2_small_tokens_per_s_cpu, in hours "
                f"(not a GPU measurement)")
            add(f"gpt2_small_{s.name}_cpu_hours_to_last_removal", s.last_removal() * s.tokens_per_step
                / small["tokens_per_s"] / 3600,
                f"EXTRAPOLATION, CPU: hours until the published {s.name} schedule's last removal "
                f"(step {s.last_removal()}) at gpt2_small_tokens_per_s_cpu (not a GPU measurement)")
        result.details["gpt2_small"] = small

    # ---- question 3: weights and SAEs --------------------------------------------------
    wc = weight_change(original, free, ctrl)
    result.details["weight_change"] = wc
    add("weight_change_median_ln_free", float(np.median([r["ln_free_vs_original"] for r in wc])))
    add("weight_change_median_control", float(np.median([r["control_vs_original"] for r in wc])))
    add("weight_change_median_ln_free_vs_control", float(np.median([r["ln_free_vs_control"] for r in wc])))
    add("weight_change_max_ln_free", max(r["ln_free_vs_original"] for r in wc))
    if sae is not None:
        sm = {"original": sae_metrics(original, sae, sae_layer, ev, clean_nll=nll["original"]),
              "control": sae_metrics(ctrl, sae, sae_layer, ev, clean_nll=nll["control"]),
              "ln_free": sae_metrics(free, sae, sae_layer, ev, clean_nll=nll[main.name])}
        if "sae-loss" in runs:
            sm["ln_free_sae_loss"] = sae_metrics(runs["sae-loss"].model, sae, sae_layer, ev,
                                                 clean_nll=nll["sae-loss"])
        result.details["sae"] = sm
        for k, m in sm.items():
            add(f"sae_ev_{k}", m["explained_variance"])
            add(f"sae_ce_recovered_{k}", m["ce_recovered"])
        if "ln_free_sae_loss" in sm:
            add("ce_ln_free_sae_loss", mean_loss(nll["sae-loss"], valid))
            add("sae_loss_ce_cost", result.metrics["ce_ln_free_sae_loss"] - result.metrics["ce_ln_free"])

    # ---- export ----------------------------------------------------------------------
    if config.export:
        ex = export_and_check(ctx, free, tok, ev)
        for k, v in ex.items():
            add(k, v)

    result.details["q1"] = q1
    result.details["sigmas"] = {k: {s: float(r.model.sigma[i]) for s, i in r.model.index.items()}
                                for k, r in runs.items() if k != "control"}
    from .figures import loss_curves_figure

    ctx.artifacts.save_figure("loss_curves", loss_curves_figure(result.details["curves"], runs, main.name))
    ctx.artifacts.save_json("per_token_tables", q1)
    add("wall_seconds", time.perf_counter() - t_start)
    return result


def _sae_of(ctx: Any) -> tuple[Any, int | None]:
    """The first SAE of the run and the layer of its ``blocks.L.hook_resid_pre`` hook."""
    if not ctx.saes:
        return None, None
    sae = ctx.saes[0]
    hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None) or getattr(sae.cfg, "hook_name", "")
    parts = str(hook).split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_resid_pre":
        raise UsageError(f"layernorm-removal applies an SAE on a residual stream "
                         f"(blocks.L.hook_resid_pre); this one reads {hook!r}. Pass --sae with a "
                         f"resid_pre SAE such as zoo:stories-gpt2-resid2-topk.")
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae, int(parts[1])


@torch.no_grad()
def export_and_check(ctx: Any, free: FakeLNGPT2, tok: Any, ev) -> dict[str, float]:
    """Write the LN-free model as a stock HF directory (plain ``transformers`` loads it)
    and a TransformerLens state dict, and measure both against the fake-LN model."""
    from transformers import AutoModelForCausalLM

    out = ctx.run_dir / "artifacts" / "ln_free_hf"
    hf = export_hf(free)
    hf.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    x, pad = ev.ids[:16], ev.pad[:16]
    ref = free(x, pad=pad)
    keep = ~pad
    got = loaded(x, attention_mask=(~pad).long()).logits
    tl = export_tl(free, tok)
    ctx.artifacts.save_tensors("ln_free_tl_state_dict", {k: v.clone() for k, v in tl.state_dict().items()},
                               metadata={"normalization_type": "None"})
    got_tl = tl(x)
    dla = dla_residual(tl, x)
    return {"export_hf_max_abs_logit_diff": float((got - ref)[keep].abs().max()),
            "export_tl_max_abs_logit_diff": float((got_tl - ref)[keep].abs().max()),
            "dla_max_abs_residual": float(dla[keep].max())}


@torch.no_grad()
def dla_residual(tl: Any, x: torch.Tensor) -> torch.Tensor:
    """|logits - sum of direct contributions| per position (max over the vocabulary) of an
    LN-free HookedTransformer: embeddings, every head (z_h W_O_h), each attention output
    bias, every MLP output, each through W_U, plus b_U."""
    logits, cache = tl.run_with_cache(x)
    W_U = tl.W_U
    total = (cache["hook_embed"] + cache["hook_pos_embed"]) @ W_U + tl.b_U
    for layer in range(tl.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]                    # (b, t, h, d_head)
        heads = torch.einsum("bthd,hdm->bthm", z, tl.blocks[layer].attn.W_O)
        total = total + heads.sum(2) @ W_U + tl.blocks[layer].attn.b_O @ W_U
        total = total + cache[f"blocks.{layer}.hook_mlp_out"] @ W_U
    return (logits - total).abs().amax(-1)


def gpt2_small_throughput(n_tokens: int, steps: int = 2) -> dict[str, float]:
    """Tokens per second of AdamW training steps of a GPT-2-small-sized model (GPT2Config()
    defaults, random weights, no download) on this machine: the plain HF step and the
    fake-LN step mid-removal (half the sites removed). CPU unless a GPU is present."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).train()
    fake = FakeLNGPT2(hf, 50256).train()
    x = torch.randint(0, 50257, (1, n_tokens))
    fake.calibrate(x)
    fake.set_state(set(fake.sites[: len(fake.sites) // 2]), True, True)

    def timed(model, fwd) -> float:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        best = math.inf
        for _ in range(steps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            logits = fwd()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            best = min(best, time.perf_counter() - t0)
        return best

    t_hf = timed(hf, lambda: hf(x).logits)
    t_fake = timed(fake, lambda: fake(x))
    return {"tokens": n_tokens, "seconds_hf": t_hf, "seconds_fake_ln": t_fake,
            "tokens_per_s": n_tokens / t_fake, "overhead": t_fake / t_hf - 1.0,
            "device": "cpu", "threads": torch.get_num_threads()}
