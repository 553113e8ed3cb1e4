"""The cis-toy-model idea class (cheap to import: no torch, numpy or matplotlib)."""

from __future__ import annotations

from mi_ideas import Headline, Idea, RunContext

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

    @classmethod
    def headlines(cls, result: CisResult) -> list[Headline]:
        """Per task, the numbers that decide it, each against its control: U-AND's gate
        recall and false-positive rate against the linear control; compressed computation's
        gain over the naive baseline with mixed against clean labels; TMS's geometry with
        sparse against dense features."""
        if result.task == "u-and":
            return [
                Headline("mlp_recall_mean", "control_recall_mean", "gate recall: MLP vs linear control"),
                Headline("mlp_fpr_mean", "control_fpr_mean", "false-positive rate: MLP vs linear control"),
                Headline("construction_recall_mean", "control_recall_mean",
                         "gate recall: hand-built construction vs linear control"),
                Headline("gates_per_neuron", None, "AND gates per neuron"),
            ]
        if result.task == "compressed-computation":
            return [
                Headline("ratio_mixing", "ratio_clean", "MSE / naive MSE: mixed vs clean labels"),
                Headline("mse_mixing", "naive_mse_mixing", "MSE, mixed labels: trained vs naive"),
                Headline("mse_clean", "naive_mse_clean", "MSE, clean labels: trained vs naive"),
                Headline("mixing_subspace_frac_mixing", "mixing_subspace_frac_clean",
                         "MLP inputs in the mixing subspace: mixed vs clean labels"),
            ]
        return [
            Headline("n_represented", "dense_n_represented", "features represented: sparse vs dense"),
            Headline("dims_per_feature", "dense_dims_per_feature", "dimensions per feature: sparse vs dense"),
            Headline("gap_max_dev_deg", "dense_gap_max_dev_deg",
                     "deviation from a regular polygon (degrees): sparse vs dense"),
            Headline("max_cos", "dense_max_cos", "largest interference cos: sparse vs dense"),
        ]

    @classmethod
    def answer(cls, result: CisResult) -> str:
        """One sentence from the headline numbers (thresholds stated in the sentence's logic:
        a recall gain of at least 0.1 over the control, an MSE ratio below 0.95)."""
        m = result.metrics
        try:
            if result.task == "u-and":
                r, c, f = m["mlp_recall_mean"], m["control_recall_mean"], m["mlp_fpr_mean"]
                g = m["gates_per_neuron"]
                if r - c < 0.1:
                    return (f"No computation in superposition shown: the MLP's mean gate recall "
                            f"({r:.0%}) is not clearly above the linear control's ({c:.0%}), "
                            f"with {g:.3g} gates per neuron.")
                fpr = (f"at a false-positive rate of {f:.1%}" if f <= 0.1 else
                       f"but with a false-positive rate of {f:.1%}, so it does not compute them cleanly")
                return (f"The MLP computes {g:.3g} AND gates per neuron: mean gate recall {r:.0%} "
                        f"against {c:.0%} for the linear control, {fpr}.")
            if result.task == "compressed-computation":
                rm, rc = m["ratio_mixing"], m["ratio_clean"]
                if rc < 0.95:
                    return (f"The model beats the naive one-neuron-per-feature baseline even with "
                            f"clean labels (MSE ratio {rc:.3g}; {rm:.3g} with mixed labels): a gain "
                            f"that does not come from the label mixing term.")
                if rm < 0.95:
                    return (f"The model beats the naive baseline only when the labels carry the "
                            f"mixing term (MSE ratio {rm:.3g}, against {rc:.3g} with clean labels): "
                            f"the gain comes from the labels' noise, not from computation in "
                            f"superposition.")
                return (f"No gain over the naive baseline with either labels (MSE ratio {rm:.3g} "
                        f"mixed, {rc:.3g} clean).")
            s, d = int(m["n_represented"]), int(m["dense_n_represented"])
            dims = len(result.details.get("sparse_W") or []) or None  # W is (m, n)
            if s <= d or (dims is not None and s <= dims):
                room = f" in {dims} dimensions" if dims else ""
                return (f"No superposition shown: {s} features represented{room} with sparse "
                        f"inputs against {d} with dense ones (the control).")
            shape = ""
            if "gap_max_dev_deg" in m:
                dev = m["gap_max_dev_deg"]
                shape = (f", as a regular polygon (largest angular-gap deviation {dev:.1f} degrees)"
                         if dev < 10 and m["norm_min"] > 0.5 else
                         f", not as a regular polygon (largest angular-gap deviation {dev:.1f} degrees)")
            room = f" in {dims} dimensions" if dims else ""
            return (f"With sparse features the model stores {s} features{room} in superposition "
                    f"({m['dims_per_feature']:.2f} dimensions per feature){shape}, against {d} "
                    f"with dense features (the control).")
        except KeyError:  # a result from another version of the idea: no sentence
            return ""

    def run(self, ctx: RunContext, config: CisConfig) -> CisResult:
        from .tasks import run_task

        with ctx.torch_threads(1):
            result = run_task(ctx, config)
        result.artifacts.update(ctx.artifacts.saved)
        result.figures.update(ctx.artifacts.figures)
        return result
