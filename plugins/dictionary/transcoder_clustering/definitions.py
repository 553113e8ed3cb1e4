"""One definition per metric name (without the 'uand.' / 'model.' prefix). No torch."""

from __future__ import annotations

_SCORED = ("latents firing on >= min_fires held-out samples and assigned to a module "
           "(>= assign_threshold of the deciding share in one module: toy_output='shared', "
           "the encoder row's squared projections onto the module's input features; "
           "'orthogonal' and U-AND, the decoder's squared norm in the module's output subspace)")

DEFINITIONS = {
    "coact.ari": "Adjusted Rand index (sklearn adjusted_rand_score) between the clusters of "
    f"the co-activation affinity and the planted modules of the {_SCORED}; mean over seeds "
    "(one transcoder per seed).",
    "coact.ami": "Adjusted mutual information (sklearn adjusted_mutual_info_score) of the "
    "co-activation clusters against the planted modules; mean over seeds.",
    "coact.ari_min": "Lowest coact.ari over the transcoder seeds (stability).",
    "coact.ari_max": "Highest coact.ari over the transcoder seeds (stability).",
    "coact.ari_std": "Sample standard deviation of coact.ari over the seeds (NaN for one seed).",
    "decoder_cos.ari": "ARI against the planted modules of the same clustering method at the "
    "same k on the affinity max(cos(W_dec_i, W_dec_j), 0) instead of co-activation; mean over seeds.",
    "decoder_cos.ami": "AMI of the decoder-cosine clusters against the planted modules; mean over seeds.",
    "shuffled.ari": "ARI against the planted modules of the same clustering at the same k on "
    "activations shuffled over samples independently per latent (firing rates kept, "
    "co-activation destroyed): the null, must be about 0; mean over seeds.",
    "shuffled.ami": "AMI of the shuffled-activation clusters against the planted modules; mean over seeds.",
    "neurons.ari": "ARI of the MLP's hidden neurons clustered the same way by their own "
    "co-activation against their planted modules (neurons firing >= min_fires times).",
    "n_seeds": "Number of transcoders (training seeds) the toy metrics average over.",
    "n_clusters": "Number of clusters used: n_clusters if given, else the eigengap criterion "
    "k = argmax_{2<=k<=max_clusters} (l_{k+1} - l_k) over the eigenvalues of the normalised "
    "Laplacian I - D^-1/2 A D^-1/2 of the co-activation affinity A (mean over seeds).",
    "n_modules": "Number of planted modules among the scored latents (the true k).",
    "transcoder_ev": "Explained variance of the MLP output by the transcoder, "
    "1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2 over held-out samples (toy, U-AND: mean over seeds).",
    "transcoder_l0": "Mean number of non-zero transcoder latents per sample.",
    "latents_alive": "Latents firing on >= min_fires held-out samples (mean over seeds).",
    "latents_scored": f"Number of {_SCORED} (mean over seeds); the others are not in the ARI.",
    "module_share": "Mean over live latents of the largest deciding share in one module "
    "(toy_output='shared': of the encoder row's squared projections onto the feature "
    "directions, i.e. what it reads; otherwise of the decoder's squared norm in the module's "
    "output subspace; 1 = each latent belongs to one module only).",
    "cluster_size_max": "Size (latents) of the largest co-activation cluster (mean over seeds).",
    "cluster_size_min": "Size of the smallest co-activation cluster (mean over seeds).",
    "cluster_size_median": "Median co-activation cluster size (latents).",
    "n_rows": "Harvested token positions (BOS excluded) whose latent activations are clustered.",
    "split_half_ari": "Stability: ARI between the clusterings of the same live latents at the "
    "same k computed on the even-indexed texts and on the odd-indexed texts.",
    "split_half_ari_shuffled": "The same ARI between the even-text clustering and a clustering "
    "of per-latent-shuffled even-text activations (the null for split_half_ari).",
    "coact_vs_decoder_cos_ari": "ARI between the co-activation clusters and the decoder-cosine "
    "clusters of the same latents at the same k (agreement of the two views).",
    "purity": "Concept purity of the clusters as units (common.purity, the same definition "
    "as saes-vs-clustering): a cluster's score on a token is its member latents' summed "
    "activation; its top_contexts highest-scoring tokens among those where it is active; "
    "purity = the fraction of them with the most common concept category (zoo generator "
    "labels, 'none' for unlabelled tokens); mean over clusters active on >= top_contexts tokens.",
    "purity_shuffled": "The same purity for the same clusters and tokens with the categories "
    "permuted over rows (the chance level).",
    "purity_excess": "purity - purity_shuffled, paired per cluster; ci_lo / ci_hi: 95% "
    "percentile-bootstrap interval of the mean over clusters (2000 resamples).",
    "purity_excess_ci_lo": "Lower end of the 95% bootstrap interval of purity_excess.",
    "purity_excess_ci_hi": "Upper end of the 95% bootstrap interval of purity_excess.",
    "clusters_scored": "Model: clusters active on >= top_contexts tokens (those purity averages).",
    "labelled_clusters": "Model: clusters whose most common top-context category is a concept "
    "(not 'none').",
    "eigengap_k": "Model: the number of clusters the eigengap criterion picks (see n_clusters), "
    "whether or not it was used.",
    "none_fraction": "Fraction of harvested tokens with no concept label ('none').",
}


def definitions_for(name: str) -> str:
    return DEFINITIONS[name]
