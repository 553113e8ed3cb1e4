"""The model, dictionaries and dataset a run is given, resolved from specs before the run
directory exists (so a bad spec writes nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mi_ideas.errors import UsageError


@dataclass
class RunInputs:
    """The model, dictionaries and dataset a run was given (resolved from specs)."""

    subject: Any = None
    saes: list[Any] | None = None
    sae_specs: list[str] | None = None
    dataset: Any = None
    remote: Any = None

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.subject is not None:
            out["model"] = {"spec": self.subject.spec, "backend": self.subject.backend,
                            "fingerprint": self.subject.fingerprint,
                            "remote": self.remote if self.remote else None}
        if self.saes:
            from mi_ideas.dictionaries import site_of

            out["dictionaries"] = [
                {"spec": spec, "class": type(sae).__name__, "site": site_of(sae),
                 "d_sae": int(sae.cfg.d_sae)}
                for spec, sae in zip(self.sae_specs or [], self.saes)
            ]
        if self.dataset is not None:
            out["data"] = {"spec": self.dataset.spec, "fingerprint": self.dataset.fingerprint,
                           "n_texts": len(self.dataset)}
        return out


def resolve_inputs(idea_cls: Any, host: Any, *, model: Any, saes: Any, data: Any, remote: Any,
                   seed: int) -> RunInputs:
    """Check the idea takes what it is given, then load the model, dictionaries and data."""
    name = idea_cls.name
    for given, flag, uses in ((model, "--model", idea_cls.uses_model),
                              (saes, "--sae", idea_cls.uses_saes),
                              (data, "--data", idea_cls.uses_data)):
        if given not in (None, [], ()) and not uses:
            raise UsageError(f"{name!r} does not take {flag}: it does not use one.")
    if remote not in (None, False, "", "off"):
        if not idea_cls.uses_model:
            raise UsageError(f"{name!r} uses no model, so --remote does not apply.")
        if not idea_cls.remote:
            raise UsageError(
                f"{name!r} cannot run remotely: its model calls need local access (it says "
                f"remote = False). Run it without --remote on a machine that holds the model."
            )
    inputs = RunInputs(remote=remote)
    if idea_cls.uses_model:
        from mi_ideas.host import resolve_model

        inputs.subject = resolve_model(model if model is not None else idea_cls.default_model,
                                      remote=remote, host=host)
    if idea_cls.uses_saes:
        from mi_ideas.host import resolve_dictionary

        specs = list(saes) if saes not in (None, [], ()) else list(idea_cls.default_saes)
        if isinstance(saes, str):
            specs = [saes]
        inputs.saes = [resolve_dictionary(s, inputs.subject, host=host) for s in specs]
        inputs.sae_specs = [s if isinstance(s, str) else type(s).__name__ for s in specs]
    if idea_cls.uses_data:
        from mi_ideas.host import resolve_dataset

        inputs.dataset = resolve_dataset(data if data is not None else idea_cls.default_data,
                                      seed=seed, host=host)
    return inputs


