"""A run as Python objects: :class:`RunRecord`, and :func:`load_run` to read one back.

In a notebook a record shows itself as HTML (the answer, the metrics with their
definitions, the figures); ``record.figure(name)`` gives a figure's PNG (or a matplotlib
figure) and ``record.to_frame()`` the metrics as a pandas table."""

from __future__ import annotations

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

    def figure(self, name: str, *, matplotlib: bool = False) -> Any:
        """A figure of the run: its PNG bytes (a :class:`PNG`, which Jupyter shows inline),
        or with ``matplotlib=True`` a new matplotlib ``Figure`` showing that image (the
        original figure object is not kept: runs store PNGs, never pickles)."""
        figures = self.result.figures if self.result else {}
        rel = figures.get(name)
        path = self.path / rel if rel else self.path / "figures" / f"{name}.png"
        if not path.is_file():
            raise UsageError(
                f"run {str(self.path)!r} has no figure named {name!r}; it has "
                f"{sorted(figures) or 'none'} (record.result.figures)."
            )
        png = PNG(path.read_bytes())
        if not matplotlib:
            return png
        import io

        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        image = mpimg.imread(io.BytesIO(png), format="png")
        height, width = image.shape[:2]
        fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(image)
        ax.set_axis_off()
        return fig

    def to_frame(self) -> Any:
        """The metrics as a pandas ``DataFrame``: index ``metric``, columns ``value`` and
        ``definition`` (pandas is optional: a clear error says how to install it)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError(
                "record.to_frame() needs pandas, which is not installed; `pip install pandas` "
                "(or read record.result.metrics and record.result.definitions, plain dicts)."
            ) from None
        metrics = self.result.metrics if self.result else {}
        definitions = self.result.definitions if self.result else {}
        frame = pd.DataFrame({"value": pd.Series(metrics, dtype="float64"),
                              "definition": pd.Series({k: definitions.get(k, "") for k in metrics},
                                                      dtype="object")})
        frame.index.name = "metric"
        return frame

    def _repr_html_(self) -> str:
        """Jupyter's view of a run: status, the question, the answer with the headline numbers
        next to their controls, every metric with its definition, and the figures inline."""
        from mi_ideas.report.common import (
            esc, figure_html, headline_table, load_view, metrics_table, status_badge,
        )

        view = load_view(self.path)
        parts = [f"<div><h3>{esc(view.idea)} {status_badge(view.status)} "
                 f"<small><code>{esc(str(self.path))}</code></small></h3>"]
        if view.question:
            parts.append(f"<p><em>{esc(view.question)}</em></p>")
        if self.provenance.error:
            parts.append(f"<pre>{esc(self.provenance.error)}</pre>")
        if view.answer:
            parts.append(f"<p><strong>{esc(view.answer)}</strong></p>")
        if view.result is not None:
            parts.append(headline_table(view))
            parts.append(metrics_table(view.metrics, view.definitions))
            parts.extend(figure_html(self.path, name, rel)
                         for name, rel in (view.result.get("figures") or {}).items())
        return "".join(parts) + "</div>"

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


class PNG(bytes):
    """A figure's PNG bytes; Jupyter displays them as the image (``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        return bytes(self)


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
