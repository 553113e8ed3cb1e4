"""What the host hands a running idea: :class:`RunContext` and its :class:`ArtifactStore`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mi_ideas.io import atomic_path, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from matplotlib.figure import Figure


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
    (a :class:`mi_ideas.data.Dataset`), and ``harvest(...)``. ``host`` is the host running
    the idea (its registries, e.g. ``host.judges``); None outside a host run.
    """

    def __init__(self, *, seed: int, run_dir: Path, quiet: bool = False, subject: Any = None,
                 saes: list[Any] | None = None, dataset: Any = None, host: Any = None):
        self.seed = seed
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.subject = subject
        self.saes = list(saes or [])
        self.dataset = dataset
        self.host = host
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

    def generator_for(self, name: str) -> "torch.Generator":
        """A torch generator for one sub-experiment, seeded from the run's seed and ``name``.

        Give each independent part of an idea its own (``ctx.generator_for("reinit-control")``)
        so skipping or adding one part never changes the random draws of another (e.g. a
        control that only runs locally must not shift what a remote run draws next).
        """
        import torch

        return torch.Generator().manual_seed(derived_seed(self.seed, name))

    def seed_for(self, name: str) -> int:
        """An integer seed for one sub-experiment, drawn from :meth:`generator_for`'s
        generator (for libraries that take a seed, e.g. SAELens initialisation or a
        re-initialised model): ``int(torch.randint(0, 2**31 - 1, (1,), generator=...))``."""
        import torch

        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator_for(name)))

    def rng_for(self, name: str) -> "np.random.Generator":
        """A numpy generator for one sub-experiment (see :meth:`generator_for`)."""
        import numpy as np

        return np.random.default_rng(derived_seed(self.seed, name))

    def progress(self, iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
        """A progress bar for a loop: tqdm on stderr when it is a terminal (or a notebook);
        one line per stage when it is not ("  desc: 12/12 in 0.4 s", when the loop ends), so
        logs stay readable; nothing when the run is quiet."""
        if self.quiet or not progress_bars_wanted():
            return StageLine(iterable, total=total, desc=desc, quiet=self.quiet)
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False)

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
        """Activations of ``ctx.subject`` at ``sites`` over ``dataset`` (default
        ``ctx.dataset``), streamed to safetensors shards on disk and cached by the model's
        and the data's fingerprints, so a second run reuses them.

        Returns a :class:`mi_ideas.harvest.Activations`: ``.load(site)`` gives the whole
        ``(n_rows, d)`` tensor, ``.iter_batches(site, batch_size)`` streams it, and
        ``.n_rows`` / ``.sites`` / ``.shards()`` describe it. Rows are token positions
        (BOS skipped) for ``positions="all"``, one per text for ``"last"``, or those a mask
        function picks. Keyword arguments go to
        :func:`mi_ideas.harvest.harvest_to_cache` (``positions``, ``batch_size``,
        ``budget_mb``, ``max_length``).
        """
        from mi_ideas.errors import UsageError
        from mi_ideas.harvest import harvest_to_cache

        if self.subject is None:
            raise UsageError("ctx.harvest needs a model: set uses_model = True on the Idea.")
        data = dataset if dataset is not None else self.dataset
        if data is None:
            raise UsageError(
                "ctx.harvest was called without a dataset in an idea that does not set "
                "uses_data = True: set uses_data (the run then gets --data) or pass "
                "dataset=... explicitly."
            )
        return harvest_to_cache(self.subject, data, [sites] if isinstance(sites, str) else list(sites),
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
        """Print a message for the user (stderr, unless the run is quiet) and append it to
        the run directory's ``log.txt``, so what a run said is kept with its results."""
        import sys

        if not self.quiet:
            print(message, file=sys.stderr)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(message.rstrip("\n") + "\n")


def progress_bars_wanted() -> bool:
    """Whether progress bars can be drawn: stderr is a terminal, or we are in a notebook."""
    import sys

    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class StageLine:
    """``ctx.progress`` when stderr is not a terminal: the loop runs as usual and one line is
    printed when it ends (``  harvest: 12/12 in 0.4 s``), instead of a bar redrawn with
    carriage returns that fills a log file. Supports what ideas use of tqdm: iteration,
    ``update``, ``close``, ``set_description``, ``set_postfix`` and ``with``."""

    def __init__(self, iterable: Any = None, *, total: int | None = None, desc: str = "",
                 quiet: bool = False):
        import time

        self.iterable, self.desc, self.quiet, self.n = iterable, desc, quiet, 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self._t0, self._closed = time.perf_counter(), False

    def __len__(self) -> int:
        return int(self.total or 0)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable if self.iterable is not None else ():
                yield item
                self.n += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        import sys
        import time

        if self._closed:
            return
        self._closed = True
        if not self.quiet:
            of = f"/{self.total}" if self.total is not None else ""
            print(f"  {self.desc or 'progress'}: {self.n}{of} in "
                  f"{time.perf_counter() - self._t0:.1f} s", file=sys.stderr, flush=True)

    def __enter__(self) -> "StageLine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed from a run seed and a sub-experiment name (sha256; stable across
    processes and Python versions, unlike ``hash``)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
