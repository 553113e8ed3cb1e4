"""The sparsify-model idea class (cheap to import: no torch)."""

from __future__ import annotations

from mi_ideas import Headline, Idea, IdeaResult, RunContext

from .config import SparsifyModelConfig


class SparsifyModel(Idea):
    """Train dictionaries at every MLP such that the connections between features are sparse.

    Seed (Heimersheim, large idea 3). Jacobian SAEs (Farnik et al. 2025, arXiv
    2502.18147): at each MLP a pair of TopK SAEs (SAELens ``TopKTrainingSAE``, trained
    with SAELens's ``SAETrainer``), SAE 1 on the MLP input and SAE 2 on the MLP's output
    of SAE 1's reconstruction, with an L1 penalty lambda on the k x k Jacobian of SAE 2's
    active latents with respect to SAE 1's, computed from precomputed weight products
    (O(k^2 d_mlp) per token). For each lambda of the sweep (0 always included, the
    control): explained variance, L0, spliced CE-loss increase, Jacobian density,
    edges per feature and training time against lambda = 0; the same sweep on the
    re-initialised model (control), its MLP input and output rescaled per layer to the
    trained model's mean norms (the raw norms and scales reported). The model is only
    called to harvest, to read the MLP weights (one trace) and to splice, so a remote
    model works; the re-initialised control needs a local model and is skipped remotely.
    """

    name = "sparsify-model"
    summary = "Jacobian SAE pairs at every MLP: how sparse can feature-to-feature connections be?"
    size = "large"
    Config = SparsifyModelConfig
    Result = IdeaResult
    uses_model = True
    uses_data = True
    default_data = "zoo:stories:120"
    remote = True  # harvest, MLP weights (Subject.parameters: one trace) and splices go through ctx.subject
    presets = {"quick": {"layers": [1], "lambdas": [1.0], "steps": 150, "reinit_control": False},
               "full": {"steps": 300}}

    @classmethod
    def check(cls, config: SparsifyModelConfig, subject=None, **inputs) -> None:
        """Layers out of range, or a model whose MLPs this idea cannot read, are refused
        before the run directory exists (no weights are read here)."""
        from .run import check

        check(config, subject)

    @classmethod
    def estimate_memory(cls, config: SparsifyModelConfig, subject=None, dataset=None):
        """Harvested MLP in/out rows per layer, the pairs' parameters with Adam state, and the
        (d_sae x d_sae) edge statistics per pair."""
        from mi_ideas import MemoryItem

        if subject is None:
            return None
        n_layers = subject.n_layers if config.layers is None else len(config.layers)
        rows = (len(dataset) if dataset is not None else 120) * config.max_length
        d, s = subject.d_model, config.d_sae
        n_l = len(set([0.0, *config.lambdas]))
        return [MemoryItem("harvested MLP inputs and outputs", 4 * rows * 2 * d * n_layers, ("max_length",)),
                MemoryItem("pairs (weights, gradients, Adam state)", 4 * 4 * 4 * d * s * n_layers * n_l,
                           ("d_sae", "lambdas", "layers")),
                MemoryItem("edge statistics", 8 * 3 * s * s * n_layers * n_l, ("d_sae",))]

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        lams = result.details.get("lambdas", [])
        top = f"lambda_{max(lams):g}" if lams else "lambda_1"
        return [
            Headline(f"{top}.jacobian_density", "lambda_0.jacobian_density", "Jacobian density vs lambda = 0"),
            Headline(f"{top}.ev", "lambda_0.ev", "MLP-output EV vs lambda = 0"),
            Headline(f"{top}.ce_increase", "lambda_0.ce_increase", "CE increase vs lambda = 0"),
            Headline(f"{top}.jacobian_density", f"reinit.{top}.jacobian_density", "density: model vs re-initialised"),
            Headline(f"{top}.time_ratio", None, "training time vs lambda = 0"),
        ]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        m = result.metrics
        lams = result.details.get("lambdas", [])
        if len(lams) < 2:
            return ""
        top = f"lambda_{max(lams):g}"
        d0, d1 = m["lambda_0.jacobian_density"], m[f"{top}.jacobian_density"]
        sparser = "sparser" if d1 < 0.8 * d0 else "not clearly sparser"
        return (f"At {top.replace('_', ' = ')} the Jacobian is {sparser} than at lambda = 0 (density "
                f"{d1:.3f} vs {d0:.3f}) for an MLP-output EV of {m[f'{top}.ev']:.3f} vs "
                f"{m['lambda_0.ev']:.3f} and a CE increase of {m[f'{top}.ce_increase']:.3f} vs "
                f"{m['lambda_0.ce_increase']:.3f} nats; training took {m[f'{top}.time_ratio']:.2f}x "
                f"the lambda = 0 time.")

    def run(self, ctx: RunContext, config: SparsifyModelConfig) -> IdeaResult:
        from .run import run

        with ctx.torch_threads(1):
            return run(ctx, config)
