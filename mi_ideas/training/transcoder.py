"""Training a SAELens ``Transcoder`` with SAELens's own ``SAETrainer``.

SAELens (6.54) ships inference transcoder classes (``Transcoder``,
``SkipTranscoder``, ``JumpReLU*``) but no training class for them.  This module
adds the smallest one that fits SAELens's training API:

* :class:`TranscoderTrainingConfig` -- a ``StandardTrainingSAEConfig`` (ReLU
  latents, L1 penalty weighted by decoder norms, SAELens's coefficient warm-up)
  with ``d_out`` and ``architecture() == "transcoder"``, so the inference
  config it saves is a stock ``TranscoderConfig``;
* :class:`TranscoderTrainingSAE` -- a ``StandardTrainingSAE`` whose decoder maps
  to ``d_out`` and whose training step reads *packed* batches
  ``[x_in | x_out]`` (``d_in + d_out`` columns, what SAELens's
  ``multi_hook_concat_split_iter`` produces) and reconstructs ``x_out`` from
  ``x_in``.

``SAETrainer`` drives it unchanged (optimizer, lr schedule, L1 warm-up, dead
latent tracking, final L0 metadata).  ``save_inference_model`` writes a
directory that ``sae_lens.SAE.load_from_disk`` / ``Transcoder.load_from_disk``
load as a plain ``Transcoder``.

Keep ``normalize_activations="none"`` here: SAELens's scaler would estimate one
factor over the packed ``[x_in | x_out]`` vector.  Scale inputs and targets
yourself and fold the factors afterwards with :func:`fold_io_scaling`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

__all__ = [
    "TranscoderTrainingConfig",
    "TranscoderTrainingSAE",
    "fit_transcoder",
    "fold_io_scaling",
    "quiet_trainer",
    "trainer_config",
]


@dataclass
class TranscoderTrainingConfig(StandardTrainingSAEConfig):
    """Standard (ReLU + L1) training config for a transcoder ``d_in -> d_out``."""

    d_out: int = 768
    apply_b_dec_to_input: bool = False

    @override
    @classmethod
    def architecture(cls) -> str:
        return "transcoder"

    def __post_init__(self) -> None:
        if self.apply_b_dec_to_input:
            raise ValueError("apply_b_dec_to_input is not supported for transcoders")
        if self.normalize_activations != "none":
            raise ValueError("normalize inputs/targets yourself and use fold_io_scaling")
        super().__post_init__()


class TranscoderTrainingSAE(StandardTrainingSAE):
    """ReLU transcoder trained on packed ``[x_in | x_out]`` batches."""

    cfg: TranscoderTrainingConfig  # type: ignore[assignment]

    @override
    def initialize_weights(self) -> None:
        d_in, d_sae, d_out = self.cfg.d_in, self.cfg.d_sae, self.cfg.d_out
        w_dec = torch.empty(d_sae, d_out, dtype=self.dtype, device=self.device)
        nn.init.kaiming_uniform_(w_dec)
        w_enc = torch.empty(d_in, d_sae, dtype=self.dtype, device=self.device)
        nn.init.kaiming_uniform_(w_enc)
        if self.cfg.decoder_init_norm is not None:
            w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * self.cfg.decoder_init_norm
            w_enc = w_enc / w_enc.norm(dim=0, keepdim=True) * self.cfg.decoder_init_norm
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_enc.contiguous())
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=self.dtype, device=self.device))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=self.dtype, device=self.device))

    @override
    def process_sae_in(self, sae_in: torch.Tensor) -> torch.Tensor:
        sae_in = sae_in.to(self.dtype)
        sae_in = self.hook_sae_input(sae_in)
        return self.run_time_activation_norm_fn_in(sae_in)

    def split(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[x_in | x_out]`` -> ``(x_in, x_out)``."""
        return packed[..., : self.cfg.d_in], packed[..., self.cfg.d_in:]

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x_in, x_out = self.split(step_input.sae_in)
        feature_acts, hidden_pre = self.encode_with_hidden_pre(x_in)
        sae_out = self.decode(feature_acts)
        mse_loss = self.mse_loss_fn(sae_out, x_out.to(sae_out.dtype)).sum(dim=-1).mean()
        aux = self.calculate_aux_loss(
            step_input=replace(step_input, sae_in=x_in),
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            sae_out=sae_out,
        )
        losses: dict[str, torch.Tensor] = {"mse_loss": mse_loss, **aux}
        total = mse_loss
        for v in aux.values():
            total = total + v
        # sae_in is the *target*, so SAETrainer's logged explained variance is the transcoder's
        return TrainStepOutput(
            sae_in=x_out, sae_out=sae_out, feature_acts=feature_acts,
            hidden_pre=hidden_pre, loss=total, losses=losses,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x = x_in
        return self.decode(self.encode(x))

    def get_inference_cfg_dict(self) -> dict[str, Any]:
        return self.cfg.get_inference_sae_cfg_dict()


@torch.no_grad()
def fold_io_scaling(sae: TranscoderTrainingSAE, scale_in: float, scale_out: float) -> None:
    """Fold ``x_in * scale_in`` and ``x_out * scale_out`` (used in training) into the weights.

    Afterwards the transcoder maps raw ``x_in`` to raw ``x_out``, with the same
    latent activations as during training.
    """
    sae.W_enc.data.mul_(scale_in)
    sae.W_dec.data.div_(scale_out)
    sae.b_dec.data.div_(scale_out)


def trainer_config(steps: int, batch_size: int, lr: float, *, warmup_steps: int = 0,
                   decay_frac: float = 0.2, dead_feature_window: int = 1000, device: str = "cpu",
                   norm_estimate_batches: int = 10):
    """A quiet CPU ``SAETrainerConfig`` for a short in-process training run (no wandb, no
    checkpoints): ``steps`` batches of ``batch_size`` rows, constant lr with a linear
    warm-up and a decay over the last ``decay_frac`` of the steps; ``norm_estimate_batches``
    batches estimate SAELens's activation-norm scaling where the SAE uses one. The one
    trainer config of the project's in-process training (transcoders, TopK SAEs, Jacobian
    SAE pairs)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    return SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
        lr_end=lr / 10, lr_scheduler_name="constant", lr_warm_up_steps=warmup_steps,
        lr_decay_steps=int(steps * decay_frac), device=device,
        dead_feature_window=dead_feature_window, feature_sampling_window=max(1, steps // 4),
        n_checkpoints=0, save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=norm_estimate_batches,
    )


@contextlib.contextmanager
def quiet_trainer(quiet: bool = True):
    """Silence ``SAETrainer.fit``'s tqdm bar: SAELens has no option for it, so its module's
    ``tqdm`` is swapped for a disabled one for the duration (restored afterwards)."""
    if not quiet:
        yield
        return
    import functools

    from sae_lens.training import sae_trainer

    before = sae_trainer.tqdm
    sae_trainer.tqdm = functools.partial(before, disable=True)
    try:
        yield
    finally:
        sae_trainer.tqdm = before


def _batches(x: torch.Tensor, batch_size: int, gen: torch.Generator):
    """Endless shuffled mini-batches of the rows of ``x`` (a SAELens ``DataProvider``)."""
    n = x.shape[0]
    while True:
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n - batch_size + 1, batch_size):
            yield x[perm[k:k + batch_size]]


def fit_transcoder(x_in: torch.Tensor, x_out: torch.Tensor, *, d_sae: int, l1_coefficient: float,
                   steps: int, batch_size: int, lr: float = 1e-3, seed: int = 0,
                   l1_warm_up_frac: float = 0.1, warmup_steps: int = 0, decay_frac: float = 0.2,
                   metadata: Any = None, quiet: bool = False) -> TranscoderTrainingSAE:
    """Train a ReLU + L1 transcoder ``x_in -> x_out`` with SAELens's ``SAETrainer``.

    Inputs and targets are scaled to mean norm sqrt(d) (SAELens's
    ``expected_average_only_in`` convention, applied to each side separately) and the
    factors folded back afterwards (:func:`fold_io_scaling`), so the returned transcoder
    maps raw ``x_in`` to raw ``x_out``. Weights and batch order come from ``seed``;
    ``quiet`` hides SAELens's progress bar.
    """
    from sae_lens import SAETrainer

    if x_in.shape[0] != x_out.shape[0] or x_in.shape[0] < batch_size:
        raise ValueError(f"fit_transcoder needs as many x_in as x_out rows, at least one "
                         f"batch ({batch_size}); got {x_in.shape[0]} and {x_out.shape[0]}.")
    x_in, x_out = x_in.float(), x_out.float()
    d_in, d_out = x_in.shape[1], x_out.shape[1]
    s_in = float(d_in ** 0.5 / x_in.norm(dim=-1).mean().clamp_min(1e-12))
    s_out = float(d_out ** 0.5 / x_out.norm(dim=-1).mean().clamp_min(1e-12))
    packed = torch.cat([x_in * s_in, x_out * s_out], dim=1)
    kwargs = {} if metadata is None else {"metadata": metadata}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # SAELens initialises its weights from the global generator
        sae = TranscoderTrainingSAE(TranscoderTrainingConfig(
            d_in=d_in, d_sae=d_sae, d_out=d_out, dtype="float32", device="cpu",
            l1_coefficient=l1_coefficient, l1_warm_up_steps=int(steps * l1_warm_up_frac),
            **kwargs))
        trainer = SAETrainer(
            cfg=trainer_config(steps, batch_size, lr, warmup_steps=warmup_steps,
                               decay_frac=decay_frac),
            sae=sae, data_provider=_batches(packed, batch_size, torch.Generator().manual_seed(seed)))
        with quiet_trainer(quiet):
            sae = trainer.fit()
    fold_io_scaling(sae, s_in, s_out)
    return sae
