"""The host's own model back-ends and datasets, registered through the plugin hooks.

Loaders import their heavy libraries when called, so registering them costs nothing.
"""

from __future__ import annotations

from typing import Any

from mi_ideas.hookspecs import hookimpl


def _zoo_model(rest: str, remote: Any) -> Any:
    from mi_ideas import zoo
    from mi_ideas.backends.nnsight_backend import load_nnsight
    from mi_ideas.remote import nnsight_remote_arg

    # A str, not a Path: nnsight keys remote models by repo id, which must be a string.
    return load_nnsight(str(zoo.model_dir(rest)), spec=f"zoo:{rest}", remote=nnsight_remote_arg(remote))


def _hf_model(rest: str, remote: Any) -> Any:
    from mi_ideas.backends.nnsight_backend import load_nnsight
    from mi_ideas.remote import nnsight_remote_arg

    return load_nnsight(rest, spec=f"hf:{rest}", remote=nnsight_remote_arg(remote))


def _tl(rest: str, remote: Any, sae: bool) -> Any:
    from mi_ideas.backends.tl_backend import load_tl
    from mi_ideas.models import _no_remote

    _no_remote(remote, "TransformerLens")
    prefix = "tlsae" if sae else "tl"
    if rest.startswith("zoo:"):
        from mi_ideas import zoo

        return load_tl(zoo.model_dir(rest[4:]), spec=f"{prefix}:{rest}", sae_transformer=sae)
    return load_tl(rest, spec=f"{prefix}:{rest}", sae_transformer=sae)


@hookimpl
def mi_ideas_register_backends(register):
    register("zoo", _zoo_model, "an embedded zoo model, run through nnsight")
    register("hf", _hf_model, "a Hugging Face repo id or local directory, run through nnsight")
    register("tl", lambda rest, remote: _tl(rest, remote, sae=False),
             "TransformerLens HookedTransformer: an official name, a local HF directory, or zoo:NAME")
    register("tlsae", lambda rest, remote: _tl(rest, remote, sae=True),
             "SAELens HookedSAETransformer: as tl:")


@hookimpl
def mi_ideas_register_datasets(register):
    from mi_ideas import data

    for prefix, (loader, description) in data.BUILTIN_DATASETS.items():
        register(prefix, loader, description)
