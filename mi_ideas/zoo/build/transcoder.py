"""Compatibility alias: the transcoder training class now lives in
:mod:`mi_ideas.training.transcoder` (usable by every idea, not only the zoo's build)."""

from mi_ideas.training.transcoder import (  # noqa: F401
    TranscoderTrainingConfig,
    TranscoderTrainingSAE,
    fit_transcoder,
    fold_io_scaling,
    trainer_config,
)

__all__ = ["TranscoderTrainingConfig", "TranscoderTrainingSAE", "fit_transcoder", "fold_io_scaling",
           "trainer_config"]
