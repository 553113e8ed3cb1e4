"""The plateau sweep engine against what a researcher writes: plain batched Hugging Face.

    python benchmarks/plateau_sweep.py [--quick] [--threads N] [--no-remote] [--naive]

Workload (the plateau sweeps'): prompts of 10 tokens; per prompt, unit random directions d
and absolute steps α in [0, 2 · median ‖x‖]; each (prompt, direction, step) row perturbs
the residual stream entering block L at the last position to x + α·d; read-outs per row:
KL(clean ‖ perturbed) of the last position's next-token distribution and the L2 distance of
the final residual stream (the input of the final LayerNorm, last position) to the clean one.

Timed in this same process, alternating, median of the rounds (a shared machine is noisy):

- plain HF (the baseline): what a competent researcher writes — the Hugging Face model's
  batched forward over the full prompts (``torch.no_grad``, ``use_cache=False``, the same
  ``rows_per_forward`` rows a forward, the perturbation built per chunk), a
  ``register_forward_pre_hook`` on block L adding α·d at the last position, one on the final
  LayerNorm reading its input, KL from the last position's logits;
- plain HF with ``logits_to_keep=1`` (only the last position's logits), for reference;
- the engine before this change: ``sweep(..., engine="full")`` (every position from block L);
- the engine: ``sweep(...)`` (auto: the last-position path, its one-off prefix pass and
  check included in the time, on a fresh copy of the clean run each round).

On (a) a GPT-2-small-sized random GPT-2 (12 x 768, 12 heads, vocabulary 50257, built from a
``GPT2Config``, no download) at resid_pre.6 (goal >= 8x plain) and (b) the zoo model at
resid_pre.2, its story prompts cut to 10 tokens (goal >= 5x plain). Asserts that every
read-out of the engine equals the baseline's to 1e-5 (KL in nats; L2 relative to the final
residual's norm, whose float32 rounding alone is ~1e-7 of it). Then (unless --no-remote) the
same zoo sweep through the loopback NDIF server: one request per batch of rows; with
--naive, the old one-forward-per-row loop on two zoo prompts.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOL = 1e-5


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``t0``."""
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


def plain_hf(hf, layer: int, batch, clean_logprobs, clean_final, dirs, steps, chunk: int,
             keep_last: bool = False):
    """The baseline: full batched forwards with a pre-hook adding α·d at the last position.

    Returns (seconds, kl, l2), both ``(n_prompts, n_dirs, n_steps)``."""
    import torch

    n, m, _ = dirs.shape
    s = len(steps)
    box: dict = {}

    def add(module, args, kwargs):
        h = (args[0] if args else kwargs["hidden_states"]).clone()
        h[:, -1] += box["delta"]
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def read(module, args, kwargs):
        box["final"] = (args[0] if args else kwargs["hidden_states"])[:, -1]

    blocks = hf.transformer.h
    handles = [blocks[layer].register_forward_pre_hook(add, with_kwargs=True),
               hf.transformer.ln_f.register_forward_pre_hook(read, with_kwargs=True)]
    total = n * m * s
    kl, l2 = torch.empty(total), torch.empty(total)
    extra = {"logits_to_keep": 1} if keep_last else {}
    position_ids = batch.position_ids
    t0 = _clock()
    try:
        with torch.no_grad():
            for start in range(0, total, chunk):
                r = torch.arange(start, min(start + chunk, total))
                i, j, k = r // (m * s), (r // s) % m, r % s
                box["delta"] = steps[k][:, None] * dirs[i, j]
                out = hf(input_ids=batch.input_ids[i], attention_mask=batch.attention_mask[i],
                         position_ids=position_ids[i], use_cache=False, **extra)
                lp = out.logits[:, -1].float().log_softmax(-1)
                ref = clean_logprobs[i]
                kl[r] = (ref.exp() * (ref - lp)).sum(-1)
                l2[r] = (box["final"] - clean_final[i]).norm(dim=-1)
    finally:
        for handle in handles:
            handle.remove()
    return _since(t0), kl.reshape(n, m, s), l2.reshape(n, m, s)


def engine(subject, clean, site: str, dirs, steps, chunk: int, which: str = "auto"):
    """``sweep`` on a fresh copy of the clean run (the prefix pass is part of the time)."""
    from mi_ideas_plugins.plateaus.common.sweep import sweep

    fresh = copy.copy(clean)
    fresh.last_token = None
    t0 = _clock()
    res = sweep(subject, fresh, site, dirs, steps, rows_per_forward=chunk, engine=which)
    return _since(t0), res


def workload(subject, batch, site: str, n_dirs: int, n_steps: int):
    """The clean run, unit random directions per prompt, and steps up to 2 median ‖x‖."""
    import torch

    from mi_ideas_plugins.plateaus.common.sweep import clean_run

    clean = clean_run(subject, batch, site)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(len(batch), n_dirs, subject.d_model, generator=gen)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    steps = torch.linspace(0, 2 * float(clean.x.norm(dim=-1).median()), n_steps)
    return clean, dirs, steps


def compare(name: str, subject, hf, site: str, batch, n_dirs: int, n_steps: int, chunk: int,
            rounds: int, goal: float) -> float:
    layer = subject.site(site).layer
    clean, dirs, steps = workload(subject, batch, site, n_dirs, n_steps)
    n_rows = dirs.shape[0] * n_dirs * n_steps
    args = (hf, layer, batch, clean.logprobs, clean.final, dirs, steps, chunk)
    # warm-up (allocator, first calls) on a slice, then alternate
    small = (hf, layer, batch, clean.logprobs, clean.final, dirs[:, :1], steps[:2], chunk)
    plain_hf(*small)
    engine(subject, clean, site, dirs[:, :1], steps[:2], chunk)
    times: dict[str, list] = {"plain": [], "keep": [], "full": [], "engine": []}
    diff_kl = diff_l2 = 0.0
    final_norm = float(clean.final.norm(dim=-1).max())
    for _ in range(rounds):
        tp, kl_p, l2_p = plain_hf(*args)
        te, res = engine(subject, clean, site, dirs, steps, chunk)
        tk, kl_k, l2_k = plain_hf(*args, keep_last=True)
        tf, old = engine(subject, clean, site, dirs, steps, chunk, which="full")
        for key, t in (("plain", tp), ("keep", tk), ("full", tf), ("engine", te)):
            times[key].append(t)
        assert res.engine == "last_token", res.engine
        for kl, l2 in ((kl_p, l2_p), (kl_k, l2_k), (old.kl, old.l2)):
            diff_kl = max(diff_kl, float((res.kl - kl).abs().max()))
            diff_l2 = max(diff_l2, float((res.l2 - l2).abs().max()))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    print(f"{name}: {dirs.shape[0]} prompts x {batch.shape[1]} tokens x {n_dirs} directions x "
          f"{n_steps} steps = {n_rows} rows, {chunk} rows a forward, {site}")
    for key, label in (("plain", "plain HF (baseline)"), ("keep", "plain HF, logits_to_keep=1"),
                       ("full", "engine before (engine='full')"),
                       ("engine", "engine (last-position path)")):
        print(f"  {label:32s}: {wall[key]:7.2f} s wall {n_rows / wall[key]:8.0f} rows/s, "
              f"{cpu[key]:7.2f} s CPU")
    ratio = wall["plain"] / wall["engine"]
    print(f"  ratio {ratio:.2f}x plain HF (goal >= {goal:g}x; CPU time "
          f"{cpu['plain'] / cpu['engine']:.2f}x); {wall['keep'] / wall['engine']:.2f}x "
          f"logits_to_keep=1; {wall['full'] / wall['engine']:.2f}x engine before; medians of "
          f"{rounds} alternating rounds")
    print(f"  max |KL difference| {diff_kl:.2e} nats, max |L2 difference| {diff_l2:.2e} "
          f"(final residual norm up to {final_norm:.1f})")
    if diff_kl > TOL or diff_l2 > TOL * max(1.0, final_norm):
        raise SystemExit(f"read-outs differ beyond {TOL:g}: KL {diff_kl:.2e}, L2 {diff_l2:.2e}")
    return ratio


def gpt2_small(vocab: int):
    """A GPT-2-small-sized model with random weights (no download): subject and HF module
    (the same model as benchmarks/last_token.py's)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from last_token import gpt2_small as build

    return build(vocab)


def zoo_prompts(subject, n: int):
    import torch

    from mi_ideas import load_dataset

    texts = load_dataset("zoo:stories:400", seed=0).texts
    rows = [subject.tokenize(t, max_length=10).input_ids[0] for t in texts]
    rows = [r for r in rows if len(r) == 10][:n]
    return subject.batch_from_ids(torch.stack(rows))


def remote_requests(batch, site: str, n_dirs: int, n_steps: int, chunk: int) -> None:
    """The same zoo sweep through the loopback NDIF server: requests per batch of rows."""
    from nnsight.schema.config import CONFIG

    from mi_ideas import load_subject
    from mi_ideas_plugins.plateaus.common.sweep import sweep
    from tests.ndif.fixtures import NDIFTestServer

    local = load_subject("zoo:stories-gpt2")
    clean, dirs, steps = workload(local, batch, site, n_dirs, n_steps)
    want = sweep(local, clean, site, dirs, steps, rows_per_forward=chunk)
    CONFIG.APP.REMOTE_LOGGING = False
    server = NDIFTestServer().start()
    try:
        remote = load_subject("zoo:stories-gpt2", remote=server.url)
        before = server.stats()["requests"]
        got = sweep(remote, clean, site, dirs, steps, rows_per_forward=chunk)
        n_requests = server.stats()["requests"] - before
    finally:
        server.stop()
    diff = float((got.kl - want.kl).abs().max())
    n_rows = dirs.shape[0] * dirs.shape[1] * n_steps
    print(f"remote (loopback server): {n_requests} requests for {n_rows} rows in "
          f"{got.n_forwards} batches (engine {got.engine!r}); max |KL difference| to local "
          f"{diff:.2e}")


def naive(subject, batch, site: str, n_dirs: int, n_steps: int, chunk: int) -> None:
    """The old baseline (one forward per row) on two prompts, against the engine."""
    from mi_ideas_plugins.plateaus.common.sweep import naive_sweep

    clean, dirs, steps = workload(subject, batch.__class__(batch.input_ids[:2],
                                                           batch.attention_mask[:2]),
                                  site, n_dirs, n_steps)
    t0 = _clock()
    slow = naive_sweep(subject, clean, site, dirs, steps)
    t_slow = _since(t0)[0]
    t_fast, fast = engine(subject, clean, site, dirs, steps, chunk)
    t_fast = t_fast[0]
    print(f"naive loop (one forward per row), {slow.n_forwards} rows: {t_slow:.2f} s; engine "
          f"{t_fast:.3f} s; ratio {t_slow / t_fast:.1f}x; max |KL difference| "
          f"{float((slow.kl - fast.kl).abs().max()):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rows, one round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary of model (a)")
    parser.add_argument("--no-remote", action="store_true", help="skip the loopback server")
    parser.add_argument("--naive", action="store_true", help="also time the one-row loop")
    parser.add_argument("--only", choices=["gpt2", "zoo"], help="one model only")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from mi_ideas import load_subject, zoo

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    rounds = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    if args.only != "zoo":
        # (a) GPT-2-small-sized, random weights, resid_pre.6, 10-token prompts
        subject, hf = gpt2_small(args.vocab)
        n_prompts = 8 if args.quick else 16
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(1, min(args.vocab, len(subject.tokenizer)), (n_prompts, 9),
                            generator=gen)
        bos = torch.full((n_prompts, 1), subject.pad_token_id, dtype=torch.long)
        batch = subject.batch_from_ids(torch.cat([bos, ids], dim=1))
        compare(f"(a) gpt2-small-sized (random, vocab {args.vocab})", subject, hf, "resid_pre.6",
                batch, 2 if args.quick else 4, 16, 256, rounds, 8)

    if args.only != "gpt2":
        # (b) the zoo model at resid_pre.2, its story prompts (10 tokens, as the plateau ideas)
        subject = load_subject("zoo:stories-gpt2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(str(zoo.model_dir("stories-gpt2"))).eval()
        batch = zoo_prompts(subject, 50)
        n_steps = 20 if args.quick else 100
        compare("(b) zoo:stories-gpt2", subject, hf, "resid_pre.2", batch, 3, n_steps, 512,
                rounds, 5)
        if args.naive:
            naive(subject, batch, "resid_pre.2", 3, 20, 512)
        if not args.no_remote:
            remote_requests(zoo_prompts(subject, 10), "resid_pre.2", 3, 20, 64)


if __name__ == "__main__":
    main()
