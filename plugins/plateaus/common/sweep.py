"""The batched perturbation sweep shared by the plateau family of ideas.

A sweep perturbs one activation — a site at the last position of each prompt — along many
paths, at many step sizes, and measures how the output moves:

    x(α) = x + α · d          ("direction" paths: d a direction, α a length)
    x(α) = x + α · (t − x)    ("target" paths: interpolate towards t, α in [0, 1])
    x(α) = |x| · slerp(x̂, t̂, α)  ("arc" paths: norm-preserving interpolation)

Read-outs per row (``readouts``), all computed next to the model (``StatsRequest``, one
function for every engine, float64), so a remote run downloads a few numbers per row, never
a distribution: ``"kl"``, KL(clean ‖ perturbed) of the next-token distribution at the last
position, nats; ``"l2"``, the L2 distance of the final residual stream (last position) from
the clean run's; and, when asked, the bounded ``"js"`` (Jensen–Shannon divergence between
the clean and perturbed next-token distributions, nats, ≤ ln 2) and ``"tv"`` (their total
variation distance, ≤ 1). Default ``("kl", "l2")``.

Every (prompt, path, step) row is batched into few forwards of ``rows_per_forward`` rows,
and the perturbed points are built chunk by chunk inside the loop (never every point at
once), so peak memory is bounded by ``rows_per_forward``, not by the sweep's size. Each
chunk runs on one of three engines (``SweepResult.engine`` says which):

- ``"last_token"`` (local, the default where valid): causal attention leaves every earlier
  position unchanged by a perturbation at the last one, so the earlier positions' keys and
  values are computed once per clean run — by the blocks from the site on, from the clean
  residual stream there (``Subject.prefix_cache(start_at=site, start_resid=clean.resid)``),
  just as the full forward computes them — and each chunk runs only the last position
  through those blocks, with logits for that position only (``Subject.forward_last_token``).
  Before it is trusted on a clean run, the engine checks it on a few prompts against the
  full forward and falls back (with a warning) where they disagree (a model that is not
  causal, a wrong back-end path); a back-end without the path runs the full forward.
- ``"full"`` (local): each forward starts at the perturbed block
  (``Subject.forward(start_at=...)``) from the cached clean residual stream of every
  position: the blocks before it are never recomputed. ``engine="full"`` forces it.
- ``"remote"``: the perturbation goes as a ``replace`` intervention (a vector per row, not a
  whole residual stream), one request per batch of rows.

Several sub-experiments on the same prompts and site share forwards through a plan — the
rows of all of them are cut into ``rows_per_forward`` chunks together, so no forward is
half empty and the prefix cache is built once::

    plan = SweepPlan(subject, clean, site, rows_per_forward=config.rows_per_forward)
    real = plan.add("real", targets, alphas, kind="target")
    iso = plan.add("dir_isotropic", directions, lengths, kind="direction")
    synth = plan.add("synthetic", d, lengths, clean=rebase(subject, clean, site, x_synth))
    sub = plan.add("pairs", t, alphas, kind="target", prompts=ref)   # a subset of prompts
    results = plan.run(progress=ctx.progress)   # {name: SweepResult}, = plan's handles
    results["real"].kl                           # (n_prompts, n_paths, n_steps), as sweep()

Each result equals ``sweep`` of that sub-experiment alone (to float rounding); ``sweep`` is
a plan of one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from mi_ideas.errors import UsageError

PathKind = Literal["direction", "target", "arc"]
Engine = Literal["auto", "last_token", "full"]
KINDS = ("direction", "target", "arc")
#: every read-out a sweep can return; each a (n_prompts, n_paths, n_steps) tensor
READOUTS = ("kl", "l2", "js", "tv")
DEFAULT_READOUTS = ("kl", "l2")
ENGINES = ("auto", "last_token", "full")
#: the fast path must agree with the full forward to this (relative to 1 + the read-out's
#: scale) on the check rows; a real mismatch (a model that is not causal) is O(1)
CHECK_TOL = 1e-4


@dataclass
class CleanRun:
    """What a sweep needs from the unperturbed prompts, computed once."""

    batch: Any            # the prompts' Batch
    resid: Any            # (n_prompts, seq, d) residual stream at the site (all positions)
    x: Any                # (n_prompts, d) the reference activations (last position)
    logprobs: Any         # (n_prompts, vocab) clean next-token log-probs (last position)
    final: Any            # (n_prompts, d) clean final residual stream (last position)
    #: the engine's own cache of the prompts' key/value prefix and its check (local runs;
    #: built on the first sweep, shared with rebased runs of the same prompts)
    last_token: Any = field(default=None, repr=False, compare=False)


@dataclass
class SweepResult:
    """Read-outs of a sweep, each ``(n_prompts, n_paths, n_steps)`` float32: ``kl`` and
    ``l2`` always; ``js`` and ``tv`` when asked (``readouts``), else None (module docstring
    for their definitions)."""

    steps: Any
    kl: Any
    l2: Any
    n_forwards: int
    #: which engine ran the rows: "last_token", "full" or "remote" (module docstring)
    engine: str = "full"
    js: Any = None
    tv: Any = None


@dataclass
class _LastToken:
    """A clean run's prefix cache for one subject and site, and whether it checked out."""

    owner: str
    site: str
    cache: Any
    ok: bool
    why: str = ""
    failed_check: bool = False
    warned: bool = False


def clean_run(subject: Any, prompts: Any, site: str) -> CleanRun:
    """One clean forward over the prompts: the site's residual stream, log-probs, final resid."""
    s = subject.site(site)
    if s.kind != "resid_pre":
        raise UsageError(f"sweeps perturb the residual stream at resid_pre.L, not {site!r}.")
    batch = subject.as_batch(prompts)
    final_site = f"resid_post.{subject.n_layers - 1}"
    out = subject.forward(batch, read=[s.name, final_site], logits=True)
    resid = out.activations[s.name]
    return CleanRun(batch=batch, resid=resid, x=resid[:, -1].clone(),
                    logprobs=out.logits[:, -1].float().log_softmax(-1),
                    final=out.activations[final_site][:, -1].clone())


def rebase(subject: Any, clean: CleanRun, site: str, new_x: Any) -> CleanRun:
    """A clean run whose reference activations are ``new_x`` (e.g. synthetic bases).

    The residual stream at the site keeps its other positions; the last position becomes
    ``new_x``, and the log-probs and final residual are those of that activation.
    """
    resid = clean.resid.clone()
    resid[:, -1] = new_x
    final_site = f"resid_post.{subject.n_layers - 1}"
    out = subject.forward(clean.batch, read=[final_site], positions="last", logits=True,
                          start_at=site, start_resid=resid)
    # The prompts (every position but the last) are unchanged: the prefix cache carries over.
    return CleanRun(batch=clean.batch, resid=resid, x=new_x.clone(),
                    logprobs=out.logits[:, -1].float().log_softmax(-1),
                    final=out.activations[final_site], last_token=clean.last_token)


def _points(x: Any, p: Any, a: Any, kind: str) -> Any:
    """The path formula on broadcastable ``x``, ``p`` (direction or target), ``a`` (step)."""
    import torch

    if kind == "direction":
        return x + a * p
    if kind == "target":
        return x + a * (p - x)
    # Spherical interpolation between the unit vectors, at the norm of x: the norm
    # stays fixed, so only the direction can move the output.
    u, v = x / x.norm(dim=-1, keepdim=True), p / p.norm(dim=-1, keepdim=True)
    omega = torch.arccos((u * v).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    unit = (torch.sin((1 - a) * omega) * u + torch.sin(a * omega) * v) / so
    return unit * x.norm(dim=-1, keepdim=True)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UsageError(f"path kind must be direction, target or arc, not {kind!r}.")


def _check_readouts(readouts: Any) -> tuple:
    if isinstance(readouts, str):
        readouts = (readouts,)
    got = tuple(dict.fromkeys(readouts))
    bad = [r for r in got if r not in READOUTS]
    if bad or not got:
        raise UsageError(
            f"readouts must be a non-empty list of {', '.join(READOUTS)}, not {readouts!r} "
            f"(kl and l2 are always computed; add js and/or tv for the bounded read-outs).")
    return got


def path_points(x: Any, paths: Any, steps: Any, kind: PathKind) -> Any:
    """Perturbed activations ``(n_prompts, n_paths, n_steps, d)`` for each path and step.

    (The sweep never calls this: it builds the same points one chunk of rows at a time.)
    """
    _check_kind(kind)
    a = steps.to(x.dtype)[None, None, :, None]
    return _points(x[:, None, None, :], paths[:, :, None, :], a, kind)


@dataclass
class SweepHandle:
    """One sub-experiment of a :class:`SweepPlan`; ``result`` is set by ``plan.run()``."""

    name: str
    clean: CleanRun
    prompts: Any          # (n,) indices of its prompts into the plan's clean run
    paths: Any            # (n, n_paths, d)
    steps: Any            # (n_steps,) float32
    kind: str
    result: SweepResult | None = None
    readouts: tuple = DEFAULT_READOUTS

    @property
    def n_rows(self) -> int:
        return int(self.paths.shape[0] * self.paths.shape[1] * self.steps.shape[0])


class SweepPlan:
    """Sub-experiments on the same prompts and site, run as one set of batched forwards.

    ``add`` records a sub-experiment (nothing runs); ``run`` cuts the rows of all of them, in
    the order added, into chunks of ``rows_per_forward`` and returns ``{name: SweepResult}``.
    See the module docstring.
    """

    def __init__(self, subject: Any, clean: CleanRun, site: str, *,
                 rows_per_forward: int = 512, engine: Engine = "auto"):
        s = subject.site(site)
        if s.kind != "resid_pre":
            raise UsageError(f"sweeps perturb the residual stream at resid_pre.L, not {site!r}.")
        if int(rows_per_forward) < 1:
            raise UsageError(f"rows_per_forward must be at least 1, not {rows_per_forward}.")
        if engine not in ENGINES:
            raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}.")
        self.subject, self.clean, self.site = subject, clean, s.name
        self.rows_per_forward, self.engine = int(rows_per_forward), engine
        self.parts: list[SweepHandle] = []
        self.n_forwards = 0

    def add(self, name: str, paths: Any, steps: Any, *, kind: PathKind = "direction",
            clean: CleanRun | None = None, prompts: Any = None,
            readouts: Any = DEFAULT_READOUTS) -> SweepHandle:
        """Add the sweep of ``paths`` ``(n, n_paths, d)`` at ``steps``; returns its handle.

        ``prompts``: indices (repeats allowed) of the plan's prompts the ``n`` rows of
        ``paths`` belong to (default: all of them, in order). ``clean``: a run on the same
        prompts with other reference activations (:func:`rebase`); default the plan's.
        ``readouts``: any of ``"kl", "l2", "js", "tv"`` (module docstring); ``kl`` and ``l2``
        are always returned, ``js`` / ``tv`` only when listed.
        """
        import torch

        _check_kind(kind)
        readouts = _check_readouts(readouts)
        if any(p.name == name for p in self.parts):
            raise UsageError(f"the plan already has a sub-experiment named {name!r}.")
        base = self.clean if clean is None else clean
        if base is not self.clean and not _same_prefix(base, self.clean):
            raise UsageError(
                f"sub-experiment {name!r}: its clean run is on other prompts than the plan's "
                f"(other tokens, or another residual stream at their earlier positions); give "
                f"a rebase() of the plan's clean run, or make another plan."
            )
        n_all, d = self.clean.x.shape
        if prompts is None:
            idx = torch.arange(n_all)
        else:
            idx = torch.as_tensor(prompts, dtype=torch.long).reshape(-1)
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_all):
                raise UsageError(f"sub-experiment {name!r}: prompts must index the plan's "
                                 f"{n_all} prompts; got values in [{int(idx.min())}, "
                                 f"{int(idx.max())}].")
        if paths.ndim != 3 or paths.shape[0] != len(idx) or paths.shape[2] != d:
            raise UsageError(
                f"paths have shape {tuple(paths.shape)}; expected ({len(idx)}, n_paths, {d}) "
                f"for these prompts."
            )
        steps = torch.as_tensor(steps, dtype=torch.float32).reshape(-1)
        part = SweepHandle(name, base, idx, paths, steps, kind, readouts=readouts)
        self.parts.append(part)
        return part

    def run(self, progress: Any = None) -> dict[str, SweepResult]:
        """Run every sub-experiment's rows; ``{name: SweepResult}`` in the order added."""
        import torch

        subject, R = self.subject, self.rows_per_forward
        engine = "remote" if subject.remote else self._local_engine()
        sizes = [p.n_rows for p in self.parts]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        total = offsets[-1]
        got_all = {key: [torch.empty(size) if key in DEFAULT_READOUTS or key in p.readouts
                         else None for p, size in zip(self.parts, sizes)] for key in READOUTS}
        forwards = [0] * len(self.parts)
        chunks = range(0, total, R)
        self.n_forwards = 0
        for start in (progress(chunks, total=len(chunks), desc="sweep") if progress else chunks):
            stop = min(start + R, total)
            pieces = []
            for i, part in enumerate(self.parts):
                lo, hi = max(start, offsets[i]), min(stop, offsets[i + 1])
                if lo < hi:
                    pieces.append((i, lo - offsets[i], hi - offsets[i]))
                    forwards[i] += 1
            wanted = {r for i, _, _ in pieces for r in self.parts[i].readouts}
            got = self._forward(engine, [self._rows(self.parts[i], lo, hi)
                                         for i, lo, hi in pieces],
                                js="js" in wanted, tv="tv" in wanted)
            self.n_forwards += 1
            at = 0
            for i, lo, hi in pieces:
                for key, value in got.items():
                    if got_all[key][i] is not None:
                        got_all[key][i][lo:hi] = value[at:at + hi - lo]
                at += hi - lo
        out = {}
        for i, part in enumerate(self.parts):
            shape = (part.paths.shape[0], part.paths.shape[1], len(part.steps))
            arrays = {key: None if got_all[key][i] is None else got_all[key][i].reshape(shape)
                      for key in READOUTS}
            part.result = SweepResult(steps=part.steps, n_forwards=forwards[i], engine=engine,
                                      **arrays)
            out[part.name] = part.result
        return out

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _rows(part: SweepHandle, lo: int, hi: int) -> tuple:
        """Rows ``lo:hi`` of a sub-experiment: (prompt index, its clean run, points)."""
        import torch

        m, s = part.paths.shape[1], len(part.steps)
        r = torch.arange(lo, hi)
        i, j, k = r // (m * s), (r // s) % m, r % s
        prompt = part.prompts[i]
        x = part.clean.x[prompt]
        a = part.steps.to(x.dtype)[k][:, None]
        return prompt, part.clean, _points(x, part.paths[i, j], a, part.kind)

    def _forward(self, engine: str, rows: list, js: bool = False, tv: bool = False
                 ) -> dict[str, Any]:
        """One forward of the concatenated rows; ``{"kl", "l2"[, "js"][, "tv"]}`` as float
        tensors."""
        import torch

        from mi_ideas.subject import StatsRequest

        prompt = torch.cat([p for p, _, _ in rows])
        points = torch.cat([pts for _, _, pts in rows])
        # Each distinct (clean run, prompt) of the chunk sends its reference once
        # (reference_rows maps rows to them): a remote request uploads a few
        # vocabulary-sized rows, not one per row.
        refs_lp, refs_final, index, seen = [], [], [], 0
        for p, c, _ in rows:
            uniq, inverse = torch.unique(p, return_inverse=True)
            refs_lp.append(c.logprobs[uniq])
            refs_final.append(c.final[uniq])
            index.append(inverse + seen)
            seen += len(uniq)
        request = StatsRequest(kl_reference=torch.cat(refs_lp), l2_reference=torch.cat(refs_final),
                               reference_rows=torch.cat(index), js=js, tv=tv)
        if engine == "last_token":
            out = self.subject.forward_last_token(self.clean.last_token.cache, prompt,
                                                  self.site, points, stats=request)
        else:
            resid = torch.cat([c.resid[p] for p, c, _ in rows]) if engine == "full" else None
            out = _full_forward(self.subject, self.clean.batch, self.site, prompt, points,
                                request, resid)
        keys = ("kl", "l2") + (("js",) if js else ()) + (("tv",) if tv else ())
        return {key: out.stats[key].float() for key in keys}

    def _local_engine(self) -> str:
        """"last_token" where it is valid (and checked) for this clean run, else "full"."""
        if self.engine == "full":
            return "full"
        state = _last_token_state(self.subject, self.clean, self.site)
        if state.ok:
            return "last_token"
        if self.engine == "last_token":
            raise UsageError(f"engine='last_token' cannot serve this sweep: {state.why}. Use "
                             f"engine='auto' (which falls back to the full forward).")
        if state.failed_check and not state.warned:  # a surprise, not a missing path
            warnings.warn(f"sweep at {self.site}: {state.why}; the sweep runs the full forward "
                          f"instead (the same numbers, slower).", RuntimeWarning, stacklevel=3)
            state.warned = True
        return "full"


def _same_prefix(a: CleanRun, b: CleanRun) -> bool:
    """Same tokens and the same residual stream before the last position (as rebase keeps),
    so one prefix cache serves both."""
    import torch

    return (a.batch.shape == b.batch.shape and torch.equal(a.batch.input_ids, b.batch.input_ids)
            and torch.equal(a.batch.attention_mask, b.batch.attention_mask)
            and a.resid.shape == b.resid.shape and torch.equal(a.resid[:, :-1], b.resid[:, :-1]))


def _full_forward(subject: Any, batch: Any, site: str, prompt: Any, points: Any,
                  request: Any, resid: Any) -> Any:
    """The rows through the whole stack from ``site`` (``resid`` given: local, from the
    cached residual stream) or as a remote ``replace`` intervention (``resid`` None)."""
    from mi_ideas.subject import Batch, Intervention

    rows = Batch(batch.input_ids[prompt], batch.attention_mask[prompt])
    if resid is not None:
        resid = resid.clone()
        resid[:, -1] = points
        return subject.forward(rows, stats=request, start_at=site, start_resid=resid)
    return subject.forward(rows, stats=request, interventions=[
        Intervention(site, "replace", points, positions="last")])


def _check_prompts(clean: CleanRun) -> Any:
    """Up to four prompts to check the fast path on: the first, the last, the shortest
    (most padding) and the longest."""
    import torch

    lengths = clean.batch.attention_mask.sum(-1)
    n = len(lengths)
    picks = {0, n - 1, int(lengths.argmin()), int(lengths.argmax())}
    return torch.tensor(sorted(picks))


def _last_token_state(subject: Any, clean: CleanRun, site: str,
                      rows_per_forward: int | None = None) -> _LastToken:
    """The clean run's prefix cache for ``subject`` and ``site``, built and checked once.

    The cache runs the blocks from ``site`` on over the clean residual stream's earlier
    positions (``prefix_cache(start_at=site, start_resid=clean.resid)``), exactly what the
    full forward from the site computes for them. The check: a few prompts (see
    :func:`_check_prompts`), each last position replaced by another prompt's activation
    (deterministic, no random draw), through both the fast path and the full forward; they
    must agree to ``CHECK_TOL``, else the model is not causal or the back-end's path is wrong.
    (``rows_per_forward`` is accepted for callers of an earlier version and unused: the
    check is a few rows.)
    """
    from mi_ideas.subject import StatsRequest

    state = clean.last_token
    if isinstance(state, _LastToken) and state.owner == subject.fingerprint and state.site == site:
        return state
    owner = subject.fingerprint
    try:
        cache = subject.prefix_cache(clean.batch, start_at=site, start_resid=clean.resid)
        prompt = _check_prompts(clean)
        x = clean.x.roll(1, 0)[prompt]
        request = StatsRequest(kl_reference=clean.logprobs[prompt],
                               l2_reference=clean.final[prompt])
        fast = subject.forward_last_token(cache, prompt, site, x, stats=request)
    except NotImplementedError as exc:
        state = _LastToken(owner, site, None, False, f"no last-position path ({exc})")
    else:
        full = _full_forward(subject, clean.batch, site, prompt, x, request, clean.resid[prompt])
        diff_kl = float((fast.stats["kl"].float() - full.stats["kl"].float()).abs().max())
        diff_l2 = float((fast.stats["l2"].float() - full.stats["l2"].float()).abs().max())
        scale_kl = float(full.stats["kl"].float().abs().max())
        scale_l2 = float(clean.final[prompt].float().norm(dim=-1).max())
        ok = diff_kl <= CHECK_TOL * (1 + scale_kl) and diff_l2 <= CHECK_TOL * (1 + scale_l2)
        why = "" if ok else (
            f"the last-position path disagrees with the full forward on the check rows (max "
            f"|KL difference| {diff_kl:.2e}, max |L2 difference| {diff_l2:.2e}): the model is "
            f"not causal, or its back-end's last-position path is wrong")
        state = _LastToken(owner, site, cache if ok else None, ok, why, failed_check=not ok)
    clean.last_token = state
    return state


def sweep(subject: Any, clean: CleanRun, site: str, paths: Any, steps: Any, *,
          kind: PathKind = "direction", rows_per_forward: int = 512,
          progress: Any = None, engine: Engine = "auto",
          readouts: Any = DEFAULT_READOUTS) -> SweepResult:
    """Run every (prompt, path, step) row in batches; see the module docstring.

    ``paths``: ``(n_prompts, n_paths, d)`` directions or targets, one set per prompt.
    ``engine``: "auto" (the last-position path locally where valid, else the full forward),
    "last_token" (require it), "full" (the full forward from the site). ``readouts``: as
    :meth:`SweepPlan.add` (``("kl", "l2", "js", "tv")`` for the bounded ones too).
    """
    n, d = clean.x.shape
    if paths.ndim != 3 or paths.shape[0] != n or paths.shape[2] != d:
        raise UsageError(
            f"paths have shape {tuple(paths.shape)}; expected ({n}, n_paths, {d}) for these "
            f"prompts."
        )
    plan = SweepPlan(subject, clean, site, rows_per_forward=rows_per_forward, engine=engine)
    plan.add("sweep", paths, steps, kind=kind, readouts=readouts)
    return plan.run(progress=progress)["sweep"]


def naive_sweep(subject: Any, clean: CleanRun, site: str, paths: Any, steps: Any, *,
                kind: PathKind = "direction") -> SweepResult:
    """The same read-outs with one full forward per (prompt, path, step): the baseline."""
    import torch

    from mi_ideas.metrics import kl_divergence
    from mi_ideas.subject import Batch, Intervention

    n, m, d = paths.shape
    steps = torch.as_tensor(steps, dtype=torch.float32)
    points = path_points(clean.x, paths, steps, kind)
    kl = torch.empty(n, m, len(steps))
    l2 = torch.empty(n, m, len(steps))
    final_site = f"resid_post.{subject.n_layers - 1}"
    for i in range(n):
        one = Batch(clean.batch.input_ids[i:i + 1], clean.batch.attention_mask[i:i + 1])
        for j in range(m):
            for k in range(len(steps)):
                out = subject.forward(one, read=[final_site], positions="last", logits=True,
                                      interventions=[Intervention(site, "replace",
                                                                  points[i, j, k], "last")])
                lp = out.logits[0, -1].float().log_softmax(-1)
                kl[i, j, k] = kl_divergence(clean.logprobs[i], lp)
                l2[i, j, k] = (out.activations[final_site][0] - clean.final[i]).norm()
    return SweepResult(steps=steps, kl=kl, l2=l2, n_forwards=n * m * len(steps))
