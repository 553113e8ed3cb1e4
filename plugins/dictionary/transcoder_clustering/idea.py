"""The transcoder-clustering idea class (cheap to import: no torch)."""

from __future__ import annotations

from mi_ideas import Headline, Idea, IdeaResult, RunContext

from .config import TranscoderClusteringConfig


class TranscoderClustering(Idea):
    """Do transcoder latents of one computation co-activate, so that clustering their
    co-activation finds the computation?

    Seed (Heimersheim, medium idea 2): if computations use several ReLUs redundantly,
    the transcoder latents of one computation co-activate. A transcoder (SAELens
    ``Transcoder``, trained with SAELens's ``SAETrainer`` through
    ``mi_ideas.training.transcoder``) is fitted on an MLP; its latents are clustered
    (scikit-learn spectral or agglomerative) on a co-activation affinity (phi, Jaccard or
    correlation), the number of clusters by the eigengap criterion unless given.

    ``sources``: ``toy`` — the planted-module MLP (M modules, each with its own sparse
    input features and R redundant ReLUs, one shared MLP). By default (``toy_output``
    ``shared``) the modules share their output space (random overlapping directions), so
    decoders carry little module information and each latent's module is the one whose
    features its encoder reads; with ``orthogonal`` each module writes its own subspace and
    a latent's module is the one its decoder writes to. ARI / AMI against it for co-activation clusters
    (``coact.ari``), decoder-cosine clusters (``decoder_cos.ari``) and co-activation on
    activations shuffled independently per latent (``shuffled.ari``, the null, ~0), over
    ``n_seeds`` transcoders (stability). ``uand`` — the same on a cis-toy-model U-AND
    MLP with gates as modules. ``model`` — the subject and its transcoder (``--model``,
    ``--sae``; the zoo's MLP-1 transcoder by default): clusters with their top contexts,
    concept purity against shuffled labels, split-half stability.
    """

    name = "transcoder-clustering"
    summary = "Cluster transcoder latents by co-activation; ARI against planted modules, purity on the zoo."
    size = "medium"
    Config = TranscoderClusteringConfig
    Result = IdeaResult
    uses_model = True
    uses_saes = True
    default_saes = ("zoo:stories-gpt2-mlp1-transcoder",)
    uses_data = True
    default_data = "zoo:stories:100"
    remote = True  # the model is only called to harvest (ctx.harvest through the subject)
    presets = {"toy-only": {"sources": ["toy"]}, "no-redundancy": {"sources": ["toy"], "toy_redundancy": 1},
               "ungated": {"sources": ["toy"], "toy_module_prob": 1.0, "toy_feature_prob": 0.1}}

    @classmethod
    def estimate_memory(cls, config: TranscoderClusteringConfig, subject=None, dataset=None):
        """Toy inputs/outputs and latent activations (float32), the (L, L) float64 affinity
        matrices, and for the model the harvested in/out activations and latents."""
        from mi_ideas import MemoryItem

        f = 4
        n = config.toy_samples + config.toy_eval_samples
        items = [MemoryItem("toy / U-AND samples and latent activations",
                            f * n * (config.toy_d_in + 2 * config.toy_d_out + config.toy_d_sae),
                            ("toy_samples", "toy_eval_samples", "toy_d_sae"))]
        if "model" in config.sources and subject is not None:
            n_texts = len(dataset) if dataset is not None else 100
            if config.model_texts is not None:
                n_texts = min(n_texts, config.model_texts)
            rows = n_texts * config.model_max_length
            d_sae = 4096  # the zoo transcoder has 1024; a bound for typical ones
            items.append(MemoryItem("harvested MLP in/out and latent activations",
                                    f * rows * (3 * subject.d_model + d_sae), ("model_max_length",)))
            items.append(MemoryItem("latent affinity matrices (float64)", 8 * 4 * d_sae * d_sae, ()))
        return items

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        return [
            Headline("coact.ari", "shuffled.ari", "toy: co-activation clusters vs planted modules (ARI)"),
            Headline("coact.ari", "decoder_cos.ari", "toy: co-activation vs decoder-cosine clustering"),
            Headline("uand.coact.ari", "uand.shuffled.ari", "U-AND: gates recovered (ARI)"),
            Headline("model.purity", "model.purity_shuffled", "model: concept purity of clusters"),
            Headline("model.split_half_ari", "model.split_half_ari_shuffled", "model: split-half stability"),
        ]

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        m = result.metrics
        parts = []
        if "coact.ari" in m:
            verdict = "recover" if m["coact.ari"] >= 0.8 and m["shuffled.ari"] < 0.1 else "do not recover"
            parts.append(f"On the planted-module toy, co-activation clusters {verdict} the modules "
                         f"(ARI {m['coact.ari']:.2f}, range {m['coact.ari_min']:.2f}-"
                         f"{m['coact.ari_max']:.2f} over {int(m['n_seeds'])} seeds; shuffled null "
                         f"{m['shuffled.ari']:.2f}; decoder cosine {m['decoder_cos.ari']:.2f}).")
        if "uand.coact.ari" in m:
            parts.append(f"On U-AND, gates as modules: ARI {m['uand.coact.ari']:.2f} "
                         f"(shuffled {m['uand.shuffled.ari']:.2f}).")
        if "model.purity" in m:
            parts.append(f"On the model, {int(m['model.n_clusters'])} clusters have concept purity "
                         f"{m['model.purity']:.2f} against {m['model.purity_shuffled']:.2f} with "
                         f"shuffled labels; split-half ARI {m['model.split_half_ari']:.2f} "
                         f"(null {m['model.split_half_ari_shuffled']:.2f}).")
        return " ".join(parts)

    def run(self, ctx: RunContext, config: TranscoderClusteringConfig) -> IdeaResult:
        from .run import run

        with ctx.torch_threads(1):
            return run(ctx, config)
