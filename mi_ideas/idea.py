"""The idea contract: what a plugin implements and what the host hands it.

An idea is a class with a name, a one-line summary, a pydantic ``Config`` and ``Result``,
and a ``run(ctx, config)`` method::

    class MyIdea(Idea):
        name = "my-idea"
        summary = "One line for `mi-ideas list`."
        size = "short"
        Config = MyConfig      # subclass of IdeaConfig
        Result = MyResult      # subclass of IdeaResult

        def run(self, ctx: RunContext, config: MyConfig) -> MyResult: ...

Nothing here imports torch: ``mi-ideas list`` must stay fast.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from matplotlib.figure import Figure

Size = Literal["large", "medium", "short", "other"]
SIZES: tuple[str, ...] = ("large", "medium", "short", "other")


class IdeaConfig(BaseModel):
    """Base class of every idea's config.

    Configs are frozen (never edited after validation) and reject unknown keys, so a
    misspelt option is an error rather than silently ignored. Every field must have a
    description and a default that runs on the embedded model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Provenance(BaseModel):
    """Where a run's numbers came from; written to ``provenance.json``."""

    model_config = ConfigDict(extra="allow")

    idea: str
    plugin: str | None = Field(None, description="Name of the plugin that registered the idea.")
    plugin_distribution: str | None = None
    plugin_version: str | None = None
    mi_ideas_version: str
    python: str
    platform: str
    packages: dict[str, str] = Field(default_factory=dict, description="Versions of key libraries.")
    seed: int
    git_revision: str | None = None
    command: list[str] = Field(default_factory=list)
    status: Literal["running", "complete", "failed", "interrupted"] = "running"
    error: str | None = None
    started_at: str
    finished_at: str | None = None
    wall_time_s: float | None = None


class IdeaResult(BaseModel):
    """Base class of every idea's result.

    ``metrics`` are flat numbers for tables (each with its definition in
    ``definitions``, as the field expects: explained variance alone is ambiguous);
    ``details`` hold JSON-serialisable data for plots; tensors never go here but into
    artifacts (safetensors), listed in ``artifacts`` by name and path relative to the
    run directory. The host fills ``provenance`` and ``run_dir``.
    """

    # NaN / inf are legitimate metric values (e.g. no threshold crossing); keep them as
    # JSON constants so a run reads back exactly.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    metrics: dict[str, float] = Field(default_factory=dict, description="Headline numbers, flat.")
    definitions: dict[str, str] = Field(
        default_factory=dict, description="Definition of each metric, by metric name."
    )
    details: dict[str, Any] = Field(default_factory=dict, description="Data behind the figures.")
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="Artifact name -> path relative to the run directory."
    )
    figures: dict[str, str] = Field(
        default_factory=dict, description="Figure name -> PNG path relative to the run directory."
    )
    provenance: Provenance | None = None
    run_dir: str | None = None


class Idea:
    """Base class of an idea. Subclass it and register the subclass from a plugin."""

    name: ClassVar[str]
    summary: ClassVar[str]
    size: ClassVar[Size] = "other"
    Config: ClassVar[type[IdeaConfig]] = IdeaConfig
    Result: ClassVar[type[IdeaResult]] = IdeaResult
    #: Whether the idea's model calls can run remotely on NDIF.
    remote: ClassVar[bool] = False
    #: Whether the idea studies a model (``--model``; ``ctx.subject``) and its default spec.
    uses_model: ClassVar[bool] = False
    default_model: ClassVar[str] = "zoo:stories-gpt2"
    #: Whether the idea uses sparse dictionaries (``--sae``; ``ctx.saes``) and the defaults.
    uses_saes: ClassVar[bool] = False
    default_saes: ClassVar[tuple[str, ...]] = ("zoo:stories-gpt2-resid2-topk",)
    #: Whether the idea reads a dataset (``--data``; ``ctx.dataset``) and its default spec.
    uses_data: ClassVar[bool] = False
    default_data: ClassVar[str] = "zoo:stories"

    def run(self, ctx: RunContext, config: Any) -> IdeaResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """The idea's long description: its docstring."""
        import inspect

        return inspect.cleandoc(cls.__doc__ or cls.summary)


class ArtifactStore:
    """Writes a run's artifacts (safetensors) and figures (PNG), each atomically."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.saved: dict[str, str] = {}
        self.figures: dict[str, str] = {}

    def save_tensors(
        self, name: str, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None
    ) -> Path:
        """Save a dict of tensors as ``artifacts/NAME.safetensors``; returns its path."""
        from safetensors.torch import save_file

        path = self.run_dir / "artifacts" / f"{name}.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self.saved[name] = str(path.relative_to(self.run_dir))
        return path

    def save_json(self, name: str, data: Any) -> Path:
        """Save JSON-serialisable data as ``artifacts/NAME.json``; returns its path."""
        import json

        path = self.run_dir / "artifacts" / f"{name}.json"
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))
        self.saved[name] = str(path.relative_to(self.run_dir))
        return path

    def save_figure(self, name: str, fig: "Figure") -> Path:
        """Save a matplotlib figure as ``figures/NAME.png`` and close it; returns its path."""
        import matplotlib.pyplot as plt

        path = self.run_dir / "figures" / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.figures[name] = str(path.relative_to(self.run_dir))
        return path


class RunContext:
    """Everything a run may use, and nothing global.

    ``seed`` and the seeded generators (``generator`` for torch, ``rng`` for numpy),
    ``progress(...)`` for progress bars, ``artifacts`` for files, ``log(...)`` for
    messages; for ideas that declare them, ``subject`` (the model, a
    :class:`mi_ideas.subject.Subject`), ``saes`` (SAELens objects) and ``dataset``
    (a :class:`mi_ideas.data.Dataset`), and ``harvest(...)``.
    """

    def __init__(self, *, seed: int, run_dir: Path, quiet: bool = False, subject: Any = None,
                 saes: list[Any] | None = None, dataset: Any = None):
        self.seed = seed
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.subject = subject
        self.saes = list(saes or [])
        self.dataset = dataset
        self.artifacts = ArtifactStore(self.run_dir)
        self._generator: torch.Generator | None = None
        self._rng: np.random.Generator | None = None

    @property
    def generator(self) -> "torch.Generator":
        """A torch CPU generator seeded with the run's seed (created on first use)."""
        if self._generator is None:
            import torch

            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    @property
    def rng(self) -> "np.random.Generator":
        """A numpy generator seeded with the run's seed (created on first use)."""
        if self._rng is None:
            import numpy as np

            self._rng = np.random.default_rng(self.seed)
        return self._rng

    def progress(self, iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
        """A tqdm progress bar on stderr (silent when the run is quiet)."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=self.quiet, leave=False)

    def checkpoint(self, name: str, tensors: dict[str, "torch.Tensor"],
                   state: dict[str, Any] | None = None) -> None:
        """Save a resumable state as ``checkpoints/NAME.safetensors`` (atomically).

        ``tensors`` are saved as safetensors, ``state`` (JSON-serialisable: a step count,
        a loss history) in its metadata. After a crash or Ctrl-C, ``mi-ideas resume
        RUN_DIR`` runs the idea again in the same directory, where :meth:`restore` returns
        the latest checkpoint. Nothing is pickled.
        """
        import json

        from safetensors.torch import save_file

        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"state": json.dumps(state or {})})

    def restore(self, name: str) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]] | None:
        """The ``(tensors, state)`` last saved by :meth:`checkpoint` under ``name``, or None."""
        import json

        from safetensors import safe_open

        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            state = json.loads((f.metadata() or {}).get("state", "{}"))
        return tensors, state

    def harvest(self, sites: Any, *, dataset: Any = None, **kwargs: Any) -> Any:
        """Harvest ``sites`` from ``ctx.subject`` over ``dataset`` (default ``ctx.dataset``),
        cached and streamed to disk; see :func:`mi_ideas.harvest.harvest`."""
        from mi_ideas.harvest import harvest

        if self.subject is None:
            raise RuntimeError("this idea has no subject: set uses_model = True on the Idea")
        return harvest(self.subject, dataset if dataset is not None else self.dataset,
                       [sites] if isinstance(sites, str) else list(sites),
                       progress=None if self.quiet else self.progress, **kwargs)

    @contextlib.contextmanager
    def torch_threads(self, n: int = 1) -> Iterator[None]:
        """Run a block with ``n`` torch threads, restoring the setting afterwards.

        For tiny models one thread is faster (threads only add overhead) and makes float
        reductions, hence the numbers, reproducible.
        """
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def log(self, message: str) -> None:
        """Print a message for the user (stderr), unless the run is quiet."""
        if not self.quiet:
            import sys

            print(message, file=sys.stderr)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A crash mid-write leaves no partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
