"""Definitions of sparsify-model's metrics (names without the lambda_{l}. / reinit. prefix)."""

from __future__ import annotations

PER_LAMBDA = {
    "ev": "Explained variance of the MLP output by the pair, 1 - sum ||y - y_hat||^2 / "
    "sum ||y - mean(y)||^2 over held-out tokens, y the model's MLP output and y_hat SAE 2's "
    "reconstruction of MLP(SAE 1's reconstruction of the MLP input); mean over layers.",
    "ev_in": "Explained variance of the MLP input by SAE 1 (same definition); mean over layers.",
    "l0": "Mean number of non-zero SAE 1 latents per held-out token (TopK: at most k); mean over layers.",
    "ce_increase": "Next-token cross-entropy (nats, the last min(ce_texts, eval_fraction x "
    "texts) texts, all held out from training, scored at every token after BOS but the last, "
    "the family's SpliceSet definition) with one layer's MLP "
    "output replaced by the pair's y_hat at every non-BOS position minus the clean "
    "cross-entropy at the same positions; mean over layers (each layer spliced on its own).",
    "jacobian_density": "Fraction of the active k x k Jacobian entries |dz2_j/dz1_i| above "
    "jacobian_eps over held-out tokens (ReLU-clipped output latents count as 0); mean over layers.",
    "jacobian_l1": "Mean over held-out tokens of sum |J| over the active k x k Jacobian; mean over layers.",
    "edges_per_feature": "Edges of the feature graph per live SAE 1 latent: an edge i -> j when "
    "i and j are co-active on >= edge_min_tokens held-out tokens and the mean |J_ji| there "
    "exceeds jacobian_eps; summed over layers, divided by the live input latents of all layers.",
    "train_seconds": "Wall-clock seconds of SAETrainer.fit for all layers' pairs at this lambda.",
    "time_ratio": "train_seconds at this lambda / train_seconds at lambda = 0 (same steps, "
    "batch and sizes): the cost of the Jacobian term.",
}

TOY = {
    "edge_precision": "Toy: fraction of the recovered latent edges (co-active >= edge_min_tokens, "
    "mean |J| > jacobian_eps) whose two latents match planted features (|cos| >= 0.9 between "
    "decoder and planted direction) forming a planted edge; 1 = no spurious edge.",
    "edge_recall": "Toy: fraction of the planted edges (output feature j <- its parent input "
    "feature) found among the recovered latent edges.",
    "n_edges": "Toy: number of recovered latent edges (the planted graph has toy_features).",
    "matched_out": "Toy: SAE 2 latents matching a planted output direction (|cos| >= 0.9).",
}

GLOBAL = {
    "jacobian_autograd_max_abs_err": "Largest |J_einsum - J_autograd| over 8 held-out tokens "
    "of the first layer's lambda = 0 pair: the k x k Jacobian from the precomputed weight "
    "products against torch.autograd.functional.jacobian of the active output latents with "
    "respect to the active input latents (float64).",
    "n_layers": "Number of MLP layers sparsified (the lambda_{l}.* metrics are means over "
    "them; layer{L}.lambda_{l}.* give each layer).",
    "mlp_in_norm": "Mean L2 norm of the MLP input over held-out tokens, in the model's own "
    "units (for the control: before the scale matching of scale_match_control); mean over layers.",
    "mlp_out_norm": "Mean L2 norm of the MLP output over held-out tokens, in the model's own "
    "units (for the control: before scale matching); mean over layers.",
    "mlp_in_scale": "s_x: the control's MLP input is divided by s_x so that its mean norm on "
    "the training tokens equals the trained model's (1 = no rescaling); mean over layers.",
    "mlp_out_scale": "s_y: the same for the control's MLP output (its MLP rescaled to "
    "y / s_y = MLP(s_x x') / s_y); mean over layers.",
    "n_train_tokens": "Training tokens per layer (BOS excluded).",
    "ce_clean": "Clean next-token cross-entropy on the CE texts at the scored positions of "
    "ce_increase (nats).",
}


def _per_layer(text: str, layer: str) -> str:
    """A per-layer metric: the layer-mean definition, restricted to one layer."""
    at = f" At layer {layer} only."
    for tail in ("; mean over layers (each layer spliced on its own).", "; mean over layers.",
                 "; summed over layers, divided by the live input latents of all layers."):
        if text.endswith(tail):
            extra = ", divided by that layer's live input latents." if "summed" in tail else "."
            return text[: -len(tail)] + extra + at
    return text + at


def definition(name: str) -> str:
    base = name.split(".")[-1]
    layer = next((part[5:] for part in name.split(".") if part.startswith("layer")), None)
    if layer is not None:
        return _per_layer(definition(".".join(p for p in name.split(".") if not p.startswith("layer"))), layer)
    prefix = "On the re-initialised model (same architecture, fresh weights): " if name.startswith("reinit.") else ""
    if name.startswith("toy."):
        prefix = "Planted toy MLP (sparse known feature map): "
        if base in TOY:
            return TOY[base]
    return prefix + (PER_LAMBDA.get(base) or GLOBAL[base])
