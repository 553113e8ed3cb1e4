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

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

__all__ = ["TranscoderTrainingConfig", "TranscoderTrainingSAE", "fold_io_scaling"]


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
