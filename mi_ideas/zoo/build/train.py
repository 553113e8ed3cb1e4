"""Train the embedded zoo: corpus -> tokenizer -> GPT-2 model -> SAE -> transcoder -> manifest.

Usage::

    python -m mi_ideas.zoo.build.train                  # full run, writes into mi_ideas/zoo/
    python -m mi_ideas.zoo.build.train --out DIR        # full run into DIR
    python -m mi_ideas.zoo.build.train --smoke          # tiny run (< ~30 s) into a temp dir
    python -m mi_ideas.zoo.build.train --smoke --out DIR

Everything is seeded and runs on CPU with ``--threads`` (default 1) threads.
Nothing touches the network: the tokenizer is trained here with ``tokenizers``,
the model is built from a ``GPT2Config``, TransformerLens is built from the
trained weights, and the SAE / transcoder are trained with SAELens's
``SAETrainer`` on activations harvested here.

Outputs (relative to the output directory)::

    models/stories-gpt2/                   Hugging Face dir (config.json, model.safetensors, tokenizer)
    models/stories-gpt2-checkpoints/step-NNNN/
                                           float16 snapshots during training (config.json +
                                           model.safetensors; the tokenizer is the final model's)
    saes/stories-gpt2-resid2-topk/         SAELens TopK SAE on blocks.2.hook_resid_pre
    saes/stories-gpt2-mlp1-transcoder/     SAELens Transcoder blocks.1.hook_mlp_in -> blocks.1.hook_mlp_out
    manifest.json                          sha256 of every file, configs, metrics
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mi_ideas.zoo import sha256_file as zoo_sha256

MODEL_NAME = "stories-gpt2"
CHECKPOINTS_DIR = "stories-gpt2-checkpoints"
SAE_NAME = "stories-gpt2-resid2-topk"
TRANSCODER_NAME = "stories-gpt2-mlp1-transcoder"
EOT = "<|endoftext|>"


@dataclass
class LMConfig:
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    n_ctx: int = 128
    activation_function: str = "gelu_new"
    vocab_size: int = 2048  # BPE target; the trained vocabulary may be smaller
    tokenizer_stories: int = 20000  # stories the tokenizer is trained on
    batch_size: int = 64
    steps: int = 550
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 40
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    # float16 snapshots saved during training (the final model is saved as float32 anyway):
    # roughly doubling, with an early one (step 25: near the unigram loss; step 50: near bigram)
    checkpoint_steps: tuple[int, ...] = (25, 50, 100, 200, 400)


@dataclass
class SAEConfig:
    hook_name: str = "blocks.2.hook_resid_pre"
    d_sae: int = 1024
    k: int = 16
    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    warmup_steps: int = 50
    decay_frac: float = 0.2
    dead_feature_window: int = 250
    aux_loss_coefficient: float = 1.0


@dataclass
class TranscoderConfig:
    hook_name: str = "blocks.1.hook_mlp_in"
    hook_name_out: str = "blocks.1.hook_mlp_out"
    d_sae: int = 1024
    l1_coefficient: float = 3.0
    l1_warm_up_frac: float = 0.1
    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    warmup_steps: int = 50
    decay_frac: float = 0.2
    dead_feature_window: int = 250


@dataclass
class TrainConfig:
    seed: int = 0
    heldout_seed: int = 1
    n_train_stories: int = 48000
    n_heldout_stories: int = 1000
    harvest_rows: int = 2500  # training rows whose activations train the SAE / transcoder
    dict_eval_rows: int = 200  # held-out rows for SAE / transcoder metrics
    threads: int = 1
    lm: LMConfig = field(default_factory=LMConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig)


def smoke_config() -> TrainConfig:
    """A tiny configuration that runs end to end in seconds."""
    return TrainConfig(
        n_train_stories=400, n_heldout_stories=60, harvest_rows=40, dict_eval_rows=20,
        lm=LMConfig(n_layer=3, d_model=32, n_head=2, n_ctx=64, vocab_size=600, tokenizer_stories=400,
                    batch_size=16, steps=20, warmup_steps=2, checkpoint_steps=(2, 4, 8, 12, 16)),
        sae=SAEConfig(d_sae=64, k=4, steps=80, batch_size=256, lr=3e-3, warmup_steps=2, dead_feature_window=20),
        transcoder=TranscoderConfig(d_sae=64, steps=80, batch_size=256, lr=3e-3, warmup_steps=2,
                                    dead_feature_window=20),
    )


_OUTPUT_DIRS = (Path("models") / MODEL_NAME, Path("models") / CHECKPOINTS_DIR,
                Path("saes") / SAE_NAME, Path("saes") / TRANSCODER_NAME)


def _log(msg: str) -> None:
    print(f"[zoo] {msg}", flush=True)


def _canonical_json(path: Path) -> None:
    """Rewrite a JSON file with sorted keys (SAELens writes keys in set order, which varies per run)."""
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path, n_ctx: int):
    """Byte-level BPE (GPT-2 style) trained with ``tokenizers``, saved as a HF tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT,
        model_max_length=n_ctx,
    )
    hf_tok.save_pretrained(str(out_dir))
    # A class name both transformers 4.x and 5.x resolve (5.x writes "TokenizersBackend").
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out_dir))


# --------------------------------------------------------------------------- language model


def save_checkpoint(model, out_dir: Path) -> None:
    """A float16 copy of ``model`` as a Hugging Face dir (config.json + model.safetensors only)."""
    import copy

    snap = copy.deepcopy(model).half().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    snap.save_pretrained(str(out_dir), safe_serialization=True)
    for extra in out_dir.iterdir():  # generation_config.json: the final model's applies
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()


def train_lm(cfg: TrainConfig, tokenizer, train_rows, log_every: int = 25, checkpoint_dir: Path | None = None):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from .lm import cosine_lr

    lc = cfg.lm
    torch.manual_seed(cfg.seed)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    gcfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=lc.n_ctx, n_embd=lc.d_model, n_layer=lc.n_layer,
        n_head=lc.n_head, activation_function=lc.activation_function,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(gcfg)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "wpe" not in n else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": lc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lc.lr, betas=lc.betas,
    )
    rows = torch.as_tensor(train_rows, dtype=torch.long)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(rows.shape[0], generator=gen)
    pos = 0
    curve: list[tuple[int, float]] = []
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    model.train()
    for step in range(lc.steps):
        if pos + lc.batch_size > len(order):
            order = torch.randperm(rows.shape[0], generator=gen)
            pos = 0
        x = rows[order[pos:pos + lc.batch_size]]
        pos += lc.batch_size
        mult = cosine_lr(step, lc.steps, lc.warmup_steps, lc.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lc.lr * mult
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), lc.grad_clip)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        if checkpoint_dir is not None and step + 1 in lc.checkpoint_steps:
            save_checkpoint(model, checkpoint_dir / f"step-{step + 1:04d}")
            model.train()
        if (step + 1) % log_every == 0 or step + 1 == lc.steps:
            curve.append((step + 1, round(run_loss / run_n, 4)))
            _log(f"lm step {step + 1}/{lc.steps} loss {run_loss / run_n:.4f} "
                 f"lr {lc.lr * mult:.2e} {time.time() - t0:.0f}s")
            run_loss, run_n = 0.0, 0
    model.eval()
    epochs = lc.steps * lc.batch_size / rows.shape[0]
    return model, {"loss_curve": curve, "checkpoint_steps": [s for s in lc.checkpoint_steps if s <= lc.steps],
                   "seconds": round(time.time() - t0, 1),
                   "epochs": round(epochs, 3), "tokens_seen": lc.steps * lc.batch_size * lc.n_ctx,
                   "n_parameters": int(sum(p.numel() for p in model.parameters()))}


# --------------------------------------------------------------------------- dictionaries


def _trainer_cfg(steps: int, batch: int, lr: float, warmup: int, decay_frac: float, dead_window: int):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    return SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr / 10,
        lr_scheduler_name="constant", lr_warm_up_steps=warmup,
        lr_decay_steps=int(steps * decay_frac), device="cpu",
        dead_feature_window=dead_window, feature_sampling_window=max(1, steps // 4),
        n_checkpoints=0, save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=50,
    )


def _metadata(cfg: TrainConfig, hook_name: str, **extra: Any):
    from sae_lens.saes.sae import SAEMetadata

    return SAEMetadata(
        model_name=f"zoo:{MODEL_NAME}", hook_name=hook_name, hook_head_index=None,
        context_size=cfg.lm.n_ctx, prepend_bos=True, model_class_name="HookedTransformer",
        dataset_path=f"mi_ideas.data.stories:generate_stories(seed={cfg.seed})",
        seqpos_slice=[1, None], **extra,
    )


def train_sae(cfg: TrainConfig, acts, eval_acts, out_dir: Path):
    import torch
    from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig

    from .lm import dictionary_metrics, iter_batches

    sc = cfg.sae
    torch.manual_seed(cfg.seed + 1)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=sc.d_sae, k=sc.k, dtype="float32", device="cpu",
        apply_b_dec_to_input=True, normalize_activations="expected_average_only_in",
        aux_loss_coefficient=sc.aux_loss_coefficient, rescale_acts_by_decoder_norm=True,
        metadata=_metadata(cfg, sc.hook_name),
    ))
    trainer = SAETrainer(
        cfg=_trainer_cfg(sc.steps, sc.batch_size, sc.lr, sc.warmup_steps, sc.decay_frac, sc.dead_feature_window),
        sae=sae, data_provider=iter(iter_batches(acts, sc.batch_size, cfg.seed + 1)),
    )
    t0 = time.time()
    sae = trainer.fit()
    seconds = time.time() - t0
    sae.save_inference_model(str(out_dir))
    _canonical_json(out_dir / "cfg.json")
    loaded = SAE.load_from_disk(str(out_dir))
    metrics = dictionary_metrics(loaded, eval_acts)
    metrics["train_l0_metadata"] = sae.cfg.metadata.l0
    metrics["dead_latents_at_end_of_training"] = sae.cfg.metadata.num_dead_features
    return loaded, metrics, round(seconds, 1)


def train_transcoder(cfg: TrainConfig, x_in, x_out, eval_in, eval_out, out_dir: Path):
    import torch
    from sae_lens import SAE, SAETrainer

    from .lm import dictionary_metrics, iter_batches
    from .transcoder import TranscoderTrainingConfig, TranscoderTrainingSAE, fold_io_scaling

    tc = cfg.transcoder
    torch.manual_seed(cfg.seed + 2)
    d_in, d_out = x_in.shape[1], x_out.shape[1]
    # SAELens's "expected_average_only_in" convention, applied to input and target separately
    s_in = float(d_in ** 0.5 / x_in.norm(dim=-1).mean())
    s_out = float(d_out ** 0.5 / x_out.norm(dim=-1).mean())
    packed = torch.cat([x_in * s_in, x_out * s_out], dim=1)
    tsae = TranscoderTrainingSAE(TranscoderTrainingConfig(
        d_in=d_in, d_sae=tc.d_sae, d_out=d_out, dtype="float32", device="cpu",
        l1_coefficient=tc.l1_coefficient, l1_warm_up_steps=int(tc.steps * tc.l1_warm_up_frac),
        metadata=_metadata(cfg, tc.hook_name, hook_name_out=tc.hook_name_out,
                           input_scaling_folded=s_in, output_scaling_folded=s_out),
    ))
    trainer = SAETrainer(
        cfg=_trainer_cfg(tc.steps, tc.batch_size, tc.lr, tc.warmup_steps, tc.decay_frac, tc.dead_feature_window),
        sae=tsae, data_provider=iter(iter_batches(packed, tc.batch_size, cfg.seed + 2)),
    )
    t0 = time.time()
    tsae = trainer.fit()
    seconds = time.time() - t0
    fold_io_scaling(tsae, s_in, s_out)
    tsae.save_inference_model(str(out_dir))
    _canonical_json(out_dir / "cfg.json")
    loaded = SAE.load_from_disk(str(out_dir))
    metrics = dictionary_metrics(loaded, eval_in, eval_out)
    metrics["train_l0_metadata"] = tsae.cfg.metadata.l0
    metrics["dead_latents_at_end_of_training"] = tsae.cfg.metadata.num_dead_features
    return loaded, metrics, round(seconds, 1)


def splice_losses(ht, rows, sae, transcoder, sae_hook: str, tc_out_hook: str, mean_resid) -> dict[str, float]:
    """CE loss of the TL model clean, with the SAE / transcoder spliced in, and ablated."""
    import numpy as np
    import torch

    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)

    def run(hooks):
        total, n = 0.0, 0
        with torch.no_grad():
            for k in range(0, rows_t.shape[0], 32):
                x = rows_t[k:k + 32]
                logits = ht.run_with_hooks(x, fwd_hooks=hooks)
                lp = torch.log_softmax(logits[:, :-1].float(), -1)
                nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
                total += float(nll.sum())
                n += nll.numel()
        return total / n

    def keep_bos(f):
        def hook(act, hook):
            new = f(act)
            new[:, 0] = act[:, 0]  # position 0 (BOS) is left alone, as in training
            return new
        return hook

    tc_in_hook = transcoder.cfg.metadata.hook_name
    cache: dict[str, torch.Tensor] = {}

    def save_in(act, hook):
        cache["in"] = act
        return act

    out = {
        "clean": run([]),
        "sae_spliced": run([(sae_hook, keep_bos(lambda a: sae(a)))]),
        "sae_mean_ablated": run([(sae_hook, keep_bos(lambda a: mean_resid.to(a.dtype).expand_as(a).clone()))]),
        "transcoder_spliced": run([(tc_in_hook, save_in),
                                   (tc_out_hook, keep_bos(lambda a: transcoder(cache["in"])))]),
        "mlp_zero_ablated": run([(tc_out_hook, keep_bos(lambda a: torch.zeros_like(a)))]),
    }
    out["sae_ce_recovered"] = (out["sae_mean_ablated"] - out["sae_spliced"]) / (out["sae_mean_ablated"] - out["clean"])
    out["transcoder_ce_recovered"] = (out["mlp_zero_ablated"] - out["transcoder_spliced"]) / (
        out["mlp_zero_ablated"] - out["clean"])
    return {k: round(v, 4) for k, v in out.items()}


# --------------------------------------------------------------------------- orchestration


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for d in ("torch", "transformers", "tokenizers", "sae-lens", "transformer-lens", "numpy", "safetensors"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    return out


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def run(cfg: TrainConfig, out: Path, smoke: bool = False) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(cfg.threads)
    try:
        torch.set_num_interop_threads(cfg.threads)
    except RuntimeError:
        pass
    import transformers

    transformers.logging.set_verbosity_error()

    from mi_ideas.data import stories as corpus
    from .lm import encode_texts, lm_loss, tl_activations, pack_rows, to_hooked_transformer
    from .ngram import ngram_losses

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".zoo-build-", dir=out))
    try:
        model_dir = stage / "models" / MODEL_NAME
        ckpt_dir = stage / "models" / CHECKPOINTS_DIR
        sae_dir = stage / "saes" / SAE_NAME
        tc_dir = stage / "saes" / TRANSCODER_NAME
        for d in (model_dir, ckpt_dir, sae_dir, tc_dir):
            d.mkdir(parents=True)

        # corpus and tokenizer
        t0 = time.time()
        train_stories = corpus.generate_stories(cfg.n_train_stories, cfg.seed)
        heldout_stories = corpus.generate_stories(cfg.n_heldout_stories, cfg.heldout_seed)
        _log(f"generated {len(train_stories)} train / {len(heldout_stories)} held-out stories "
             f"in {time.time() - t0:.1f}s")
        tok = train_tokenizer([s.text for s in train_stories[: cfg.lm.tokenizer_stories]],
                              cfg.lm.vocab_size, model_dir, cfg.lm.n_ctx)
        eot = tok.convert_tokens_to_ids(EOT)
        _log(f"tokenizer: {len(tok)} tokens (target {cfg.lm.vocab_size})")
        train_rows = pack_rows(encode_texts(tok, [s.text for s in train_stories]), cfg.lm.n_ctx, eot)
        heldout_rows = pack_rows(encode_texts(tok, [s.text for s in heldout_stories]), cfg.lm.n_ctx, eot)
        _log(f"rows: {train_rows.shape[0]} train, {heldout_rows.shape[0]} held-out; "
             f"corpus ready in {time.time() - t0:.1f}s")

        # language model
        model, lm_stats = train_lm(cfg, tok, train_rows, log_every=max(1, min(25, cfg.lm.steps // 4)),
                                   checkpoint_dir=ckpt_dir)
        heldout_loss = lm_loss(model, heldout_rows)
        # checkpoints: held-out loss of the weights as shipped (float16, loaded as float32)
        from transformers import AutoModelForCausalLM

        ckpt_losses: dict[int, float] = {}
        for step in lm_stats["checkpoint_steps"]:
            snap = AutoModelForCausalLM.from_pretrained(str(ckpt_dir / f"step-{step:04d}"),
                                                        dtype=torch.float32).eval()
            ckpt_losses[step] = lm_loss(snap, heldout_rows)
            del snap
        _log("checkpoint held-out losses: " + ", ".join(f"{k}: {v:.4f}" for k, v in ckpt_losses.items()))
        base = ngram_losses(train_rows, heldout_rows, len(tok))
        _log(f"held-out loss {heldout_loss:.4f}; unigram {base['unigram_add_one']:.4f}, "
             f"bigram(add-one) {base['bigram_add_one']:.4f}, bigram(KN) {base['bigram_kneser_ney']:.4f}")
        model.save_pretrained(str(model_dir), safe_serialization=True)

        # TransformerLens copy, checked against HF
        ht = to_hooked_transformer(model)
        probe = torch.as_tensor(heldout_rows[:4])
        with torch.no_grad():
            tl_hf_diff = float((ht(probe) - model(probe).logits).abs().max())
        _log(f"TransformerLens vs HF max |logit diff| = {tl_hf_diff:.2e}")
        if tl_hf_diff > 1e-3:
            raise RuntimeError(f"TransformerLens conversion mismatch: {tl_hf_diff}")

        # activations
        sc, tc = cfg.sae, cfg.transcoder
        hooks = [sc.hook_name, tc.hook_name, tc.hook_name_out]
        t0 = time.time()
        acts = tl_activations(ht, train_rows[: cfg.harvest_rows], hooks)
        eval_acts = tl_activations(ht, heldout_rows[: cfg.dict_eval_rows], hooks)
        _log(f"harvested {acts[sc.hook_name].shape[0]} train / {eval_acts[sc.hook_name].shape[0]} "
             f"eval tokens in {time.time() - t0:.1f}s")

        sae, sae_metrics, sae_seconds = train_sae(cfg, acts[sc.hook_name], eval_acts[sc.hook_name], sae_dir)
        _log(f"SAE: EV {sae_metrics['explained_variance']:.4f}, L0 {sae_metrics['l0']:.2f} "
             f"({sae_seconds:.0f}s)")
        transcoder, tc_metrics, tc_seconds = train_transcoder(
            cfg, acts[tc.hook_name], acts[tc.hook_name_out], eval_acts[tc.hook_name],
            eval_acts[tc.hook_name_out], tc_dir)
        _log(f"transcoder: EV {tc_metrics['explained_variance']:.4f}, L0 {tc_metrics['l0']:.2f} "
             f"({tc_seconds:.0f}s)")
        spliced = splice_losses(ht, heldout_rows[: cfg.dict_eval_rows], sae, transcoder, sc.hook_name,
                                tc.hook_name_out, acts[sc.hook_name].mean(0))
        _log(f"spliced CE: {spliced}")
        del acts, eval_acts

        # move into place
        for rel in _OUTPUT_DIRS:
            dst = out / rel
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stage / rel), str(dst))
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    files: dict[str, dict[str, Any]] = {}
    for rel in _OUTPUT_DIRS:
        for p in sorted((out / rel).rglob("*")):
            if p.is_file():
                p.chmod(0o644)  # some writers create 0600 files; shipped files must be world-readable
                files[p.relative_to(out).as_posix()] = {"sha256": zoo_sha256(p), "bytes": p.stat().st_size}
    total_bytes = sum(f["bytes"] for f in files.values())

    ev_def = "1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over held-out tokens (position 0 excluded)"
    manifest: dict[str, Any] = {
        "format_version": 1,
        "smoke": smoke,
        "description": "Embedded default zoo: a GPT-2-architecture model trained on the mi_ideas "
                       "synthetic story corpus, its tokenizer, float16 checkpoints from its training run, "
                       "a TopK SAE and a transcoder trained with SAELens.",
        "retrain_command": "python -m mi_ideas.zoo.build.train" + (" --smoke" if smoke else ""),
        "corpus": {
            "generator": "mi_ideas.data.stories.generate_stories",
            "corpus_version": corpus.CORPUS_VERSION,
            "train_seed": cfg.seed, "n_train_stories": cfg.n_train_stories,
            "heldout_seed": cfg.heldout_seed, "n_heldout_stories": cfg.n_heldout_stories,
            "train_rows": int(train_rows.shape[0]), "heldout_rows": int(heldout_rows.shape[0]),
            "packing": "rows of n_ctx tokens: <|endoftext|> story <|endoftext|> story ..., each row starting "
                       "with a story start (mi_ideas.zoo.build.lm.pack_rows)",
        },
        "entries": {
            MODEL_NAME: {
                "kind": "model",
                "path": f"models/{MODEL_NAME}",
                "format": "huggingface",
                "architecture": "GPT2LMHeadModel",
                "dtype": "float32",
                "n_layer": cfg.lm.n_layer, "d_model": cfg.lm.d_model, "n_head": cfg.lm.n_head,
                "n_ctx": cfg.lm.n_ctx, "d_vocab": len(tok), "n_parameters": lm_stats["n_parameters"],
                "tokenizer": "byte-level BPE (tokenizers), bos = eos = pad = unk = <|endoftext|>",
                "metrics": {
                    "heldout_loss": _r(heldout_loss),
                    "unigram_loss": _r(base["unigram_add_one"]),
                    "bigram_loss": _r(base["bigram_add_one"]),
                    "bigram_kneser_ney_loss": _r(base["bigram_kneser_ney"]),
                    "n_heldout_positions": base["n_eval_positions"],
                    "definition": "mean next-token cross-entropy in nats over every position of the held-out "
                                  "rows (seed heldout_seed); unigram and bigram are fitted on the training rows "
                                  "and scored on the same held-out positions. unigram_loss and bigram_loss use "
                                  "add-one (Laplace) smoothing; bigram_kneser_ney_loss is interpolated "
                                  "Kneser-Ney (discount 0.75, add-one continuation distribution).",
                    "tl_vs_hf_max_abs_logit_diff": tl_hf_diff,
                },
                "training": {**dataclasses.asdict(cfg.lm), **{k: v for k, v in lm_stats.items()
                                                               if k != "n_parameters"}},
            },
            **{f"{MODEL_NAME}@step-{step:04d}": {
                "kind": "checkpoint",
                "of": MODEL_NAME,
                "step": step,
                "tokens_seen": step * cfg.lm.batch_size * cfg.lm.n_ctx,
                "path": f"models/{CHECKPOINTS_DIR}/step-{step:04d}",
                "format": "huggingface",
                "architecture": "GPT2LMHeadModel",
                "dtype": "float16",
                "tokenizer_from": f"models/{MODEL_NAME}",
                "metrics": {
                    "heldout_loss": _r(loss),
                    "n_heldout_positions": base["n_eval_positions"],
                    "definition": "mean next-token cross-entropy in nats over every position of the held-out "
                                  "rows (the same positions as the final model's heldout_loss), with the "
                                  "float16 weights loaded as float32.",
                },
            } for step, loss in ckpt_losses.items()},
            SAE_NAME: {
                "kind": "sae",
                "path": f"saes/{SAE_NAME}",
                "format": "saelens",
                "architecture": "topk",
                "model": MODEL_NAME,
                "hook_name": sc.hook_name,
                "d_in": cfg.lm.d_model, "d_sae": sc.d_sae, "k": sc.k,
                "metrics": {
                    "explained_variance": _r(sae_metrics["explained_variance"]),
                    "l0": _r(sae_metrics["l0"], 3),
                    "dead_latents_on_eval": sae_metrics["dead_latents_on_eval"],
                    "dead_latents_at_end_of_training": sae_metrics["dead_latents_at_end_of_training"],
                    "n_eval_tokens": sae_metrics["n_eval_tokens"],
                    "ce_loss_clean": spliced["clean"],
                    "ce_loss_spliced": spliced["sae_spliced"],
                    "ce_loss_mean_ablated": spliced["sae_mean_ablated"],
                    "ce_loss_recovered": spliced["sae_ce_recovered"],
                    "definition": f"explained variance = {ev_def}; l0 = mean number of non-zero latents per "
                                  "token; CE losses on the same held-out rows with the reconstruction spliced "
                                  "in (position 0 kept) vs the activation replaced by its training mean.",
                },
                "training": {**dataclasses.asdict(sc), "seconds": sae_seconds,
                             "n_train_tokens": cfg.harvest_rows * (cfg.lm.n_ctx - 1),
                             "trainer": "sae_lens.SAETrainer + TopKTrainingSAE, normalize_activations="
                                        "expected_average_only_in (folded into the saved weights)"},
            },
            TRANSCODER_NAME: {
                "kind": "transcoder",
                "path": f"saes/{TRANSCODER_NAME}",
                "format": "saelens",
                "architecture": "transcoder",
                "model": MODEL_NAME,
                "hook_name": tc.hook_name,
                "hook_name_out": tc.hook_name_out,
                "d_in": cfg.lm.d_model, "d_sae": tc.d_sae, "d_out": cfg.lm.d_model,
                "metrics": {
                    "explained_variance": _r(tc_metrics["explained_variance"]),
                    "l0": _r(tc_metrics["l0"], 3),
                    "dead_latents_on_eval": tc_metrics["dead_latents_on_eval"],
                    "dead_latents_at_end_of_training": tc_metrics["dead_latents_at_end_of_training"],
                    "n_eval_tokens": tc_metrics["n_eval_tokens"],
                    "ce_loss_clean": spliced["clean"],
                    "ce_loss_spliced": spliced["transcoder_spliced"],
                    "ce_loss_zero_ablated": spliced["mlp_zero_ablated"],
                    "ce_loss_recovered": spliced["transcoder_ce_recovered"],
                    "definition": f"explained variance of the MLP output: {ev_def}, with x = "
                                  f"{tc.hook_name_out} and x_hat = transcoder({tc.hook_name}); l0 = mean number "
                                  "of non-zero latents per token; CE losses with the MLP output replaced by the "
                                  "transcoder's vs by zero.",
                },
                "training": {**dataclasses.asdict(tc), "seconds": tc_seconds,
                             "n_train_tokens": cfg.harvest_rows * (cfg.lm.n_ctx - 1),
                             "trainer": "sae_lens.SAETrainer + mi_ideas.zoo.build.transcoder.TranscoderTrainingSAE "
                                        "(ReLU + L1, inputs/targets scaled to norm sqrt(d), scaling folded)"},
            },
        },
        "training_config": dataclasses.asdict(cfg),
        "training_seconds": round(time.time() - t_start, 1),
        "threads": cfg.threads,
        "environment": _versions(),
        "total_bytes": total_bytes,
        "total_mb": round(total_bytes / 1e6, 3),
        "files": files,
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")
    _log(f"done in {manifest['training_seconds']:.0f}s; {len(files)} files, {manifest['total_mb']} MB -> {out}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mi_ideas.zoo.build.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: the installed mi_ideas/zoo, or a temp dir with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny configuration, runs in seconds")
    p.add_argument("--seed", type=int, default=None, help="corpus / init seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--lm-steps", type=int, default=None, help="override the LM training steps")
    args = p.parse_args(argv)

    cfg = smoke_config() if args.smoke else TrainConfig()
    if args.seed is not None:
        cfg.seed = args.seed
        if cfg.heldout_seed == cfg.seed:
            cfg.heldout_seed = cfg.seed + 1
    if args.threads is not None:
        cfg.threads = args.threads
    if args.lm_steps is not None:
        cfg.lm.steps = args.lm_steps
    out = args.out
    if out is None:
        # the installed zoo is mi_ideas/zoo, one level above this build/ package
        out = Path(tempfile.mkdtemp(prefix="mi-ideas-zoo-smoke-")) if args.smoke else Path(__file__).resolve().parents[1]
    run(cfg, out, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
