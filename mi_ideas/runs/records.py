"""A run as Python objects: :class:`RunRecord`, and :func:`load_run` to read one back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_ideas.contract import IdeaConfig, IdeaResult, Provenance
from mi_ideas.errors import UsageError


@dataclass
class RunRecord:
    """A run: its idea, validated config, seed, directory, provenance and (once done) result."""

    idea: str
    config: IdeaConfig
    seed: int
    path: Path
    provenance: Provenance
    result: IdeaResult | None = None

    def load_artifact(self, name: str) -> dict[str, Any]:
        """Read an artifact back: a dict of tensors (safetensors) or JSON data."""
        rel = (self.result.artifacts if self.result else {}).get(name)
        candidates = [self.path / rel] if rel else []
        candidates += [self.path / "artifacts" / f"{name}.safetensors",
                       self.path / "artifacts" / f"{name}.json"]
        for path in candidates:
            if path.is_file():
                if path.suffix == ".json":
                    return json.loads(path.read_text(encoding="utf-8"))
                from safetensors.torch import load_file

                return load_file(str(path))
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
    provenance = Provenance.model_validate_json(prov_path.read_text(encoding="utf-8"))
    host = host or get_host()
    idea_cls = host.get_idea(provenance.idea)
    config = idea_cls.Config.model_validate_json((path / "config.json").read_text(encoding="utf-8"))
    result = None
    result_path = path / "result.json"
    if result_path.is_file():
        data = json.loads(result_path.read_text(encoding="utf-8"))
        data["provenance"] = provenance.model_dump(mode="json")
        data["run_dir"] = str(path)  # the directory may have moved since the run
        result = idea_cls.Result.model_validate(data)
    return RunRecord(
        idea=provenance.idea, config=config, seed=provenance.seed, path=path,
        provenance=provenance, result=result,
    )
