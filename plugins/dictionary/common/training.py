"""A TopK SAE trained with SAELens's own classes and trainer (``TopKTrainingSAE``,
``SAETrainer``), on any endless iterator of activation batches, saved and reloaded as a
SAELens inference ``SAE`` (the weights written are exactly what is evaluated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["train_topk_sae"]


def train_topk_sae(batches: Iterator[torch.Tensor], *, d_in: int, d_sae: int, k: int,
                   steps: int, batch_size: int, lr: float, seed: int, out_dir: Path,
                   hook_name: str = "activations", model_name: str = "unknown",
                   dead_window: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Train a TopK SAE (``d_sae`` latents, ``k`` active) for ``steps`` batches of
    ``batch_size`` rows drawn from ``batches``; SAELens's ``expected_average_only_in``
    input scaling (folded into the weights at the end) and its TopK auxiliary loss for dead
    latents. Returns the reloaded inference ``SAE`` and training facts."""
    import time

    from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", apply_b_dec_to_input=True,
        normalize_activations="expected_average_only_in", aux_loss_coefficient=1.0,
        rescale_acts_by_decoder_norm=True,
        metadata=SAEMetadata(model_name=model_name, hook_name=hook_name, hook_head_index=None),
    ))
    from mi_ideas.training.transcoder import trainer_config

    cfg = trainer_config(steps, batch_size, lr, warmup_steps=max(1, steps // 40), decay_frac=0.2,
                         dead_feature_window=dead_window or max(10, steps // 4),
                         norm_estimate_batches=min(50, max(1, steps // 10)))
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches)
    t0 = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # SAELens's tqdm bar
        sae = trainer.fit()
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(out_dir))
    loaded = SAE.load_from_disk(str(out_dir))
    loaded.eval()
    return loaded, {"seconds": seconds, "steps": steps, "batch_size": batch_size, "k": k,
                    "d_sae": d_sae, "lr": lr, "path": str(out_dir)}
