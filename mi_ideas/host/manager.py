"""The plugin manager: finds plugins, isolates broken ones, and indexes what they register.

Plugins are loaded from the entry-point group ``mi_ideas`` one at a time (built-in ideas
come through the same group), so one that fails to import or register is recorded with
its traceback and the rest still work. Environment:

- ``MI_IDEAS_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name (also
  ``--disable-plugin``); ``mi-ideas plugins`` lists the names. A name that matches no
  plugin is a warning, not silence.
- ``MI_IDEAS_STRICT_PLUGINS=1`` makes any plugin failure fatal (CI uses it).
- ``MI_IDEAS_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable, Iterator, Literal

import pluggy

from mi_ideas import hookspecs
from mi_ideas.errors import HostError, PluginLoadError, UnknownIdeaError
from mi_ideas.contract import Idea, IdeaConfig, IdeaResult

ENTRY_POINT_GROUP = "mi_ideas"
BUILTINS = "mi-ideas-builtins"
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """One plugin as `mi-ideas plugins` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    ideas: list[str] = field(default_factory=list)
    status: Literal["loaded", "disabled", "failed"] = "loaded"
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "ideas": list(self.ideas),
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class Registered:
    """One entry of a prefix registry (model back-ends, datasets, dictionary formats).

    ``accepts`` / ``from_object`` (back-ends only, optional): a predicate saying whether the
    back-end takes a given Python object (a model the user built), and the function that
    wraps such an object into a subject, ``from_object(obj, remote)``.
    """

    prefix: str
    loader: Any
    description: str
    plugin: str
    accepts: Any = None
    from_object: Any = None


@dataclass(frozen=True)
class RegisteredJudge:
    """One judge of generated text: ``judge(samples, subject) -> [score in [0, 1], ...]``
    (see ``mi_ideas_register_judges``), what it scores (``kind``) and its plugin."""

    name: str
    judge: Any
    description: str
    kind: str
    plugin: str


def _own_version() -> str | None:
    try:
        return metadata.version("mi-ideas")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


class Host:
    """A plugin manager plus the index of ideas its plugins registered.

    ``Host()`` loads installed plugins; ``Host(load_entrypoints=False)`` starts empty
    (tests register plugin objects with :meth:`register_plugin`).
    """

    def __init__(
        self,
        *,
        load_entrypoints: bool = True,
        disabled: Iterable[str] = (),
        strict: bool | None = None,
        trace: bool | None = None,
    ):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = _env_flag("MI_IDEAS_STRICT_PLUGINS") if strict is None else strict
        self.disabled = set(disabled) | set(_env_list("MI_IDEAS_DISABLE_PLUGINS"))
        self.plugins: dict[str, PluginInfo] = {}
        self._ideas: dict[str, type[Idea]] | None = None
        self._idea_plugin: dict[str, str] = {}
        if _env_flag("MI_IDEAS_TRACE_PLUGINS") if trace is None else trace:
            self._trace()
        for name in self.disabled:
            self.pm.set_blocked(name)
        self._registries: dict[str, dict[str, Registered]] = {}
        from mi_ideas.host import builtins

        # The host's own back-ends and datasets, registered through the same hooks a
        # plugin uses (like llm's default plugins).
        builtin_info = PluginInfo(name=BUILTINS, distribution="mi-ideas", version=_own_version())
        self.plugins[BUILTINS] = builtin_info
        self._register(builtins, builtin_info)
        if load_entrypoints:
            self._load_entrypoints()
            self._warn_unknown_disabled()

    def _warn_unknown_disabled(self) -> None:
        unknown = sorted(self.disabled - set(self.plugins))
        if unknown:
            known = ", ".join(sorted(n for n in self.plugins if n != BUILTINS)) or "none"
            print(
                f"mi-ideas: warning: asked to disable {', '.join(map(repr, unknown))}, but no "
                f"installed plugin has that entry-point name (installed: {known}); "
                f"`mi-ideas plugins` lists the names.",
                file=sys.stderr,
            )

    # -- loading -------------------------------------------------------------------

    def _load_entrypoints(self) -> None:
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            self.plugins[ep.name] = info
            if ep.name in self.disabled:
                info.status = "disabled"
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything on import
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(info, f"could not import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            self._register(plugin, info)

    def register_plugin(self, plugin: Any, name: str | None = None) -> PluginInfo:
        """Register a plugin object (a module, class or instance with hookimpls).

        Used by tests and by :mod:`mi_ideas.testing`; installed packages use the entry
        point instead. Returns the plugin's :class:`PluginInfo`.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=name, distribution=None, version=None)
        self.plugins[name] = info
        if name in self.disabled:
            info.status = "disabled"
            return info
        self._register(plugin, info)
        return info

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register_plugin` (and its ideas)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.plugins.pop(name, None)
        self._ideas = None
        self._registries.clear()

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
            self._check_hook_names(info.name)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(info, f"{type(exc).__name__}: {exc}")
            return
        self._ideas = None
        self._registries.clear()

    def _check_hook_names(self, plugin_name: str) -> None:
        """Reject a hookimpl whose name is not a known hook (a typo fails loudly)."""
        known = hookspecs.hook_names()
        for caller in self.pm.get_hookcallers(self.pm.get_plugin(plugin_name)) or []:
            if caller.name in known:
                continue
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginLoadError(
                f"plugin {plugin_name!r} implements {caller.name!r}, which is not an "
                f"mi-ideas hook{hint} The hooks are listed in mi_ideas/hookspecs.py."
            )

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.status = "failed"
        info.error = error
        info.traceback = traceback.format_exc()
        if self.strict:
            raise PluginLoadError(
                f"plugin {info.name!r} ({info.distribution or 'no distribution'}) failed to "
                f"load: {error}. MI_IDEAS_STRICT_PLUGINS is set, so this is fatal; unset it "
                f"to skip the plugin, or disable it with MI_IDEAS_DISABLE_PLUGINS={info.name}."
            )
        print(
            f"mi-ideas: warning: plugin {info.name!r} failed to load and is skipped "
            f"({error}); `mi-ideas plugins` shows the details.",
            file=sys.stderr,
        )

    def _trace(self) -> None:
        def before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
            names = ", ".join(i.plugin_name for i in hook_impls)
            print(f"mi-ideas trace: {hook_name}({', '.join(kwargs)}) -> [{names}]", file=sys.stderr)

        def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
            status = "raised" if outcome.exception is not None else "ok"
            print(f"mi-ideas trace: {hook_name} {status}", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)

    # -- ideas ---------------------------------------------------------------------

    @property
    def ideas(self) -> dict[str, type[Idea]]:
        """Every registered idea by name (collected on first use)."""
        if self._ideas is None:
            self._ideas = self._collect_ideas()
        return self._ideas

    def _per_plugin(self, hook_name: str, check: Any = None) -> Iterator[tuple[PluginInfo, list]]:
        """Call a ``register``-style hook on each loaded plugin alone; yield what it registered.

        One plugin at a time, so every registration is attributed to its plugin and a plugin
        whose hook raises (or registers something ``check`` rejects) is marked failed and
        skipped while the others go on.
        """
        for info in list(self.plugins.values()):
            plugin = self.pm.get_plugin(info.name) if info.status == "loaded" else None
            if plugin is None:
                continue
            collected: list[tuple] = []
            caller = self.pm.subset_hook_caller(
                hook_name, remove_plugins=[p for p in self.pm.get_plugins() if p is not plugin])
            try:
                caller(register=lambda *args, _into=collected, **kw: _into.append((args, kw)))
                for args, kw in collected if check else ():
                    check(*args, **kw)
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.pm.unregister(plugin)
                self._fail(info, f"{hook_name} raised {type(exc).__name__}: {exc}")
                if hook_name != "mi_ideas_register_ideas":
                    self._ideas = None  # the failed plugin's ideas go with it
                continue
            yield info, collected

    def _collect_ideas(self) -> dict[str, type[Idea]]:
        ideas: dict[str, type[Idea]] = {}
        owner: dict[str, str] = {}
        for info in self.plugins.values():
            info.ideas = []
        for info, collected in self._per_plugin("mi_ideas_register_ideas", _validate_idea_class):
            for (idea_cls,), _ in collected:
                if idea_cls.name in ideas:
                    raise HostError(
                        f"two plugins register an idea named {idea_cls.name!r}: "
                        f"{owner[idea_cls.name]!r} and {info.name!r}. Disable one of them "
                        f"(--disable-plugin NAME or MI_IDEAS_DISABLE_PLUGINS=NAME) or rename "
                        f"the idea in your plugin."
                    )
                ideas[idea_cls.name] = idea_cls
                owner[idea_cls.name] = info.name
                info.ideas.append(idea_cls.name)
        self._idea_plugin = owner
        return dict(sorted(ideas.items()))

    def get_idea(self, name: str) -> type[Idea]:
        """The idea class registered as ``name``; an error suggests close names."""
        ideas = self.ideas
        if name in ideas:
            return ideas[name]
        close = difflib.get_close_matches(name, list(ideas), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownIdeaError(
            f"no idea named {name!r}.{hint} `mi-ideas list` shows every idea; an idea from a "
            f"plugin appears once its package is installed (see `mi-ideas plugins`)."
        )

    def plugin_of(self, idea_name: str) -> PluginInfo | None:
        """The plugin that registered an idea."""
        self.ideas  # noqa: B018 - make sure the index is built
        owner = self._idea_plugin.get(idea_name)
        return self.plugins.get(owner) if owner else None

    # -- prefix registries: model back-ends, datasets, dictionary formats ---------------

    @property
    def backends(self) -> dict[str, Registered]:
        """Model back-ends by spec prefix (``hf``, ``tl``, ``zoo``, ... and plugins')."""
        return self._registry("mi_ideas_register_backends", "model back-end")

    @property
    def datasets(self) -> dict[str, Registered]:
        """Dataset loaders by spec prefix (``zoo``, ``text``, ``hf``, ``template``, ...)."""
        return self._registry("mi_ideas_register_datasets", "dataset")

    @property
    def dictionary_formats(self) -> dict[str, Registered]:
        """Dictionary loaders by spec prefix (``saelens``, ``zoo``, ``sparsify``, ...)."""
        return self._registry("mi_ideas_register_dictionaries", "dictionary format")

    def _registry(self, hook_name: str, what: str) -> dict[str, Registered]:
        if hook_name in self._registries:
            return self._registries[hook_name]
        found: dict[str, Registered] = {}
        for info, entries in self._per_plugin(hook_name, _validate_registration):
            for (prefix, loader, *rest), kw in entries:
                if prefix in found:
                    raise HostError(
                        f"two plugins register a {what} for the prefix {prefix!r}: "
                        f"{found[prefix].plugin!r} and {info.name!r}. Disable one of them "
                        f"(--disable-plugin NAME) or choose another prefix."
                    )
                found[prefix] = Registered(prefix, loader, rest[0] if rest else "", info.name,
                                           accepts=kw.get("accepts"),
                                           from_object=kw.get("from_object"))
        self._registries[hook_name] = found
        return found

    @property
    def judges(self) -> dict[str, RegisteredJudge]:
        """Judges of generated text by name (``mi_ideas_register_judges``)."""
        hook_name = "mi_ideas_register_judges"
        if hook_name in self._registries:
            return self._registries[hook_name]  # type: ignore[return-value]
        found: dict[str, RegisteredJudge] = {}
        for info, entries in self._per_plugin(hook_name, _validate_judge):
            for args, kw in entries:
                name, judge, description, kind = _judge_fields(*args, **kw)
                if name in found:
                    raise HostError(
                        f"two plugins register a judge named {name!r}: {found[name].plugin!r} "
                        f"and {info.name!r}. Disable one of them (--disable-plugin NAME) or "
                        f"rename the judge."
                    )
                found[name] = RegisteredJudge(name, judge, description, kind, info.name)
        self._registries[hook_name] = found  # type: ignore[assignment]
        return found

    # -- observer hooks (a typed facade over pm.hook) --------------------------------

    def run_started(self, run: Any) -> None:
        self.pm.hook.mi_ideas_run_started(run=run)

    def run_finished(self, run: Any, result: IdeaResult | None) -> None:
        self.pm.hook.mi_ideas_run_finished(run=run, result=result)


def _validate_registration(prefix: Any, loader: Any, description: str = "", *,
                           accepts: Any = None, from_object: Any = None) -> None:
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise TypeError(f"registered prefix {prefix!r}: a prefix is a non-empty string without ':'")
    if not callable(loader):
        raise TypeError(f"the loader registered for {prefix!r} is not callable")
    if (accepts is None) != (from_object is None):
        raise TypeError(f"{prefix!r}: accepts= and from_object= come together (or not at all)")


def _judge_fields(name: Any = None, judge: Any = None, description: Any = None,
                  kind: Any = None, *extra: Any, **kw: Any) -> tuple:
    if extra or kw:
        raise TypeError("a judge is registered as register(name, judge, description, kind); "
                        f"got the extra argument(s) {list(extra) + sorted(kw)}")
    return name, judge, description, kind


def _validate_judge(*args: Any, **kw: Any) -> None:
    name, judge, description, kind = _judge_fields(*args, **kw)
    for what, value in (("name", name), ("description", description), ("kind", kind)):
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"registered judge {name!r}: its {what} must be a non-empty string")
    if not callable(judge):
        raise TypeError(f"the judge registered as {name!r} is not callable")


def _validate_idea_class(idea_cls: Any) -> None:
    if not (isinstance(idea_cls, type) and issubclass(idea_cls, Idea)):
        raise TypeError(f"registered {idea_cls!r}, which is not a subclass of mi_ideas.Idea")
    for attr in ("name", "summary"):
        if not isinstance(getattr(idea_cls, attr, None), str) or not getattr(idea_cls, attr):
            raise TypeError(f"idea class {idea_cls.__name__} has no {attr!r} string")
    if not issubclass(idea_cls.Config, IdeaConfig):
        raise TypeError(f"{idea_cls.__name__}.Config is not a subclass of IdeaConfig")
    if not issubclass(idea_cls.Result, IdeaResult):
        raise TypeError(f"{idea_cls.__name__}.Result is not a subclass of IdeaResult")
    _check_harvest_needs_data(idea_cls)
    _check_check_signature(idea_cls)
    undocumented = [
        n for n, f in idea_cls.Config.model_fields.items() if not f.description or f.is_required()
    ]
    if undocumented:
        raise TypeError(
            f"{idea_cls.__name__}.Config fields {undocumented} need a default and a "
            f"description (every config must run as-is and explain itself in `mi-ideas show`)"
        )


def _check_check_signature(idea_cls: Any) -> None:
    """An overridden ``Idea.check`` must be a classmethod (or staticmethod) that takes the
    config, the subject and the keywords ``dataset``, ``saes``, ``host`` (or ``**kwargs``):
    the host calls it before any run, and a mismatch would be a bare TypeError there."""
    import inspect

    raw = inspect.getattr_static(idea_cls, "check", None)
    if raw is None or raw is inspect.getattr_static(Idea, "check"):
        return
    if not isinstance(raw, (classmethod, staticmethod)):
        raise TypeError(f"{idea_cls.__name__}.check must be a @classmethod "
                        f"(check(cls, config, subject=None, *, dataset=None, saes=None, host=None))")
    params = inspect.signature(idea_cls.check).parameters
    takes_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [k for k in ("dataset", "saes", "host") if k not in params]
    if len(params) < 2 or (missing and not takes_kw):
        raise TypeError(f"{idea_cls.__name__}.check must take (config, subject=None, *, "
                        f"dataset=None, saes=None, host=None) or **kwargs; it lacks "
                        f"{missing or ['a subject parameter']}")


def _check_harvest_needs_data(idea_cls: Any) -> None:
    """An idea whose ``run`` calls ``ctx.harvest(...)`` without ``dataset=`` must set
    ``uses_data``: otherwise it would only fail mid-run, after the model has loaded.

    Read from the source of ``run`` (the common case; a helper elsewhere that calls it is
    caught at run time with the same message). Source that cannot be read is skipped.
    """
    import ast
    import inspect
    import textwrap

    if idea_cls.uses_data or "run" not in vars(idea_cls):
        return
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(idea_cls.run)))
    except (OSError, TypeError, SyntaxError):
        return
    args = tree.body[0].args.args if tree.body and hasattr(tree.body[0], "args") else []
    ctx_name = args[1].arg if len(args) > 1 else "ctx"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "harvest" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == ctx_name
                and not any(k.arg == "dataset" for k in node.keywords)):
            raise TypeError(
                f"{idea_cls.__name__}.run calls {ctx_name}.harvest(...) without dataset=, but "
                f"the idea does not set uses_data = True, so it would get no dataset. Set "
                f"uses_data = True (the run then takes --data) or pass dataset=... explicitly."
            )


_HOST: Host | None = None


def get_host() -> Host:
    """The process-wide host, created on first use."""
    global _HOST
    if _HOST is None:
        _HOST = Host()
    return _HOST


def set_host(host: Host | None) -> Host | None:
    """Replace the process-wide host (``None`` resets it); returns the previous one."""
    global _HOST
    previous, _HOST = _HOST, host
    return previous
