"""The host's own model back-ends, datasets and dictionary formats, registered through the
plugin hooks (as llm registers its default plugins).

Loaders import their heavy libraries when called, so registering them costs nothing.
"""

from __future__ import annotations

from typing import Any

from mi_ideas.hookspecs import hookimpl


def _zoo_model_dir(name: str) -> Any:
    from mi_ideas import zoo
    from mi_ideas.errors import UsageError

    try:
        return zoo.model_dir(name)
    except KeyError:
        models = [e.name for e in zoo.list_entries() if e.kind == "model"]
        raise UsageError(
            f"the zoo has no model named {name!r}; its models are {', '.join(models)} "
            f"(`mi-ideas zoo` lists everything it ships; dictionaries go to --sae)."
        ) from None


def _zoo_model(rest: str, remote: Any) -> Any:
    from mi_ideas.backends.nnsight_backend import load_nnsight
    from mi_ideas.remote import nnsight_remote_arg

    from mi_ideas import zoo

    # A str, not a Path: nnsight keys remote models by repo id, which must be a string.
    # A checkpoint (NAME@step-NNNN) is float16 without a tokenizer: load_options upcasts it
    # and hands over the final model's tokenizer.
    model_dir = str(_zoo_model_dir(rest))
    return load_nnsight(model_dir, spec=f"zoo:{rest}", remote=nnsight_remote_arg(remote),
                        **zoo.load_options(rest))


def _hf_model(rest: str, remote: Any) -> Any:
    from mi_ideas.backends.nnsight_backend import load_nnsight
    from mi_ideas.remote import nnsight_remote_arg

    return load_nnsight(rest, spec=f"hf:{rest}", remote=nnsight_remote_arg(remote))


def _tl(rest: str, remote: Any, sae: bool) -> Any:
    from mi_ideas.backends.tl_backend import load_tl, refuse_remote

    refuse_remote(remote)
    prefix = "tlsae" if sae else "tl"
    if rest.startswith("zoo:"):
        from mi_ideas import zoo

        path = _zoo_model_dir(rest[4:])
        if zoo.entry(rest[4:])["kind"] == "checkpoint":  # float16, tokenizer from the final model
            from mi_ideas.backends.tl_backend import hooked_from_gpt2

            hf, tok = zoo.load_model(rest[4:])
            return load_tl(hooked_from_gpt2(hf, tok, name=rest[4:], sae_transformer=sae),
                           spec=f"{prefix}:{rest}")
        return load_tl(path, spec=f"{prefix}:{rest}", sae_transformer=sae)
    return load_tl(rest, spec=f"{prefix}:{rest}", sae_transformer=sae)


def _defined_in(obj: Any, *top_level: str) -> bool:
    """Whether ``obj``'s class (or a base class) comes from one of these packages; by name,
    so asking imports nothing."""
    return any(c.__module__.split(".")[0] in top_level for c in type(obj).__mro__)


def _nnsight_object(obj: Any, remote: Any) -> Any:
    from mi_ideas.backends.nnsight_backend import load_nnsight
    from mi_ideas.remote import nnsight_remote_arg

    return load_nnsight(obj, remote=nnsight_remote_arg(remote))


def _tl_object(obj: Any, remote: Any) -> Any:
    from mi_ideas.backends.tl_backend import TLSubject, refuse_remote

    refuse_remote(remote)
    return TLSubject(obj)


@hookimpl
def mi_ideas_register_backends(register):
    register("zoo", _zoo_model, "an embedded zoo model, run through nnsight")
    # A Hugging Face PreTrainedModel is wrapped in nnsight too.
    register("hf", _hf_model, "a Hugging Face repo id or local directory, run through nnsight",
             accepts=lambda obj: _defined_in(obj, "nnsight", "transformers"),
             from_object=_nnsight_object)
    register("tl", lambda rest, remote: _tl(rest, remote, sae=False),
             "TransformerLens HookedTransformer: an official name, a local HF directory, or zoo:NAME",
             accepts=lambda obj: _defined_in(obj, "transformer_lens", "sae_lens"),
             from_object=_tl_object)
    register("tlsae", lambda rest, remote: _tl(rest, remote, sae=True),
             "SAELens HookedSAETransformer: as tl:")


@hookimpl
def mi_ideas_register_datasets(register):
    from mi_ideas import data

    for prefix, (loader, description) in data.BUILTIN_DATASETS.items():
        register(prefix, loader, description)


@hookimpl
def mi_ideas_register_dictionaries(register):
    from mi_ideas import dictionaries

    register("saelens", dictionaries.load_saelens_release,
             "a SAELens release: saelens:RELEASE/SAE_ID (needs the Hub)")
    register("zoo", dictionaries.load_zoo_dictionary,
             "a dictionary shipped with mi-ideas: zoo:NAME (`mi-ideas zoo` lists them)")
    register("sparsify", lambda rest: dictionaries.load_sparsify(rest),
             "an EleutherAI sparsify checkpoint directory: sparsify:DIR[/HOOKPOINT]")
