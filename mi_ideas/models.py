"""Model specs → subjects.

A spec is ``PREFIX:REST``; the prefix picks a back-end registered through
``mi_ideas_register_backends`` (built-ins in :mod:`mi_ideas.builtins`):

| spec | back-end |
|---|---|
| ``zoo:NAME`` | nnsight, on a model shipped in ``mi_ideas/zoo`` |
| ``hf:REPO_OR_DIR`` | nnsight ``TransformersModel`` on any Hugging Face causal LM |
| ``tl:NAME``, ``tl:DIR``, ``tl:zoo:NAME`` | TransformerLens ``HookedTransformer`` |
| ``tlsae:...`` | the same as ``tl:`` but SAELens's ``HookedSAETransformer`` |

In Python a model object works too: an nnsight ``LanguageModel`` / ``TransformersModel``,
a TransformerLens ``HookedTransformer`` / ``HookedSAETransformer``, a Hugging Face
``PreTrainedModel``, or a ready :class:`~mi_ideas.subject.Subject`.
"""

from __future__ import annotations

from typing import Any

from mi_ideas.errors import UsageError

DEFAULT_MODEL = "zoo:stories-gpt2"


def load_subject(model: Any = DEFAULT_MODEL, *, remote: Any = None, host: Any = None) -> Any:
    """Resolve a model spec or object into a :class:`~mi_ideas.subject.Subject`."""
    from mi_ideas.subject import Subject

    if isinstance(model, Subject):
        return model
    if not isinstance(model, str):
        return _from_object(model, remote)
    from mi_ideas.host import get_host

    host = host or get_host()
    prefix, sep, rest = model.partition(":")
    backends = host.backends
    if not sep or prefix not in backends:
        known = ", ".join(f"{p}: ({r.description})" for p, r in sorted(backends.items()))
        raise UsageError(
            f"model spec {model!r} has no known prefix. Use PREFIX:NAME with one of: {known}. "
            f"For example --model zoo:stories-gpt2 or --model hf:/path/to/model."
        )
    if not rest:
        raise UsageError(f"model spec {model!r} names no model after {prefix!r}:.")
    return backends[prefix].loader(rest, remote)


def _from_object(obj: Any, remote: Any) -> Any:
    from mi_ideas.remote import nnsight_remote_arg

    module = type(obj).__module__.split(".")[0]
    if module == "nnsight":
        from mi_ideas.backends.nnsight_backend import load_nnsight

        return load_nnsight(obj, remote=nnsight_remote_arg(remote))
    if module in ("transformer_lens", "sae_lens"):
        _no_remote(remote, "TransformerLens")
        from mi_ideas.backends.tl_backend import TLSubject

        return TLSubject(obj)
    if module == "transformers":
        from mi_ideas.backends.nnsight_backend import load_nnsight

        return load_nnsight(obj, remote=nnsight_remote_arg(remote))
    raise UsageError(
        f"cannot use a {type(obj).__module__}.{type(obj).__name__} as a model: pass a spec "
        f"string, an nnsight LanguageModel / TransformersModel, a TransformerLens "
        f"HookedTransformer / HookedSAETransformer, or a Hugging Face PreTrainedModel."
    )


def _no_remote(remote: Any, what: str) -> None:
    if remote not in (None, False, "", "off"):
        raise UsageError(
            f"{what} models run locally only; for remote execution use an nnsight spec "
            f"(hf:REPO or zoo:NAME) with --remote."
        )
