"""Activation plateaus through grokking: do plateau regions sharpen when a model groks?

Sub-question 3 of activation-plateaus: the boundaries of activation plateaus are said to
be bunched-up ReLU boundaries, as grokking work predicts. This module trains a small
modular-addition model to grokking and tracks, at every checkpoint, how the output changes
along real→real paths and where those paths cross the model's ReLU boundaries. The control is
the same schedule without weight decay, which memorises and never generalises.

Config-free API (torch and numpy imported only when called, so importing this is cheap):

- :func:`run_grokking` — one training run with the path metrics at every checkpoint, a
  :class:`GrokkingResult`;
- :func:`run_grokking_with_control` — the run and its no-weight-decay control from the same
  seed (same split, initialisation and paths);
- the pure metric functions (:func:`crossing_alphas`, :func:`relu_crossings`, :func:`onset`,
  :func:`loglog_slope`, :func:`max_slope_sharpness`, :func:`bunching`), each checked on planted
  data in ``tests/test_grokking.py``.

**Model.** Tokens a, b ∈ Z_p are embedded (learned ``E``, p × ``embed_dim``), concatenated,
and fed to one ReLU layer and a linear unembedding:
``logits = W2 · relu(W1 · [E_a; E_b] + b1)``, trained full-batch with AdamW on a random
``train_frac`` of all p² pairs, target (a + b) mod p.

**Site.** Paths live at the input of the ReLU layer, x = [E_a; E_b] (the residual-stream
analogue: what the only nonlinearity reads). The pre-activations h = W1 x + b1 are affine in x,
so a straight path in x is a straight path in h: the same path at either site, and unit i's
boundary {h_i = 0} is a hyperplane crossed at most once, at α_i = h_i(x_a) / (h_i(x_a) −
h_i(x_b)) — exactly, not on a grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: Default settings. They grok on CPU within the budget for seeds 0–2 (test accuracy ≥ 0.95
#: from step ~1150–1550, first ≥ 0.99 train accuracy at step ~150 with test accuracy ~0),
#: and without weight decay the same schedule ends near 0 test accuracy.
DEFAULTS: dict[str, Any] = {
    "p": 59,
    "train_frac": 0.5,
    "embed_dim": 64,
    "hidden": 128,
    "steps": 2500,
    "weight_decay": 1.0,
    "lr": 3e-3,
    "betas": (0.9, 0.98),
    "eval_every": 50,
    "n_paths": 256,
    "n_steps": 41,
    "slope_points": 4,
    "seed": 0,
    "threads": 1,
}

#: What each per-checkpoint metric is (medians are over the ``n_paths`` paths).
DEFINITIONS: dict[str, str] = {
    "path": "x(α) = x_a + α (x_b − x_a) at the ReLU layer's input x = [E_a; E_b], x_a and x_b "
            "two test inputs with different correct answers (fixed for the whole run), α on "
            "n_steps evenly spaced points of [0, 1] (endpoints included)",
    "js": "JS(α) = Jensen–Shannon divergence between p(·|x_a) and p(·|x(α)) "
          "(mi_ideas.metrics.js_divergence, nats; bounded by log 2)",
    "kl": "KL(α) = KL(p(·|x_a) ‖ p(·|x(α))) (mi_ideas.metrics.kl_divergence, nats)",
    "onset10": "the α at which JS first reaches 10% of JS(1), linearly interpolated between the "
               "two grid points around the first grid point where JS ≥ 0.1 JS(1) (NaN if JS(1) "
               "≤ 1e-12); onset50 / onset90 the same at 50% / 90%",
    "loglog_slope": "least-squares slope of log JS against log α over the first slope_points "
                    "nonzero α (2 for a smooth quadratic start, larger when JS stays flat "
                    "longer; points where JS is exactly 0 left out, NaN with fewer than two "
                    "left: plateaus.common.curves.loglog_slope)",
    "sharpness": "max over the n_steps − 1 grid segments of ΔJS_k / (JS(1) / (n_steps − 1)) "
                 "(1 for a linear curve, n_steps − 1 for a single jump; "
                 "plateaus.common.curves.sharpness)",
    "sharpness_kl": "the same max-slope sharpness of the KL curve",
    "crossings": "number of hidden units whose pre-activation changes sign along the path "
                 "((h_i(x_a) > 0) ≠ (h_i(x_b) > 0); exact: a linear path crosses each ReLU "
                 "hyperplane at most once)",
    "bunching": "fraction of the path's ReLU crossings with α_i in [onset10, onset90] divided "
                "by that window's width (≈ 1 for crossings spread uniformly over α, > 1 when "
                "they bunch where JS rises); NaN for paths without crossings",
    "bunching_shuffled": "the same with each path's crossings scored against the next path's "
                         "window (cyclic shift): the ratio expected from where crossings and "
                         "windows fall in general, without their per-path coincidence",
    "margin_sharpness": "max-slope sharpness of the logit-margin drop d(α) = m(0) − m(α), m = "
                        "logit[c_a] − logit[c_b], c_a / c_b the predicted classes at x_a / x_b "
                        "(NaN where they agree): unchanged by rescaling all logits, so it "
                        "separates nonlinearity of the logits along the path (where ReLU kinks "
                        "bunch) from the saturation of the softmax (temperature), which alone "
                        "makes JS step-like when logits grow",
    "logit_gap": "top-1 minus top-2 logit at x_a (the output's confidence scale)",
    "argmax_changes": "number of grid segments along the path where the predicted class "
                      "changes",
    "js_end": "JS(1) = JS(p(·|x_a), p(·|x_b))",
    "kl_end": "KL(1) = KL(p(·|x_a) ‖ p(·|x_b))",
    "weight_norm": "L2 norm of all parameters together (E, W1, b1, W2)",
    "grok_step": "first checkpoint with test accuracy ≥ 0.95 (None if never)",
    "memorised_step": "first checkpoint with train accuracy ≥ 0.99 (None if never)",
}

#: Per-path metrics, in the order they are stored.
PATH_METRICS = ("onset10", "onset50", "onset90", "loglog_slope", "sharpness", "sharpness_kl",
                "margin_sharpness", "crossings", "bunching", "bunching_shuffled", "argmax_changes",
                "logit_gap", "js_end", "kl_end")


# --------------------------------------------------------------------------- metrics


def crossing_alphas(h_a: Any, h_b: Any) -> tuple[Any, Any]:
    """ReLU crossings of the straight path between pre-activations ``h_a`` and ``h_b``.

    ``h_a``, ``h_b``: ``(..., H)``. Returns ``(counts, alphas)``: ``counts`` ``(...,)`` int64,
    the number of units i with (h_a[i] > 0) ≠ (h_b[i] > 0); ``alphas`` ``(..., H)``, the α at
    which unit i's pre-activation h_a[i] + α (h_b[i] − h_a[i]) is 0 for those units, NaN
    for the others. Exact: each unit is linear in α, so it changes sign at most once.
    """
    import torch

    h_a, h_b = h_a.double(), h_b.double()
    crosses = (h_a > 0) != (h_b > 0)
    denom = torch.where(crosses, h_a - h_b, torch.ones_like(h_a))  # ≠ 0 wherever crosses
    alphas = torch.where(crosses, h_a / denom, torch.full_like(h_a, float("nan")))
    return crosses.sum(-1), alphas


def relu_crossings(weight: Any, bias: Any, x_a: Any, x_b: Any) -> tuple[Any, Any]:
    """:func:`crossing_alphas` of the ReLU layer ``relu(x @ weight.T + bias)`` along x_a → x_b."""
    return crossing_alphas(x_a.double() @ weight.double().T + bias.double(),
                           x_b.double() @ weight.double().T + bias.double())


def onset(curves: Any, alphas: Any, frac: float) -> Any:
    """α at which each curve ``(..., n)`` first reaches ``frac`` × its endpoint value: the
    family's :func:`~mi_ideas_plugins.plateaus.common.curves.onset` (linear interpolation;
    α_0 when the curve starts at the level), with paths whose endpoint is at most 1e-12
    (nothing to reach) NaN."""
    import math

    from ..common.curves import onset as shared_onset

    # the shared floor keeps endpoints >= floor; this module's rule is endpoint > 1e-12
    return shared_onset(curves, alphas, frac, floor=math.nextafter(1e-12, math.inf))


def loglog_slope(curves: Any, alphas: Any, points: int = 4) -> Any:
    """Least-squares slope of log curve vs log α over the first ``points`` nonzero α: the
    family's :func:`~mi_ideas_plugins.plateaus.common.curves.loglog_slope` with
    ``n_fit=points``. One difference from this module's earlier definition: grid points where
    the curve is exactly 0 are left out of the fit (NaN with fewer than two left) instead of
    being clamped at 1e-30, which made a single exact zero dominate the slope."""
    from ..common.curves import loglog_slope as shared

    if int((alphas > 0).sum()) < 2 or points < 2:
        raise ValueError("a log–log slope needs at least two nonzero α.")
    return shared(curves, alphas, n_fit=points, min_points=2)


def max_slope_sharpness(curves: Any, alphas: Any) -> Any:
    """max_k ΔJS_k / (JS(1) · Δα_k) for α on [0, 1] (the family's shared sharpness)."""
    from ..common.curves import sharpness

    value, _ = sharpness(curves.double(), alphas.double())
    return value


def bunching(alphas: Any, lo: Any, hi: Any) -> Any:
    """Fraction of the crossings ``alphas`` ``(..., H)`` (NaN = none) inside [lo, hi], per
    width hi − lo. NaN where a path has no crossing or the window is empty/undefined."""
    import torch

    valid = ~torch.isnan(alphas)
    n = valid.sum(-1)
    lo_, hi_ = lo.double().unsqueeze(-1), hi.double().unsqueeze(-1)
    inside = (valid & (alphas >= lo_) & (alphas <= hi_)).sum(-1)
    width = (hi.double() - lo.double())
    ratio = inside.double() / n.clamp_min(1).double() / width.clamp_min(1e-12)
    bad = (n == 0) | ~(width > 0)
    return torch.where(bad, torch.full_like(ratio, float("nan")), ratio)


# --------------------------------------------------------------------------- model


def logits_at_site(x: Any, params: dict[str, Any]) -> Any:
    """Logits from the ReLU layer's input x = [E_a; E_b] ``(..., 2·embed_dim)``."""
    import torch

    return torch.relu(x @ params["W1"].T + params["b1"]) @ params["W2"].T


def site_activations(a: Any, b: Any, params: dict[str, Any]) -> Any:
    """x = [E_a; E_b] for token pairs ``a``, ``b``."""
    import torch

    return torch.cat([params["E"][a], params["E"][b]], dim=-1)


def path_metrics(params: dict[str, Any], x_a: Any, x_b: Any, alphas: Any,
                 slope_points: int = 4) -> dict[str, Any]:
    """Every per-path metric (:data:`PATH_METRICS`) of the paths x_a → x_b, plus
    ``js_curves`` ``(n_paths, n_steps)``."""
    import torch

    from mi_ideas.metrics import js_divergence, kl_divergence

    with torch.no_grad():
        xs = x_a[:, None, :] + alphas.float()[None, :, None] * (x_b - x_a)[:, None, :]
        logits = logits_at_site(xs, params).double()
        logp = torch.log_softmax(logits, dim=-1)
        ref = logp[:, :1, :].expand_as(logp)
        js = js_divergence(ref, logp).double().clamp_min(0)
        kl = kl_divergence(ref, logp).double().clamp_min(0)
        js[:, 0] = 0.0  # exactly (float error otherwise)
        kl[:, 0] = 0.0
        counts, cross = relu_crossings(params["W1"], params["b1"], x_a, x_b)
        o10, o50, o90 = (onset(js, alphas, f) for f in (0.1, 0.5, 0.9))
        preds = logp.argmax(-1)
        c_a, c_b = preds[:, :1], preds[:, -1:]
        margin = (logits.gather(-1, c_a[..., None].expand(-1, logits.shape[1], 1))
                  - logits.gather(-1, c_b[..., None].expand(-1, logits.shape[1], 1)))[..., 0]
        drop = margin[:, :1] - margin
        margin_sharp = max_slope_sharpness(drop, alphas)
        margin_sharp = torch.where((c_a != c_b)[:, 0] & (drop[:, -1] > 1e-12), margin_sharp,
                                   torch.full_like(margin_sharp, float("nan")))
        top2 = logits[:, 0].topk(2, dim=-1).values
        out = {
            "onset10": o10, "onset50": o50, "onset90": o90,
            "loglog_slope": loglog_slope(js, alphas, slope_points),
            "sharpness": max_slope_sharpness(js, alphas),
            "sharpness_kl": max_slope_sharpness(kl, alphas),
            "margin_sharpness": margin_sharp,
            "crossings": counts.double(),
            "bunching": bunching(cross, o10, o90),
            "bunching_shuffled": bunching(cross, o10.roll(1, 0), o90.roll(1, 0)),
            "argmax_changes": (preds[:, 1:] != preds[:, :-1]).sum(-1).double(),
            "logit_gap": top2[:, 0] - top2[:, 1],
            "js_end": js[:, -1], "kl_end": kl[:, -1],
            "js_curves": js,
        }
    return out


# --------------------------------------------------------------------------- result


@dataclass
class GrokkingResult:
    """One training run: per-checkpoint arrays (numpy, aligned with ``step``), per-path
    arrays ``per_path[name]`` ``(n_checkpoints, n_paths)``, the median normalised JS curve per
    checkpoint, and the final weights (torch tensors)."""

    config: dict[str, Any]
    step: Any
    train_acc: Any
    test_acc: Any
    train_loss: Any
    test_loss: Any
    weight_norm: Any
    metrics: dict[str, Any]          # name -> (n_checkpoints,) median over paths
    per_path: dict[str, Any]         # name -> (n_checkpoints, n_paths)
    js_curve_median: Any             # (n_checkpoints, n_steps): median of JS(α)/JS(1)
    alphas: Any                      # (n_steps,)
    weights: dict[str, Any]          # E, W1, b1, W2 after the last step
    split: dict[str, Any]  # train / test indices i of the p² pairs: (a, b) = divmod(i, p)
    pairs: Any                       # (n_paths, 2) indices of x_a's and x_b's pairs
    seconds: float = 0.0
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))

    def __getattr__(self, name: str) -> Any:  # result.onset10 etc. for the metric arrays
        metrics = self.__dict__.get("metrics")
        if metrics is not None and name in metrics:
            return metrics[name]
        raise AttributeError(name)

    def _first(self, values: Any, threshold: float) -> int | None:
        hit = [int(s) for s, v in zip(self.step, values) if v >= threshold]
        return hit[0] if hit else None

    @property
    def memorised_step(self) -> int | None:
        """First checkpoint with train accuracy ≥ 0.99."""
        return self._first(self.train_acc, 0.99)

    @property
    def grok_step(self) -> int | None:
        """First checkpoint with test accuracy ≥ 0.95."""
        return self._first(self.test_acc, 0.95)

    def at(self, step: int) -> dict[str, float]:
        """Every per-checkpoint number at the checkpoint ``step`` (the nearest one)."""
        import numpy as np

        i = int(np.abs(np.asarray(self.step) - step).argmin())
        row = {"step": int(self.step[i]), "train_acc": float(self.train_acc[i]),
               "test_acc": float(self.test_acc[i]), "train_loss": float(self.train_loss[i]),
               "test_loss": float(self.test_loss[i]), "weight_norm": float(self.weight_norm[i])}
        row.update({k: float(v[i]) for k, v in self.metrics.items()})
        return row

    def summary(self) -> dict[str, Any]:
        """The numbers at initialisation, at memorisation, at grokking (if any) and at the end."""
        out: dict[str, Any] = {"memorised_step": self.memorised_step,
                               "grok_step": self.grok_step, "seconds": round(self.seconds, 1)}
        marks = {"init": int(self.step[0]), "memorised": self.memorised_step,
                 "grok": self.grok_step, "final": int(self.step[-1])}
        for name, s in marks.items():
            if s is not None:
                out[name] = self.at(s)
        return out


# --------------------------------------------------------------------------- training


def run_grokking(p: int = DEFAULTS["p"], train_frac: float = DEFAULTS["train_frac"],
                 hidden: int = DEFAULTS["hidden"], steps: int = DEFAULTS["steps"],
                 weight_decay: float = DEFAULTS["weight_decay"], lr: float = DEFAULTS["lr"],
                 eval_every: int = DEFAULTS["eval_every"], n_paths: int = DEFAULTS["n_paths"],
                 n_steps: int = DEFAULTS["n_steps"], seed: int = DEFAULTS["seed"],
                 generator: Any = None, progress: Callable[..., Any] | None = None, *,
                 embed_dim: int = DEFAULTS["embed_dim"],
                 betas: tuple[float, float] = DEFAULTS["betas"],
                 slope_points: int = DEFAULTS["slope_points"],
                 threads: int | None = DEFAULTS["threads"]) -> GrokkingResult:
    """Train the modular-addition MLP and measure the real→real paths at every checkpoint.

    Checkpoints: step 0 and every ``eval_every`` steps up to ``steps`` (the last step always).
    Randomness (the split, the initialisation, the path pairs, in that order) comes from
    ``generator`` if given, else from a generator seeded with ``seed``; training itself is
    deterministic (full batch). ``progress`` is a tqdm-like ``progress(iterable, total=,
    desc=)``. ``threads``: torch's intra-op threads during the run (restored after; ``None``
    keeps the current setting). One thread is the default because on a small shared CPU two
    OpenMP threads on these tiny matrices ran up to 10× slower than one.
    """
    import numpy as np
    import torch

    if not 0 < train_frac < 1:
        raise ValueError("train_frac must be in (0, 1).")
    if n_steps < slope_points + 1 or n_steps < 3:
        raise ValueError("n_steps must exceed slope_points (and be ≥ 3).")
    config = {"p": p, "train_frac": train_frac, "hidden": hidden, "steps": steps,
              "weight_decay": weight_decay, "lr": lr, "eval_every": eval_every,
              "n_paths": n_paths, "n_steps": n_steps, "seed": None if generator else seed,
              "embed_dim": embed_dim, "betas": tuple(betas), "slope_points": slope_points}
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        # data: all p² pairs, a random train_frac of them for training
        idx = torch.arange(p * p)
        a_all, b_all = idx // p, idx % p
        y_all = (a_all + b_all) % p
        perm = torch.randperm(p * p, generator=gen)
        n_train = int(round(train_frac * p * p))
        train, test = perm[:n_train], perm[n_train:]

        def init(*shape: int, fan_in: int) -> Any:
            return (torch.randn(*shape, generator=gen) / math.sqrt(fan_in)).requires_grad_()

        params = {"E": init(p, embed_dim, fan_in=embed_dim),
                  "W1": init(hidden, 2 * embed_dim, fan_in=2 * embed_dim),
                  "b1": torch.zeros(hidden, requires_grad=True),
                  "W2": init(p, hidden, fan_in=hidden)}

        # paths: pairs of test inputs with different correct answers
        first = test[torch.randint(len(test), (n_paths,), generator=gen)]
        second = test[torch.randint(len(test), (n_paths,), generator=gen)]
        for _ in range(100):  # redraw the partners that share the answer
            same = y_all[first] == y_all[second]
            if not bool(same.any()):
                break
            second[same] = test[torch.randint(len(test), (int(same.sum()),), generator=gen)]
        else:  # pragma: no cover - needs p = 1 or a one-class test set
            raise ValueError("could not draw path pairs with different answers.")
        alphas = torch.linspace(0.0, 1.0, n_steps, dtype=torch.float64)

        opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=weight_decay,
                                betas=tuple(betas))
        ce = torch.nn.functional.cross_entropy

        def logits(rows: Any) -> Any:
            return logits_at_site(site_activations(a_all[rows], b_all[rows], params), params)

        rec: dict[str, list[float]] = {k: [] for k in
                                       ("step", "train_acc", "test_acc", "train_loss",
                                        "test_loss", "weight_norm")}
        per_path: dict[str, list[Any]] = {k: [] for k in PATH_METRICS}
        curves: list[Any] = []

        def checkpoint(step: int) -> None:
            with torch.no_grad():
                lt, le = logits(train), logits(test)
                rec["step"].append(step)
                rec["train_acc"].append(float((lt.argmax(-1) == y_all[train]).float().mean()))
                rec["test_acc"].append(float((le.argmax(-1) == y_all[test]).float().mean()))
                rec["train_loss"].append(float(ce(lt, y_all[train])))
                rec["test_loss"].append(float(ce(le, y_all[test])))
                rec["weight_norm"].append(float(torch.sqrt(sum(
                    (v.double() ** 2).sum() for v in params.values()))))
                x_a = site_activations(a_all[first], b_all[first], params)
                x_b = site_activations(a_all[second], b_all[second], params)
                m = path_metrics(params, x_a, x_b, alphas, slope_points)
            for k in PATH_METRICS:
                per_path[k].append(m[k].numpy())
            js = m["js_curves"]
            curves.append(np.nanmedian((js / js[:, -1:].clamp_min(1e-12)).numpy(), axis=0))

        steps_iter: Any = range(steps + 1)
        if progress is not None:
            steps_iter = progress(steps_iter, total=steps + 1, desc="grokking")
        for step in steps_iter:
            if step % eval_every == 0 or step == steps:
                checkpoint(step)
            if step == steps:
                break
            loss = ce(logits(train), y_all[train])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)

    stacked = {k: np.stack(v) for k, v in per_path.items()}
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN checkpoints → NaN
            medians = {k: np.nanmedian(v, axis=1) for k, v in stacked.items()}
    medians["crossings_mean"] = stacked["crossings"].mean(axis=1)
    return GrokkingResult(
        config=config,
        step=np.asarray(rec["step"], dtype=np.int64),
        **{k: np.asarray(rec[k], dtype=np.float64) for k in
           ("train_acc", "test_acc", "train_loss", "test_loss", "weight_norm")},
        metrics=medians, per_path=stacked, js_curve_median=np.stack(curves),
        alphas=alphas.numpy(),
        weights={k: v.detach().clone() for k, v in params.items()},
        split={"train": train, "test": test},
        pairs=torch.stack([first, second], dim=1),
        seconds=time.perf_counter() - t0,
    )


def run_grokking_with_control(generator: Any = None, seed: int = DEFAULTS["seed"],
                              control_weight_decay: float = 0.0, **kwargs: Any
                              ) -> tuple[GrokkingResult, GrokkingResult]:
    """:func:`run_grokking` and its control (``weight_decay=control_weight_decay``, all else
    equal) from the same seed: the same split, initialisation and paths. With a
    ``generator``, one seed is drawn from it and used for both."""
    if generator is not None:
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    main = run_grokking(seed=seed, **kwargs)
    control = run_grokking(seed=seed, **{**kwargs, "weight_decay": control_weight_decay})
    return main, control
