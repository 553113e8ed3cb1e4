"""Fine-tuning runs (with a removal schedule, or the with-LN control), evaluation, checkpoints.

Every run sees the same rows in the same order (row ``(t * batch + i) mod N`` of one fixed
permutation at step ``t``), the same learning-rate shape and the same number of steps, so
runs differ only in what is removed when. A run checkpoints through ``ctx.checkpoint``
every ``checkpoint_every`` steps (weights, sigmas, AdamW state, history) and once more when
it ends; a resumed run continues from there and, with one torch thread, ends with the
same numbers as an uninterrupted one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mi_ideas.zoo.build.lm import cosine_lr

from .model import FakeLNGPT2
from .schedule import Schedule

#: called as ``_after_checkpoint(run_name, step)`` after every checkpoint (tests use it
#: to kill a run at a known step).
_after_checkpoint: Callable[[str, int], None] | None = None


@dataclass
class EvalSet:
    """Held-out texts as right-padded rows ``[eot] text [eot]`` (cut at n_ctx)."""

    ids: torch.Tensor            # (n, T)
    pad: torch.Tensor            # (n, T) True where padding
    target_valid: torch.Tensor   # (n, T-1) True where position p predicts a real token


def make_eval_set(rows: list[list[int]], eot: int) -> EvalSet:
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), eot, dtype=torch.long)
    pad = torch.ones((len(rows), t), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        pad[i, :len(r)] = False
    return EvalSet(ids, pad, ~pad[:, 1:])


@torch.no_grad()
def per_token_nll(model: FakeLNGPT2, ev: EvalSet, batch_size: int = 32,
                  hook: Callable | None = None, rows: slice | None = None) -> torch.Tensor:
    """``-log p(x_{p+1} | x_<=p)`` at every position, ``(n, T-1)``, 0 where padded."""
    was = model.training
    model.eval()
    ids, pad = (ev.ids, ev.pad) if rows is None else (ev.ids[rows], ev.pad[rows])
    out = []
    for k in range(0, ids.shape[0], batch_size):
        x, p = ids[k:k + batch_size], pad[k:k + batch_size]
        lp = torch.log_softmax(model(x, hook=hook, pad=p)[:, :-1].float(), -1)
        nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
        out.append(torch.where(p[:, 1:], 0.0, nll))
    model.train(was)
    return torch.cat(out)


def mean_loss(nll: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over valid positions (token-weighted), in nats."""
    return float(nll[valid].double().mean())


@dataclass
class RunOutput:
    """A finished run: its model and what it recorded."""

    name: str
    model: FakeLNGPT2
    schedule: dict[str, Any] | None
    history: dict[str, list] = field(default_factory=dict)


def _state_at(model: FakeLNGPT2, schedule: Schedule | None, step: int) -> None:
    if schedule is None:
        model.set_state(set(), True, True)
        return
    removed = {s for s, r in schedule.removal_steps().items() if step >= r}
    eot_step, bos_step = schedule.special_steps()
    model.set_state(removed, bos_special=step < bos_step, eot_special=step < eot_step)


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).clone()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_opt(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _model_tensors(model: FakeLNGPT2) -> dict[str, torch.Tensor]:
    # clone: tied weights share storage, which safetensors refuses
    return {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}


def train_run(ctx: Any, name: str, base: FakeLNGPT2, schedule: Schedule | None,
              train_rows: np.ndarray, order: np.ndarray, ev: EvalSet, config: Any,
              steps: int, lr: float, warmup: int, min_lr_frac: float, aux_weight: float = 0.0,
              sae: Any = None, sae_layer: int | None = None, sae_weight: float = 0.0) -> RunOutput:
    """One fine-tuning run of ``steps`` AdamW steps from a copy of ``base``.

    ``schedule=None`` is the with-LN control. History: ``train_loss`` per step (the LM
    cross-entropy only), ``eval_step`` / ``eval_loss`` / ``eval_ln_free`` at every
    evaluation (held-out rows ``ev``), ``seconds`` (training wall time, evaluation
    excluded, cumulative at each evaluation).
    """
    model = copy.deepcopy(base)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    hist: dict[str, list] = {"train_loss": [], "aux_loss": [], "sae_loss": [], "eval_step": [],
                             "eval_loss": [], "eval_ln_free": [], "seconds": []}
    start, train_seconds = 0, 0.0
    ckpt = f"train-{name}"
    restored = ctx.restore(ckpt)
    b = config.batch_rows
    n = train_rows.shape[0]

    def batch(step: int) -> torch.Tensor:
        idx = order[(step * b + np.arange(b)) % n]
        return torch.from_numpy(train_rows[idx])

    curve = slice(0, min(config.n_curve_texts, ev.ids.shape[0]))
    curve_valid = ev.target_valid[curve]

    def evaluate(step: int) -> None:
        hist["eval_step"].append(step)
        hist["eval_loss"].append(mean_loss(per_token_nll(model, ev, rows=curve), curve_valid))
        hist["eval_ln_free"].append(bool(model.fully_removed()))
        hist["seconds"].append(train_seconds)

    if restored is not None:
        tensors, state = restored
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_opt(opt, tensors, state)
        hist, start, train_seconds = state["history"], state["step"], state["seconds"]
        ctx.log(f"{name}: resumed at step {start}")
    else:
        model.calibrate(batch(0))
        _state_at(model, schedule, 0)
        evaluate(0)

    sae_hook = None
    sae_err: list[torch.Tensor] = []
    if sae is not None and sae_weight > 0:
        def sae_hook(site: str, x: torch.Tensor):
            if site == f"resid_pre.{sae_layer}":
                a = x[:, 1:].reshape(-1, x.shape[-1])
                rec = sae.decode(sae.encode(a))
                sae_err.append((a - rec).pow(2).sum() / (a - a.mean(0)).pow(2).sum())
            return None

    model.train()
    for step in range(start, steps):
        t0 = time.perf_counter()
        _state_at(model, schedule, step)
        for g in opt.param_groups:
            g["lr"] = lr * cosine_lr(step, steps, warmup, min_lr_frac)
        x = batch(step)
        sae_err.clear()
        logits = model(x, hook=sae_hook)
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss = ce
        aux = torch.zeros(())
        if aux_weight > 0:
            s = model.last_final_std.mean(0)
            target = s[1:].mean().detach()
            aux = ((s - target) / target).pow(2).mean()
            loss = loss + aux_weight * aux
        if sae_err:
            loss = loss + sae_weight * sae_err[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        train_seconds += time.perf_counter() - t0
        hist["train_loss"].append(float(ce.detach()))
        hist["aux_loss"].append(float(aux.detach()))
        hist["sae_loss"].append(float(sae_err[0].detach()) if sae_err else 0.0)
        done = step + 1
        if done % config.eval_every == 0 or done == steps:
            evaluate(done)
        if done % config.checkpoint_every == 0 or done == steps:
            tensors = _model_tensors(model)
            opt_t, meta = _opt_tensors(opt)
            tensors.update(opt_t)
            ctx.checkpoint(ckpt, tensors, {**meta, "history": hist, "step": done,
                                           "seconds": train_seconds})
            if _after_checkpoint is not None:
                _after_checkpoint(name, done)
    model.eval()
    _state_at(model, schedule, steps)
    return RunOutput(name, model, None if schedule is None else schedule.table(), hist)


def steps_to_target(hist: dict[str, list], target: float) -> int | None:
    """First evaluation step at which the run is fully LN-free with held-out loss <= target."""
    for step, loss, free in zip(hist["eval_step"], hist["eval_loss"], hist["eval_ln_free"]):
        if free and loss <= target:
            return int(step)
    return None
