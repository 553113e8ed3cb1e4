"""A run as Python objects: :class:`RunRecord`, and :func:`load_run` to read one back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_ideas.contract import IdeaConfig, IdeaResult, Provenance
from mi_ideas.errors import UsageError
from mi_ideas.io import read_run_file


@dataclass
class RunRecord:
    """A run: its idea, validated config, seed, directory, provenance and (once done) result."""

    idea: str
    config: IdeaConfig
    seed: int
    path: Path
    provenance: Provenance
    result: IdeaResult | None = None

    @property
    def status(self) -> str:
        """The run's status as a reader should see it: provenance's, except ``stale`` for a
        run that says ``running`` but whose writing process is gone (killed, crashed)."""
        from mi_ideas.locks import shown_status

        return shown_status(self.path, self.provenance.status)

    def load_artifact(self, name: str) -> dict[str, Any]:
        """Read an artifact back: a dict of tensors (safetensors) or JSON data."""
        rel = (self.result.artifacts if self.result else {}).get(name)
        candidates = [self.path / rel] if rel else []
        candidates += [self.path / "artifacts" / f"{name}.safetensors",
                       self.path / "artifacts" / f"{name}.json"]
        for path in candidates:
            if path.is_file():
                if path.suffix == ".json":
                    return read_run_file(path, lambda data: data)
                from safetensors import SafetensorError
                from safetensors.torch import load_file

                try:
                    return load_file(str(path))
                except (SafetensorError, OSError) as exc:
                    raise UsageError(
                        f"the artifact {str(path)!r} is corrupt or truncated ({exc}); it "
                        f"cannot be read as safetensors. Re-run the idea to recreate it."
                    ) from None
        raise UsageError(
            f"run {str(self.path)!r} has no artifact named {name!r}; it has "
            f"{sorted(self.result.artifacts) if self.result else []}."
        )


def load_run(path: str | Path, host: Any = None) -> RunRecord:
    """Read a run directory back into the idea's own Config and Result objects."""
    from mi_ideas.host import get_host

    path = Path(path)
    prov_path = path / "provenance.json"
    if not prov_path.is_file():
        raise UsageError(
            f"{str(path)!r} is not a run directory (no provenance.json); run directories "
            f"look like runs/<idea>/<timestamp>-<hash>/."
        )
    provenance = read_run_file(prov_path, Provenance.model_validate)
    host = host or get_host()
    idea_cls = host.get_idea(provenance.idea)
    config = read_run_file(path / "config.json", idea_cls.Config.model_validate)
    result = None
    result_path = path / "result.json"
    if result_path.is_file():
        def with_run(data: Any) -> Any:
            if isinstance(data, dict):
                data["provenance"] = provenance.model_dump(mode="json")
                data["run_dir"] = str(path)  # the directory may have moved since the run
            return idea_cls.Result.model_validate(data)

        result = read_run_file(result_path, with_run)
    return RunRecord(
        idea=provenance.idea, config=config, seed=provenance.seed, path=path,
        provenance=provenance, result=result,
    )
