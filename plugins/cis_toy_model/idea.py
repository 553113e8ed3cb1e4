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

    def run(self, ctx: RunContext, config: CisConfig) -> CisResult:
        from .tasks import run_task

        with ctx.torch_threads(1):
            result = run_task(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
