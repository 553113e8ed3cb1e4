"""Shared pieces of the dictionary family (imported lazily; the modules import torch).

:mod:`.rows`
    :class:`RowSource`, rows of activations (a harvest on disk or a tensor) read whole
    when they fit a memory budget and streamed shard by shard otherwise.
:mod:`.kmeans`
    batched, streaming Lloyd k-means in torch (k-means++ seeding), the 1-sparse
    "centroid x scalar" variant, and the back-end switch (torch / scikit-learn / faiss).
:mod:`.training`
    a TopK SAE trained with SAELens's own ``TopKTrainingSAE`` and ``SAETrainer``.
:mod:`.evaluate`
    reconstruction metrics (explained variance from :mod:`mi_ideas.metrics`, MSE, L0),
    the spliced CE loss and SAEBench's ``ce_loss_score``.
:mod:`.purity`
    top-context concept purity of dictionary units against a shuffled-label baseline,
    from the zoo corpus's token labels.
"""
