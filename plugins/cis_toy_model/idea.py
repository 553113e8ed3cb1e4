"""The cis-toy-model idea class (cheap to import: no torch, numpy or matplotlib)."""

from __future__ import annotations

from mi_ideas import Idea, RunContext

from .config import CisConfig
from .result import CisResult


class CisToyModel(Idea):
    """Train toy models that compute in superposition, with the controls that decide it.

    Seed (Heimersheim, medium idea 1): trained toy models of computation in
    superposition, to check whether networks learn the theoretical algorithm and to test
    decomposition methods; the task must need computation. ``task`` selects one of:

    * ``u-and`` (Hänni et al. 2024, arXiv 2408.05451): m sparse boolean features, one
      output per AND gate (feature pair), an MLP with fewer ReLU neurons than gates
      trained with MSE on the 0/1 AND values. Reports per-gate recall and false-positive
      rate (not accuracy: all-zero scores ~98%) for the trained MLP, for the linear
      control (same network without the ReLU, trained identically: a linear readout of
      the inputs cannot represent an AND's value) and for the hand-built construction
      (W ~ Bernoulli(p), bias -1, gate readout = mean of the neurons wired to both
      inputs).
    * ``compressed-computation`` (Braun et al. 2025, arXiv 2501.14926): 100 features
      x_i ~ U[-1, 1] w.p. 0.01, targets x_i + ReLU(x_i), a residual stream with a fixed
      random embedding and one MLP of 50 neurons. Trains two models: labels with the
      embedding's mixing term at scale ``cc_mixing_scale`` and clean labels (Bhagat et
      al. 2025 control), each compared with the naive one-neuron-per-feature baseline.
      A gain that vanishes with clean labels is not computation in superposition.
    * ``tms`` (Elhage et al. 2022): 5 sparse features in 2 dimensions, reconstruction
      ReLU(W^T W x + b); reports the columns' geometry (a regular pentagon: angular
      gaps of 72 degrees, equal norms) against a dense-feature control.

    Saves the trained weights (safetensors), ground-truth circuit labels (JSON) and
    figures. Every metric's definition is in the result's ``definitions``.
    """

    name = "cis-toy-model"
    summary = "Toy models of computation in superposition (U-AND, compressed computation, TMS) with controls."
    size = "medium"
    Config = CisConfig
    Result = CisResult
    remote = False

    @classmethod
    def estimate_memory(cls, config: CisConfig, subject=None):
        """The task's largest float32 tensors: parameters with Adam state and gradients (x4),
        one training batch's inputs, hidden activations and outputs with their gradients
        (x3), and the evaluation set (U-AND is evaluated in chunks of 1024)."""
        from mi_ideas import MemoryItem

        f = 4  # bytes per float32
        if config.task == "u-and":
            m, d = config.uand_n_features, config.uand_n_neurons
            g = config.uand_n_gates if config.uand_n_gates is not None else m * (m - 1) // 2
            b = config.uand_batch_size
            return [
                MemoryItem("MLP weights, gradients and Adam state", 4 * f * (m * d + d * g),
                           ("uand_n_features", "uand_n_neurons", "uand_n_gates")),
                MemoryItem("a training batch through the MLP", 3 * f * b * (m + d + 2 * g),
                           ("uand_batch_size", "uand_n_gates")),
                MemoryItem("evaluation inputs and one chunk's read-outs",
                           f * (config.uand_eval_samples * m + 3 * 1024 * g),
                           ("uand_eval_samples", "uand_n_gates")),
            ]
        if config.task == "compressed-computation":
            # The model is applied as x (W_E W_E^T) + ReLU(x W_E W_in) (W_out W_E^T): per
            # sample only n- and h-sized rows exist; W_E W_E^T and M_hat are n x n.
            n, h, d = config.cc_n_features, config.cc_n_neurons, config.cc_d_embed
            return [
                MemoryItem("embedding, n x n products, MLP weights, gradients and Adam state",
                           f * (n * d + 3 * n * n + 4 * 2 * d * h),
                           ("cc_n_features", "cc_d_embed", "cc_n_neurons")),
                MemoryItem("a training batch through the model",
                           3 * f * config.cc_batch_size * (4 * n + 2 * h),
                           ("cc_batch_size", "cc_n_features")),
                # inputs, the two models' and the naive baseline's outputs, labels, errors:
                # about 7 (samples, n) tensors at once (the default, 200k samples, measured
                # a 530 MB peak RSS increase; this gives 610 MiB)
                MemoryItem("the evaluation set and its outputs",
                           f * config.cc_eval_samples * (7 * n + 2 * h),
                           ("cc_eval_samples", "cc_n_features")),
            ]
        inst, n, m = config.tms_n_instances, config.tms_n_features, config.tms_n_dims
        return [
            MemoryItem("TMS weights, gradients and Adam state", 4 * f * inst * (m * n + n),
                       ("tms_n_instances", "tms_n_features", "tms_n_dims")),
            MemoryItem("a training batch per instance", 4 * f * inst * config.tms_batch_size * (2 * n + m),
                       ("tms_n_instances", "tms_batch_size", "tms_n_features")),
        ]

    def run(self, ctx: RunContext, config: CisConfig) -> CisResult:
        from .tasks import run_task

        with ctx.torch_threads(1):
            result = run_task(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
