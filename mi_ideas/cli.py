"""The ``mi-ideas`` command line.

Exit codes: 0 done, 2 usage or config error, 1 the run failed, 130 interrupted.
Heavy libraries (torch, nnsight, transformers, sae_lens) are imported only inside the
commands that need them, so ``mi-ideas list`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from typing import Any, Sequence

from mi_ideas.errors import MiIdeasError

SIZE_TITLES = {
    "large": "Large ideas",
    "medium": "Medium ideas",
    "short": "Short ideas",
    "other": "Other ideas",
}


def _host(args: argparse.Namespace) -> Any:
    from mi_ideas.host import Host, get_host, set_host

    disabled = getattr(args, "disable_plugin", None) or []
    if disabled:
        set_host(Host(disabled=disabled))
    return get_host()


# -- list / show --------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    host = _host(args)
    ideas = host.ideas
    if args.json:
        rows = [
            {"name": n, "summary": c.summary, "size": c.size, "remote": c.remote,
             "plugin": (host.plugin_of(n).name if host.plugin_of(n) else None)}
            for n, c in ideas.items()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not ideas:
        print("No ideas are installed. `mi-ideas plugins` shows which plugins loaded.")
        return 0
    width = max(len(n) for n in ideas)
    for size, title in SIZE_TITLES.items():
        group = [(n, c) for n, c in ideas.items() if c.size == size]
        if not group:
            continue
        print(f"{title}:")
        for name, cls in group:
            print(f"  {name:<{width}}  {cls.summary}")
        print()
    return 0


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if name not in ("Union", "UnionType") else args.replace(", ", " | ")
    return getattr(annotation, "__name__", str(annotation))


def cmd_show(args: argparse.Namespace) -> int:
    host = _host(args)
    cls = host.get_idea(args.idea)
    if args.schema:
        print(json.dumps(cls.Config.model_json_schema(), indent=2))
        return 0
    plugin = host.plugin_of(cls.name)
    print(f"{cls.name} — {cls.summary}")
    print(f"size: {cls.size}; remote model calls: {'yes' if cls.remote else 'no'}; "
          f"plugin: {plugin.name if plugin else '?'}"
          + (f" ({plugin.distribution} {plugin.version})" if plugin and plugin.distribution else ""))
    takes = []
    if cls.uses_model:
        takes.append(f"--model (default {cls.default_model})")
    if cls.uses_saes:
        takes.append(f"--sae (default {', '.join(cls.default_saes) or 'none'})")
    if cls.uses_data:
        takes.append(f"--data (default {cls.default_data})")
    if takes:
        print(f"takes: {'; '.join(takes)}" + ("; --remote" if cls.remote else ""))
    if cls.presets:
        print(f"presets (--preset NAME): " + "; ".join(
            f"{name} ({', '.join(f'{k}={v!r}' for k, v in values.items())})"
            for name, values in cls.presets.items()))
    print()
    print(cls.description())
    print()
    print("Config fields (set with --set NAME=VALUE or a --config file):")
    for name, f in cls.Config.model_fields.items():
        default = f.get_default(call_default_factory=True)
        print(f"  {name}: {_type_name(f.annotation)} = {default!r}")
        if f.description:
            print(f"      {f.description}")
    print()
    print(f"JSON schema: mi-ideas show {cls.name} --schema")
    return 0


# -- run ----------------------------------------------------------------------------


def _format_value(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == int(v) and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.4g}"


#: above this many metrics, ``mi-ideas run`` prints a count instead of the whole table
#: (the summary, report.html and result.json hold them all).
METRICS_SHOWN = 40


def print_metrics(result: Any, out: Any = None, which: str | None = None) -> None:
    """The metrics as a small table: metric, value, definition.

    ``which``: ``None`` prints the table when it has at most :data:`METRICS_SHOWN` rows and
    a one-line count otherwise; ``"all"`` prints every metric; any other string is a
    comma-separated list of shell-style patterns (``"kmeans.*,sae.64.*"``).
    """
    import fnmatch

    out = out or sys.stdout
    metrics = result.metrics
    if not metrics:
        return
    names = list(metrics)
    if which not in (None, "all"):
        pats = [p.strip() for p in which.split(",") if p.strip()]
        names = [k for k in names if any(fnmatch.fnmatchcase(k, p) for p in pats)]
        if not names:
            print(f"no metric matches {which!r} ({len(metrics)} metrics in result.json).",
                  file=out)
            return
    elif which is None and len(names) > METRICS_SHOWN:
        print(f"{len(names)} metrics, each with its definition, in result.json and "
              f"report.html (print them with --metrics all, or some with --metrics "
              f"'PATTERN,...', e.g. --metrics '{names[0].split('.')[0]}.*').", file=out)
        return
    w = max(len(k) for k in names)
    vals = {k: _format_value(float(metrics[k])) for k in names}
    vw = max(len(v) for v in vals.values())
    import shutil

    # Definitions are cut to the terminal's width; result.json holds them whole.
    room = max(20, shutil.get_terminal_size((120, 24)).columns - w - vw - 4)
    print(f"{'metric':<{w}}  {'value':>{vw}}  definition", file=out)
    print(f"{'-' * w}  {'-' * vw}  {'-' * 10}", file=out)
    for k in names:
        d = result.definitions.get(k, "")
        d = d if len(d) <= room else d[: room - 1] + "…"
        print(f"{k:<{w}}  {vals[k]:>{vw}}  {d}", file=out)


def print_summary(run_dir: Any, host: Any = None, out: Any = None) -> None:
    """The report's path, the headline numbers (each with its control) and the answer."""
    from pathlib import Path

    from mi_ideas.report import load_view

    out = out or sys.stdout
    view = load_view(run_dir, host=host)
    report = Path(run_dir) / "report.html"
    print(f"\nreport: {report if report.is_file() else '(none; `mi-ideas report RUN_DIR`)'}",
          file=out)
    for h in view.headlines:
        control = (f"   (control {h.control}: {_format_value(float(h.control_value))})"
                   if h.control else "")
        print(f"  {h.label}: {_format_value(float(h.value))}{control}", file=out)
    if view.answer:
        print(f"{view.answer}", file=out)


def _maybe_index(args: argparse.Namespace, run_dir: Any, host: Any) -> None:
    if getattr(args, "index", False):
        from pathlib import Path

        from mi_ideas.report import write_index

        print(f"index: {write_index(Path(run_dir).parent.parent, host=host)}")


def cmd_run(args: argparse.Namespace) -> int:
    from mi_ideas.runs import execute

    host = _host(args)
    record = execute(
        args.idea,
        file=args.config,
        sets=args.set or [],
        seed=args.seed,
        out=args.out,
        host=host,
        quiet=args.quiet,
        command=["mi-ideas", *sys.argv[1:]],
        model=args.model,
        saes=args.sae,
        data=args.data,
        remote=args.remote,
        memory_budget=args.memory_budget,
        preset=args.preset,
    )
    print_metrics(record.result, which=args.metrics)
    print(f"\nrun directory: {record.path}")
    _maybe_index(args, record.path, host)
    print_summary(record.path, host=host)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from mi_ideas.runs import resume

    record = resume(args.run_dir, host=_host(args), quiet=args.quiet,
                    command=["mi-ideas", *sys.argv[1:]], model=args.model, saes=args.sae,
                    data=args.data, remote=args.remote, memory_budget=args.memory_budget)
    print_metrics(record.result)
    print(f"\nrun directory: {record.path}")
    print_summary(record.path)
    return 0


# -- plugins ------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host = _host(args)
    try:
        host.ideas  # noqa: B018 - registering ideas may itself mark a plugin failed
    except MiIdeasError as exc:
        print(f"mi-ideas: warning: {exc}", file=sys.stderr)
    plugins = sorted(host.plugins.values(), key=lambda p: p.name)
    if args.json:
        print(json.dumps([p.to_dict() for p in plugins], indent=2))
        return 0
    if not plugins:
        print("No plugins are installed.")
        return 0
    for p in plugins:
        dist = f"{p.distribution} {p.version}" if p.distribution else "(not installed as a package)"
        ideas = ", ".join(p.ideas) if p.ideas else "-"
        print(f"{p.name}  [{p.status}]  {dist}")
        print(f"    ideas: {ideas}")
        if p.error:
            print(f"    error: {p.error}")
    return 0


# -- zoo / cache ---------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mi_ideas.errors import UsageError
    from mi_ideas.report import write_comparison, write_index, write_report

    host = _host(args)
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.is_dir():
            raise UsageError(f"{str(p)!r} is not a directory; give a run directory, a runs "
                             f"directory (for its index), or several run directories to compare.")
    if len(paths) == 1 and (paths[0] / "provenance.json").is_file():
        print(write_report(paths[0], host=host))
    elif len(paths) == 1:
        print(write_index(paths[0], host=host))
    else:
        bad = [str(p) for p in paths if not (p / "provenance.json").is_file()]
        if bad:
            raise UsageError(f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} "
                             f"not run directories (no provenance.json); a comparison takes run "
                             f"directories like runs/<idea>/<timestamp>-<hash>/.")
        print(write_comparison(paths, out=args.out, host=host))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from mi_ideas.config import build_config, parse_overrides, preset_values
    from mi_ideas.errors import ConfigError, RunError
    from mi_ideas.report import grid_points, parse_grid, parse_seeds, write_index, write_sweep
    from mi_ideas.report.sweep import SweepRun, point_values
    from mi_ideas.runs import default_runs_dir, execute

    host = _host(args)
    idea_cls = host.get_idea(args.idea)
    grid, seeds = parse_grid(args.grid or []), parse_seeds(args.seeds)
    clash = sorted(set(grid) & set(parse_overrides(args.set or [])))
    if clash:
        raise ConfigError(f"{', '.join(clash)} is given both to --grid and --set; give each "
                          f"field once (--grid sweeps it, --set fixes it).")
    points = grid_points(grid)
    base = preset_values(idea_cls, args.preset)
    for p in points:  # every point's config is valid before anything runs
        build_config(idea_cls.Config, file=args.config, sets=args.set or [],
                     values=point_values(p), idea=args.idea, base=base)
    root = default_runs_dir() if args.out is None else args.out
    runs, n = [], len(points) * len(seeds)
    command = " ".join(["mi-ideas", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else ""
    try:
        for p in points:
            for seed in seeds:
                label = ", ".join(f"{k}={v}" for k, v in p.items())
                print(f"sweep {len(runs) + 1}/{n}: {label}, seed {seed}", file=sys.stderr, flush=True)
                try:
                    record = execute(args.idea, file=args.config, sets=args.set or [],
                                     config=point_values(p), seed=seed, out=root, host=host,
                                     quiet=args.quiet, command=["mi-ideas", *sys.argv[1:]],
                                     model=args.model, saes=args.sae, data=args.data,
                                     remote=args.remote, memory_budget=args.memory_budget,
                                     preset=args.preset)
                    runs.append(SweepRun(p, seed, str(record.path), "complete"))
                except RunError as exc:
                    print(f"mi-ideas: error: {exc}", file=sys.stderr)
                    runs.append(SweepRun(p, seed, exc.run_dir, "failed", str(exc)))
    finally:  # an interrupted sweep still gets a page of what it has
        if runs:
            from mi_ideas.runs.layout import utc_now

            page = write_sweep(args.idea, grid, seeds, runs, root,
                               utc_now().strftime("%Y%m%dT%H%M%SZ"), host=host, command=command)
            print(f"sweep page: {page}")
            if args.index:
                print(f"index: {write_index(root, host=host)}")
    failed = sum(r.status != "complete" for r in runs)
    if failed:
        print(f"mi-ideas: {failed} of {n} sweep runs failed; the page lists them.", file=sys.stderr)
    return 1 if failed else 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from mi_ideas import zoo

    if args.verify:
        bad = zoo.verify()
        for m in bad:
            print(f"{m.problem}: {m.path}")
        if bad:
            print(f"mi-ideas: error: {len(bad)} zoo file(s) differ from the manifest; reinstall "
                  f"mi-ideas, or retrain with python -m mi_ideas.zoo.build.train.", file=sys.stderr)
            return 1
        print("every zoo file matches its sha256 in the manifest")
        return 0
    rows = zoo.list_entries()
    if args.json:
        print(json.dumps([{**r._asdict(), "path": str(r.path)} for r in rows], indent=2,
                         default=str))
        return 0
    for row in rows:
        print(f"{row.kind:<11} zoo:{row.name}")
        for key, value in row.key_numbers.items():
            shown = _format_value(float(value)) if isinstance(value, (int, float)) else value
            print(f"    {key}: {shown}")
        print(f"    {row.path}")
    return 0


def cmd_remote(args: argparse.Namespace) -> int:
    from mi_ideas import remote

    info = remote.status(args.url or "ndif", args.model)
    if not info["reachable"]:
        print(f"NDIF at {info['host']} is not reachable ({info.get('error')}). Offline, or behind "
              f"a firewall, remote runs cannot work; run locally, or pass --url for a "
              f"self-hosted server.")
        return 1
    if info.get("problem"):
        print(f"The server at {info['host']} is reachable but {info['problem']}.")
        return 1
    print(f"NDIF at {info['host']} is reachable; {len(info['deployments'])} model(s) running.")
    if args.model:
        served = "is" if info["served"] else "is NOT"
        print(f"{args.model} {served} being served there.")
        return 0 if info["served"] else 1
    for name in info["deployments"]:
        print(f"  {name}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from mi_ideas import harvest

    if args.action == "clear":
        n = harvest.clear_cache()
        print(f"removed {n} cached harvest(s) from {harvest.cache_root()}")
        return 0
    rows = harvest.list_cache()
    if not rows:
        print(f"no cached harvests in {harvest.cache_root()}")
    for r in rows:
        print(f"{r['key']}  {r['rows']} rows  {r['bytes'] / 2**20:.1f} MiB  {r['model']}  "
              f"{r['data']}  {', '.join(r['sites'])}")
    return 0


# -- parser -------------------------------------------------------------------------


def _input_flags(p: argparse.ArgumentParser, resume: bool = False) -> None:
    """The model / dictionary / data / remote flags, the same for ``run`` and ``resume``."""
    again = " (default: the spec recorded in the run)" if resume else ""
    p.add_argument("--model", metavar="SPEC",
                   help="model: zoo:NAME, hf:REPO_OR_DIR (nnsight), tl:NAME|DIR|zoo:NAME "
                        "(TransformerLens)" + (again or "; default: the idea's (an embedded zoo model)"))
    p.add_argument("--sae", action="append", metavar="SPEC",
                   help="dictionary: saelens:RELEASE/SAE_ID, zoo:NAME, sparsify:DIR or a SAELens "
                        "directory (repeatable)" + again)
    p.add_argument("--data", metavar="SPEC",
                   help="dataset: zoo:stories[:N], template:FAMILY, text:PATH, hf:NAME[:SPLIT]" + again)
    p.add_argument("--remote", metavar="WHERE",
                   help="run model calls remotely: local (nnsight's rehearsal), ndif, or a URL" + again)
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="refuse a config whose estimated peak memory is over SIZE (8GB, 512MiB; "
                        "default $MI_IDEAS_MEMORY_BUDGET or half the machine's RAM)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--disable-plugin", action="append", metavar="NAME", default=argparse.SUPPRESS,
        help="do not load this plugin (repeatable; also MI_IDEAS_DISABLE_PLUGINS=a,b)",
    )
    parser = argparse.ArgumentParser(
        prog="mi-ideas",
        description="Mechanistic-interpretability project ideas as runnable experiments.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", parents=[common], help="list every idea, grouped by size")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="describe an idea and its config fields")
    p.add_argument("idea")
    p.add_argument("--schema", action="store_true", help="print the config's JSON schema")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", parents=[common], help="run an idea into a new run directory")
    p.add_argument("idea")
    p.add_argument("--config", metavar="FILE", help="config file (.yaml, .toml or .json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config field (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", metavar="DIR",
                   help="runs directory (default ./runs or MI_IDEAS_RUNS_DIR); the run goes "
                        "to DIR/<idea>/<timestamp>-<hash>/")
    p.add_argument("--preset", metavar="NAME",
                   help="start from one of the idea's named configs (Idea.presets, e.g. quick); "
                        "--config and --set override it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--index", action="store_true",
                   help="also (re)write the runs directory's index.html")
    p.add_argument("--metrics", metavar="all|PATTERN,...",
                   help=f"which metrics to print: all, or shell-style patterns (default: the "
                        f"whole table when it has at most {METRICS_SHOWN} rows, else a count)")
    _input_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", parents=[common],
                       help="run an idea over a grid of config values and seeds; one page")
    p.add_argument("idea")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                   help="a config field and the values to sweep (repeatable: the product is run)")
    p.add_argument("--seeds", metavar="S1,S2", default="0",
                   help="seeds for every grid point: 0,1,2 or 0-4 (default 0)")
    p.add_argument("--config", metavar="FILE", help="config file for the fixed fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fix one config field")
    p.add_argument("--preset", metavar="NAME", help="start from one of the idea's presets")
    p.add_argument("--out", metavar="DIR", help="runs directory (default ./runs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output from the runs")
    p.add_argument("--index", action="store_true", help="also (re)write the runs index.html")
    _input_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", parents=[common],
                       help="run a failed or interrupted run again in its directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _input_flags(p, resume=True)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("plugins", parents=[common], help="list plugins and their status")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("report", parents=[common],
                       help="write a run's report.html, a runs directory's index.html, or a "
                            "comparison of several runs")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="RUN_DIR (its report.html), RUNS_DIR (its index.html) or RUN_DIR "
                        "RUN_DIR ... (a comparison page)")
    p.add_argument("--out", metavar="FILE",
                   help="where to write a comparison (default RUNS/comparisons/<idea>-<hash>.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("zoo", parents=[common], help="the embedded models and dictionaries")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="check every file against the manifest")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("remote", parents=[common], help="NDIF: is it reachable, is a model served")
    remote_sub = p.add_subparsers(dest="action", metavar="ACTION")
    remote_sub.required = True
    # Its own sub-parser, so MODEL and --remote / --url may come in any order.
    q = remote_sub.add_parser("status", parents=[common], help="is the server up; is MODEL served")
    q.add_argument("model", nargs="?", help="a repo id (or a local directory on a self-hosted server)")
    q.add_argument("--remote", "--url", dest="url", metavar="WHERE",
                   help="ndif (nnsight's configured host, the default) or the URL of a "
                        "self-hosted NDIF server; the same flag as `run --remote`")
    q.set_defaults(func=cmd_remote)

    p = sub.add_parser("cache", parents=[common], help="harvested-activation cache")
    p.add_argument("action", choices=["ls", "clear"])
    p.set_defaults(func=cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MiIdeasError as exc:
        print(f"mi-ideas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mi-ideas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
