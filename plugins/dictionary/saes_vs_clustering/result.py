"""Result of saes-vs-clustering (no torch import)."""

from __future__ import annotations

from mi_ideas import IdeaResult

#: what each method's metrics describe, quoted in every metric's definition
METHOD_DEFS = {
    "kmeans": "k-means (K centroids, Lloyd from k-means++ seeding on the training rows); each "
              "row reconstructed by its nearest centroid",
    "kmeans_scaled": "1-sparse dictionary: K unit directions u fitted by gain-shape k-means on "
                     "the centred training rows; x̂ = mean + ((x − mean)·u)u for the u with the "
                     "largest |(x − mean)·u|",
    "pca_kmeans": "k-means on the top pca_dims principal components of the centred training "
                  "rows; x̂ = mean + the nearest centroid mapped back to the full space",
    "sae": "TopK SAE with d_sae = K (k = sae_k, or K // 2 when K <= sae_k) trained with "
           "SAELens's TopKTrainingSAE and SAETrainer on the training rows",
    "random": "K random unit directions (Szegedy et al. 2013 baseline); x̂ = mean + the least-"
              "squares fit on the sae_k atoms with the largest |(x − mean)·r| (K // 2 when K <= "
              "sae_k)",
    "sae_given": "the SAE given with --sae, at its own d_sae",
}


class SaesVsClusteringResult(IdeaResult):
    """Flat metrics ``METHOD.K.ev`` / ``.mse`` / ``.l0`` / ``.ce_increase`` /
    ``.ce_loss_score`` and ``METHOD.K.purity*`` (each defined in ``definitions``); the curves
    per method, per-unit purities and training facts in ``details``."""
