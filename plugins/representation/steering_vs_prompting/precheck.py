"""Checks of a config against the model and data before anything runs (pure Python apart
from the subject's own site parsing), so a bad config is a usage error that writes nothing."""

from __future__ import annotations

from typing import Any

from .judges import resolve_judges
from .prompts import split_dataset, vector_texts


def precheck(config: Any, subject: Any = None, dataset: Any = None, saes: Any = None,
             host: Any = None) -> None:
    from .run import check_sae, registered_judges, vector_kind

    resolve_judges(config.judges, registered_judges(host))
    if saes is not None:
        kind = vector_kind(config, saes)
        if kind == "sae_latent" and subject is not None:
            check_sae(subject, saes[0], subject.site(config.site).name, config.sae_latent)
    if subject is not None:
        subject.site(config.site)
    if dataset is not None:
        split = split_dataset(dataset, config)
        for word in config.concepts:
            vector_texts(dataset, split.vector_pool, word, config.vector_texts,
                         contrast=config.vector_contrast, swap_words=config.swap_words)
