"""The batched sweep engine against a naive loop, and its remote request count.

    python benchmarks/plateau_sweep.py [--quick]

Workload (the issue's): 50 prompts x 3 direction types (real, covariance-matched,
isotropic) x 100 absolute steps at resid_pre.2 of the zoo model, read-outs KL and L2.

- Baseline, in this same process: one full forward per (prompt, direction, step), the
  perturbation as a ``replace`` intervention (``naive_sweep`` of
  ``mi_ideas_plugins.plateaus.common.sweep``).
- Engine: every row batched, ``rows_per_forward`` rows a forward, starting at the perturbed
  block from the cached clean residual stream (``sweep`` of the same module).
Prints both times, the ratio (goal >= 10x), the largest difference between their
read-outs (must be <= 1e-5), and the number of requests the same sweep makes through the
loopback NDIF server (one per batch of rows).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10 prompts x 3 x 20 steps")
    parser.add_argument("--no-remote", action="store_true", help="skip the loopback server")
    args = parser.parse_args()
    import torch

    from mi_ideas import load_dataset
    from mi_ideas import load_subject
    from mi_ideas_plugins.plateaus.common import directions as dirs
    from mi_ideas_plugins.plateaus.common.sweep import clean_run, naive_sweep, sweep

    n_prompts, n_steps = (10, 20) if args.quick else (50, 100)
    site = "resid_pre.2"
    subject = load_subject("zoo:stories-gpt2")
    texts = load_dataset("zoo:stories:400", seed=0).texts
    rows = [subject.tokenize(t, max_length=10).input_ids[0] for t in texts]
    rows = [r for r in rows if len(r) == 10]
    prompts = subject.batch_from_ids(torch.stack(rows[:n_prompts]))
    pool_batch = subject.batch_from_ids(torch.stack(rows[n_prompts:n_prompts + 300]))
    pool = dirs.Pool.fit(subject.activations(pool_batch, [site], positions="last")[site])
    gen = torch.Generator().manual_seed(0)
    clean = clean_run(subject, prompts, site)
    paths = torch.cat([dirs.directions(f, clean.x, pool, 1, gen)
                       for f in ("real", "cov_gauss", "isotropic")], dim=1)
    steps = torch.linspace(0, 1.5 * pool.median_pair_distance(gen), n_steps)
    n_rows = paths.shape[0] * paths.shape[1] * n_steps

    t0 = time.perf_counter()
    fast = sweep(subject, clean, site, paths, steps, rows_per_forward=1024)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = naive_sweep(subject, clean, site, paths, steps)
    t_slow = time.perf_counter() - t0
    diff = max(float((fast.kl - slow.kl).abs().max()), float((fast.l2 - slow.l2).abs().max()))
    print(f"workload: {paths.shape[0]} prompts x {paths.shape[1]} direction types x {n_steps} "
          f"steps = {n_rows} rows, zoo:stories-gpt2 at {site}")
    print(f"naive loop : {t_slow:8.2f} s  ({slow.n_forwards} forwards)")
    print(f"engine     : {t_fast:8.2f} s  ({fast.n_forwards} forwards)")
    print(f"ratio      : {t_slow / t_fast:8.1f}x  (goal >= 10x); max |difference| {diff:.2e} "
          f"(must be <= 1e-5)")

    if args.no_remote:
        return
    from nnsight.schema.config import CONFIG

    from tests.ndif.fixtures import NDIFTestServer

    CONFIG.APP.REMOTE_LOGGING = False
    server = NDIFTestServer().start()
    try:
        remote = load_subject("zoo:stories-gpt2", remote=server.url)
        before = server.stats()["requests"]
        got = sweep(remote, clean, site, paths, steps, rows_per_forward=1024)
        n_requests = server.stats()["requests"] - before
        same = float((got.kl - fast.kl).abs().max())
        print(f"remote     : {n_requests} requests for {n_rows} rows in {got.n_forwards} batches "
              f"(one per batch); max |difference| to local {same:.2e}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
