"""k-means back-ends on activation-sized data: which one saes-vs-clustering uses by default.

    python benchmarks/kmeans.py [--rows 1000000] [--d 128] [--k 256] [--iters 10] [--threads 2]

Same data (a mixture of ``k`` Gaussian blobs in ``d`` dimensions plus a shared random
low-rank part, float32), same k, the same k-means++ initial centroids for every back-end,
the same number of Lloyd iterations and no early stop, all in this one process:

- ``sklearn.KMeans(algorithm="lloyd", n_init=1, tol=0, init=C0)`` -- the baseline
- ``sklearn.MiniBatchKMeans(init=C0, n_init=1, batch_size=4096)``, ``max_iter`` epochs
  (it stops early on its own criteria; the epochs it ran are printed)
- the batched torch Lloyd of ``mi_ideas_plugins.dictionary.common.kmeans`` (streams rows;
  here from memory)
- ``faiss.Kmeans`` (faiss-cpu), when installed

For each: seconds, the inertia Σᵢ minⱼ ‖xᵢ − cⱼ‖² of its final centroids computed by one
common function (so the quality comparison is fair), the inertia relative to scikit-learn's,
and the speed ratio (scikit-learn KMeans seconds / its seconds; > 1 is faster).

Measured on this project's 2-core CI machine (shared, so seconds vary; ratios are from one
process), ``--rows 1000000 --d 128 --k 256 --iters 5 --threads 1``: scikit-learn KMeans 1.00x
(21.6 s), MiniBatchKMeans 0.71x, torch batched Lloyd 1.27x, faiss-cpu 1.15.1 1.72x; every
full-batch Lloyd reaches the same inertia to 1e-8 (MiniBatchKMeans a 4% lower one: it ran
588 mini-batch steps, more centroid updates than 5 epochs of Lloyd). The default of
saes-vs-clustering is the torch Lloyd: as fast as scikit-learn or faster, no extra
dependency, and it is the only one that streams rows from disk (scikit-learn and faiss need
every row in one in-memory array); ``kmeans_backend=faiss`` is there when the rows fit.
With ``--threads 2`` on a machine whose load exceeds its cores, OpenMP threads contend and
every ratio is noise (we saw torch 0.10x at load 9): measure on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(n: int, d: int, k: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 2
    low_rank = torch.randn(8, d, generator=g)
    x = torch.empty(n, d)
    for i in range(0, n, 65536):
        m = min(65536, n - i)
        lab = torch.randint(k, (m,), generator=g)
        x[i:i + m] = (centres[lab] + torch.randn(m, d, generator=g)
                      + torch.randn(m, 8, generator=g) @ low_rank * 0.3)
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from mi_ideas_plugins.dictionary.common.kmeans import kmeans_pp, lloyd, nearest
    from mi_ideas_plugins.dictionary.common.rows import RowSource

    torch.set_num_threads(args.threads)
    x = make_data(args.rows, args.d, args.k)
    xn = x.numpy()
    src = RowSource.of(x)
    c0 = kmeans_pp(src.sample(20_000), args.k, torch.Generator().manual_seed(0))
    c0n = np.ascontiguousarray(c0.numpy())
    print(f"rows {args.rows}, d {args.d}, k {args.k}, {args.iters} Lloyd iterations, "
          f"{args.threads} threads, same k-means++ init for all")

    def inertia(c) -> float:
        c = torch.as_tensor(np.asarray(c, dtype=np.float32))
        return sum(float(nearest(b, c)[1].double().sum()) for b in src.batches())

    results: dict[str, tuple[float, float, str]] = {}
    with threadpool_limits(limits=args.threads):
        from sklearn.cluster import KMeans, MiniBatchKMeans

        t = time.perf_counter()
        km = KMeans(args.k, init=c0n, n_init=1, max_iter=args.iters, tol=0.0,
                    algorithm="lloyd").fit(xn)
        results["sklearn KMeans (baseline)"] = (time.perf_counter() - t, inertia(km.cluster_centers_),
                                               f"{km.n_iter_} iterations")
        t = time.perf_counter()
        mb = MiniBatchKMeans(args.k, init=c0n, n_init=1, max_iter=args.iters, batch_size=4096,
                             random_state=0).fit(xn)
        results["sklearn MiniBatchKMeans"] = (time.perf_counter() - t, inertia(mb.cluster_centers_),
                                             f"{mb.n_iter_} epochs, {mb.n_steps_} steps")
        t = time.perf_counter()
        fit = lloyd(src, c0, args.iters)
        results["torch batched Lloyd (ours)"] = (time.perf_counter() - t, inertia(fit.centroids),
                                                f"{fit.n_iter} iterations")
        try:
            import faiss
        except ImportError:
            print("faiss-cpu is not installed: pip install faiss-cpu to include it")
        else:
            faiss.omp_set_num_threads(args.threads)
            t = time.perf_counter()
            fk = faiss.Kmeans(args.d, args.k, niter=args.iters, seed=0, verbose=False,
                              max_points_per_centroid=args.rows, min_points_per_centroid=1)
            fk.train(xn, init_centroids=c0n)
            results[f"faiss-cpu {faiss.__version__} Kmeans"] = (
                time.perf_counter() - t, inertia(fk.centroids), f"{args.iters} iterations")

    base_t, base_i, _ = results["sklearn KMeans (baseline)"]
    print(f"{'back-end':32s} {'seconds':>8s} {'speed ratio':>11s} {'inertia':>14s} "
          f"{'inertia/base':>12s}  notes")
    for name, (sec, inert, note) in results.items():
        print(f"{name:32s} {sec:8.2f} {base_t / sec:10.2f}x {inert:14.1f} {inert / base_i:12.4f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
