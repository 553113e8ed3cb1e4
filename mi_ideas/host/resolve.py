"""Every spec lookup: ``--model``, ``--data`` and ``--sae`` specs (or Python objects) into a
subject, a dataset and dictionaries, through the host's registries.

A spec is ``PREFIX:REST``; the prefix picks what a plugin (or the host's own
:mod:`mi_ideas.host.builtins`) registered:

| kind | built-in prefixes | hook |
|---|---|---|
| model | ``zoo:NAME``, ``hf:REPO_OR_DIR``, ``tl:...``, ``tlsae:...`` | ``mi_ideas_register_backends`` |
| data | ``zoo:stories[:N]``, ``template:FAMILY``, ``text:PATH``, ``hf:NAME[:SPLIT]`` | ``mi_ideas_register_datasets`` |
| dictionary | ``saelens:RELEASE/SAE_ID``, ``zoo:NAME``, ``sparsify:DIR``; a bare directory is a SAELens directory | ``mi_ideas_register_dictionaries`` |

A model may also be a Python object: a ready :class:`~mi_ideas.subject.Subject`, or any
object a back-end's ``accepts`` predicate takes (nnsight ``LanguageModel``, Hugging Face
``PreTrainedModel``, TransformerLens ``HookedTransformer`` for the built-ins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mi_ideas.errors import UsageError
from mi_ideas.host.manager import Host, get_host

DEFAULT_MODEL = "zoo:stories-gpt2"
DEFAULT_DATA = "zoo:stories"


def resolve_model(model: Any = DEFAULT_MODEL, *, remote: Any = None, host: Host | None = None) -> Any:
    """A model spec or object as a :class:`~mi_ideas.subject.Subject`."""
    from mi_ideas.subject import Subject

    if isinstance(model, Subject):
        return model
    host = host or get_host()
    backends = host.backends
    if not isinstance(model, str):
        for entry in backends.values():
            if entry.accepts is not None and entry.accepts(model):
                return entry.from_object(model, remote)
        takes = [p for p, e in sorted(backends.items()) if e.accepts is not None]
        raise UsageError(
            f"cannot use a {type(model).__module__}.{type(model).__name__} as a model: pass a "
            f"spec string, a mi_ideas Subject, or an object one of the back-ends takes "
            f"({', '.join(takes)}: an nnsight LanguageModel / TransformersModel, a "
            f"TransformerLens HookedTransformer / HookedSAETransformer, or a Hugging Face "
            f"PreTrainedModel)."
        )
    prefix, sep, rest = model.partition(":")
    if not sep or prefix not in backends:
        known = ", ".join(f"{p}: ({r.description})" for p, r in sorted(backends.items()))
        raise UsageError(
            f"model spec {model!r} has no known prefix. Use PREFIX:NAME with one of: {known}. "
            f"For example --model zoo:stories-gpt2 or --model hf:/path/to/model."
        )
    if not rest:
        raise UsageError(f"model spec {model!r} names no model after {prefix!r}:.")
    return backends[prefix].loader(rest, remote)


def resolve_dataset(spec: Any = DEFAULT_DATA, *, seed: int = 0, host: Host | None = None) -> Any:
    """A data spec as a :class:`~mi_ideas.data.Dataset` (a Dataset or a list of strings
    passes through)."""
    from mi_ideas.data import Dataset

    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, (list, tuple)) and all(isinstance(t, str) for t in spec):
        return Dataset("python:list", list(spec))
    host = host or get_host()
    prefix, sep, rest = str(spec).partition(":")
    registry = host.datasets
    if not sep or prefix not in registry:
        known = "; ".join(f"{p}: {r.description}" for p, r in sorted(registry.items()))
        raise UsageError(f"data spec {spec!r} has no known prefix. Use one of — {known}.")
    return registry[prefix].loader(rest, seed)


def resolve_dictionary(spec: Any, subject: Any = None, *, host: Host | None = None) -> Any:
    """A dictionary spec (or a SAELens object) as a SAELens object; with ``subject``, a
    clear error when it reads a site or width that model does not have."""
    from mi_ideas.dictionaries import check_fits, load_sae_directory

    if not isinstance(spec, (str, Path)):
        sae, label = spec, type(spec).__name__
    else:
        label = str(spec)
        host = host or get_host()
        formats = host.dictionary_formats
        prefix, sep, rest = label.partition(":")
        if sep and prefix in formats:
            if not rest:
                raise UsageError(f"dictionary spec {label!r} names nothing after {prefix!r}:.")
            sae = formats[prefix].loader(rest)
        elif sep and not Path(label).expanduser().exists():
            known = "; ".join(f"{p}: {r.description}" for p, r in sorted(formats.items()))
            raise UsageError(
                f"dictionary spec {label!r} has no known prefix and is not a directory. Use a "
                f"SAELens directory or one of — {known}."
            )
        else:
            sae = load_sae_directory(label)
    if subject is not None:
        check_fits(sae, subject, label)
    return sae
