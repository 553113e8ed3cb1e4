"""Sparse dictionaries (SAEs, transcoders) by spec, as SAELens's own objects.

Specs are resolved by :func:`mi_ideas.host.resolve_dictionary`, which picks a loader by
prefix (these built-ins, and any a plugin registers through
``mi_ideas_register_dictionaries``):

| spec | loads with |
|---|---|
| ``saelens:RELEASE/SAE_ID`` | ``SAE.from_pretrained(RELEASE, SAE_ID)`` (SAELens's registry; needs the Hub) |
| ``zoo:NAME`` | ``SAE.load_from_disk`` on a dictionary shipped in ``mi_ideas/zoo`` |
| ``sparsify:DIR`` | an EleutherAI ``sparsify`` checkpoint, as a SAELens object (:mod:`.sparsify`) |
| a local directory | ``SAE.load_from_disk`` (a directory written by ``sae.save_model``) |

``SAE.load_from_disk`` picks the class from the saved architecture, so a transcoder comes
back as a SAELens ``Transcoder``. Everything SAELens does with these objects still works;
:func:`site_of` maps ``cfg.metadata.hook_name`` to a standard site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mi_ideas.errors import UsageError
from mi_ideas.sites import from_hook_name


def load_saelens_release(rest: str) -> Any:
    """``saelens:RELEASE/SAE_ID``: ``SAE.from_pretrained`` from SAELens's registry (Hub)."""
    from sae_lens import SAE

    release, sep, sae_id = rest.partition("/")
    if not sep or not release or not sae_id:
        raise UsageError(
            f"dictionary spec 'saelens:{rest}' should be saelens:RELEASE/SAE_ID, e.g. "
            f"saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre."
        )
    try:
        return SAE.from_pretrained(release, sae_id)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(
            f"SAELens could not load {release!r} / {sae_id!r}: {type(exc).__name__}: {exc}. "
            f"Check the release and id in SAELens's pretrained_saes.yaml; offline, only "
            f"local directories, sparsify: checkpoints and zoo: dictionaries load."
        ) from None


def load_zoo_dictionary(rest: str) -> Any:
    """``zoo:NAME``: a dictionary shipped in ``mi_ideas/zoo`` (a SAELens directory)."""
    from mi_ideas import zoo

    try:
        path = zoo.sae_dir(rest)
    except KeyError:
        names = [e.name for e in zoo.list_entries() if e.kind not in ("model", "checkpoint")]
        raise UsageError(
            f"the zoo has no dictionary named {rest!r}; its dictionaries are "
            f"{', '.join(names)} (`mi-ideas zoo` lists everything it ships)."
        ) from None
    return load_sae_directory(path, spec=f"zoo:{rest}")


def load_sae_directory(path: str | Path, spec: str | None = None) -> Any:
    """A directory written by SAELens's ``save_model`` (``cfg.json`` + weights)."""
    from sae_lens import SAE

    path = Path(path).expanduser()
    spec = spec or str(path)
    if not (path / "cfg.json").is_file():
        raise UsageError(
            f"{spec!r} is not a SAELens dictionary directory (no cfg.json in {str(path)!r}). "
            f"Use saelens:RELEASE/SAE_ID, zoo:NAME (see `mi-ideas zoo`), sparsify:DIR, or a "
            f"directory written by SAELens's save_model."
        )
    try:
        return SAE.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UsageError(
            f"SAELens could not load the dictionary in {str(path)!r}: {type(exc).__name__}: {exc}."
        ) from None


def load_sparsify(rest: str) -> Any:
    """``sparsify:DIR[/HOOKPOINT]``: an EleutherAI sparsify checkpoint as a SAELens object
    (see :mod:`mi_ideas.dictionaries.sparsify`)."""
    from mi_ideas.dictionaries.sparsify import load_sparsify_checkpoint

    return load_sparsify_checkpoint(rest)


def hook_name_of(sae: Any) -> str:
    """The TransformerLens hook name a dictionary reads, from ``cfg.metadata``."""
    meta = getattr(sae.cfg, "metadata", None)
    hook = getattr(meta, "hook_name", None) if meta is not None else None
    if not hook:
        raise UsageError(
            "this dictionary has no cfg.metadata.hook_name, so mi-ideas cannot tell which "
            "activations it reads. Set it before saving (sae.cfg.metadata.hook_name = "
            "'blocks.L.hook_resid_pre') or load it from a SAELens release that records it."
        )
    return hook


def site_of(sae: Any) -> str:
    """The standard site a dictionary reads (``resid_pre.2`` for ``blocks.2.hook_resid_pre``)."""
    return from_hook_name(hook_name_of(sae))


def output_site_of(sae: Any) -> str | None:
    """For a transcoder, the site it writes (``cfg.metadata.hook_name_out``), else None."""
    meta = getattr(sae.cfg, "metadata", None)
    out = getattr(meta, "hook_name_out", None) or getattr(sae.cfg, "hook_name_out", None)
    return from_hook_name(out) if out else None


def check_fits(sae: Any, subject: Any, label: str = "dictionary") -> None:
    """A clear error when a dictionary's site or width does not fit the subject."""
    site = subject.site(site_of(sae)).name
    d_in = int(sae.cfg.d_in)
    if d_in != subject.d_model:
        raise UsageError(
            f"{label} reads {site} with d_in={d_in}, but {subject.spec} has "
            f"d_model={subject.d_model}: it was trained on another model. Pick a dictionary "
            f"for this model, or the model it was trained on."
        )
