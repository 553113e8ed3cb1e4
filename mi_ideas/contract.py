"""The idea contract: what a plugin implements (Idea, IdeaConfig, IdeaResult, Provenance).

An idea is a class with a name, a one-line summary, a pydantic ``Config`` and ``Result``,
and a ``run(ctx, config)`` method::

    class MyIdea(Idea):
        name = "my-idea"
        summary = "One line for `mi-ideas list`."
        size = "short"
        Config = MyConfig      # subclass of IdeaConfig
        Result = MyResult      # subclass of IdeaResult

        def run(self, ctx: RunContext, config: MyConfig) -> MyResult: ...

The host hands ``run`` a :class:`mi_ideas.context.RunContext`. Nothing here imports torch:
``mi-ideas list`` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # pragma: no cover
    from mi_ideas.context import RunContext

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

    @model_validator(mode="after")
    def _every_metric_defined(self) -> "IdeaResult":
        undefined = [k for k in self.metrics if not str(self.definitions.get(k) or "").strip()]
        if undefined:
            shown = ", ".join(repr(k) for k in undefined[:5])
            more = f" and {len(undefined) - 5} more" if len(undefined) > 5 else ""
            raise ValueError(
                f"metric(s) {shown}{more} have no definition. Every metric needs one sentence "
                f"saying exactly what it measures: add it with result.add(name, value, "
                f"definition), or pass definitions={{name: '...'}} next to metrics."
            )
        return self

    def add(self, name: str, value: Any, definition: str) -> None:
        """Record a metric with its definition (the one way ideas add metrics).

        ``value`` is anything ``float()`` accepts (a 0-d tensor, a numpy scalar); NaN is
        kept (e.g. "never crossed"). Adding a name twice is an error: each metric is
        computed once.
        """
        if not isinstance(definition, str) or not definition.strip():
            raise ValueError(f"metric {name!r} needs a non-empty definition.")
        if name in self.metrics:
            raise ValueError(f"metric {name!r} was already added to this result.")
        self.metrics[name] = float(value)
        self.definitions[name] = definition

    def _repr_html_(self) -> str:
        """Jupyter's view of a result: the metrics with their definitions, and the figures
        inline when the run directory is known (kept here, not in mi_ideas.report: the
        contract sits below the report in the layers)."""
        import base64
        import html
        from pathlib import Path

        def fmt(v: float) -> str:
            return str(int(v)) if v == v and abs(v) < 1e12 and v == int(v) else f"{v:.4g}"

        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{fmt(v)}</td>"
            f"<td style='text-align:left'>{html.escape(self.definitions.get(k, ''))}</td></tr>"
            for k, v in self.metrics.items())
        parts = [f"<div><strong>{html.escape(type(self).__name__)}</strong>"
                 + (f" <code>{html.escape(self.run_dir)}</code>" if self.run_dir else "")
                 + "<table><tr><th>metric</th><th>value</th><th style='text-align:left'>"
                 f"definition</th></tr>{rows}</table>"]
        for name, rel in self.figures.items():
            path = Path(self.run_dir or ".") / rel
            if self.run_dir and path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(f"<figure><img alt='{html.escape(name)}' style='max-width:100%' "
                             f"src='data:image/png;base64,{data}'><figcaption>"
                             f"{html.escape(name)}</figcaption></figure>")
        return "".join(parts) + "</div>"


@dataclass(frozen=True)
class MemoryItem:
    """One large allocation an idea will make: what it is, its size, and the config fields
    that scale it (named in the error when a config is over the memory budget)."""

    what: str
    bytes: int
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headline:
    """One of the 3-5 numbers that decide an idea's question, next to its control.

    ``metric`` and ``control`` are names in ``result.metrics`` (``control`` is the number
    the metric must be read against, e.g. the re-initialised model or a shuffled
    baseline; None when there is none); ``label`` is a short human name for the pair.
    Run pages, the index and the demo show these first.
    """

    metric: str
    control: str | None = None
    label: str = ""


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
    #: Named config overrides (``mi-ideas run IDEA --preset NAME``), e.g. ``{"quick": {...}}``
    #: for a fast run of the same experiment; every value must validate against ``Config``.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def run(self, ctx: RunContext, config: Any) -> IdeaResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def check(cls, config: Any, subject: Any = None, *, dataset: Any = None, saes: Any = None,
              host: Any = None) -> None:
        """Refuse a config that the run's inputs cannot satisfy, before anything is written.

        Called by the host after the model, dictionaries and data are resolved and before
        the memory estimate and the run directory: ``subject`` (or None for ideas without a
        model), ``dataset`` (the run's :class:`mi_ideas.data.Dataset`, or None), ``saes``
        (the loaded SAELens objects, or None) and ``host`` (its registries, e.g.
        ``host.judges``). Raise :class:`mi_ideas.errors.UsageError` (or ``ConfigError``)
        with a one-paragraph message saying what is wrong and how to fix it; it reaches the
        user as a usage error (exit 2) and nothing is written. What pydantic can check from
        the config alone belongs in the config's validators; this is for what needs the
        inputs (a site the model lacks, a prompt slot that is not whole tokens, a judge
        name the host does not have, an optional package that is missing). The default
        checks nothing.
        """

    @classmethod
    def estimate_memory(cls, config: Any, subject: Any = None) -> list[MemoryItem] | None:
        """The large tensors a run of ``config`` will hold at its peak, before it allocates
        anything: a list of :class:`MemoryItem` (sizes from the config and, for ideas that
        study a model, ``subject.d_model`` / ``n_layers`` / ``d_vocab``). The host refuses a
        config whose total exceeds the memory budget (``--memory-budget``), with these
        items in the message. ``None`` means no estimate (the run is not checked). An
        estimate whose sizes grow with the data may take a third parameter, ``dataset``
        (the run's :class:`mi_ideas.data.Dataset`, or None). Checks of the config against
        the inputs belong in :meth:`check`, which runs first.
        """
        return None

    @classmethod
    def headlines(cls, result: IdeaResult) -> list[Headline]:
        """The numbers that decide the question, each with its control (3-5 of them).

        Override in an idea; names not in ``result.metrics`` are skipped by the report.
        The default, an empty list, makes reports show the first few metrics instead.
        """
        return []

    @classmethod
    def answer(cls, result: IdeaResult) -> str:
        """One generated sentence saying what the headline numbers say (plain text).

        Override in an idea; it must be derived from ``result`` (never a fixed claim),
        and say "no effect" where the numbers say so. The default is empty.
        """
        return ""

    @classmethod
    def description(cls) -> str:
        """The idea's long description: its docstring."""
        import inspect

        return inspect.cleandoc(cls.__doc__ or cls.summary)


