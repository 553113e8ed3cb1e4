"""The Jacobian term's cost: a Jacobian SAE pair's training step with lambda > 0 against the
same step with lambda = 0.

    python benchmarks/jsae.py [--quick] [--threads N] [--d-sae N] [--k N] [--batch N] [--term]

Workload: the zoo's MLP sizes (d_model 128, d_mlp 512, gelu_new), a pair of TopK SAEs with
d_sae 256 and k 8 (sparsify-model's defaults), batches of 256 random MLP inputs
(sparsify-model's batch_size; ``--batch`` changes it).

- Baseline, in this same process: the lambda = 0 step (both SAEs' forward, the MLP on SAE
  1's reconstruction, both MSE losses, backward, Adam step): exactly what training a TopK
  pair without the interaction penalty costs. Its encoders are SAELens's TopK (one topk per
  SAE; ``jsae._TopKOnce`` is SAELens's ``encode_with_hidden_pre`` that keeps the indices),
  its MLP torch's own gelu.
- Jacobian SAE step: the same plus A = W_dec1 W_in and B = W_out W_enc2, the MLP's phi' (and
  phi'' in the backward), and the active k x k Jacobian per token (O(k^2 d_mlp) per token)
  with its L1 term. Run with both of its kernels: "c" (sparsify_model/kernel.py: one
  compiled pass per token, the default on CPU) and "torch" (``jsae._ActiveJacobian``:
  blocked bmm over gathered rows, what runs without a C compiler and on GPUs).

Both are ``JacobianSAEPair.training_forward_pass`` (SAELens ``TrainStepInput``) + backward
+ ``torch.optim.Adam`` step, SAETrainer's bookkeeping left out of both. Prints the median
step time of each over alternating rounds (a shared machine is noisy: wall clock and this
thread's CPU time, which leaves out time the thread waited for a core) and the ratio; the
goal is ratio <= 2. It also prints the matmul FLOPs of both steps and the bytes the
Jacobian's per-token blocks move, so the distance from what the arithmetic allows is
visible: the "FLOP floor" is the ratio if every extra FLOP ran at the baseline's FLOP rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d-sae", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256,
                    help="tokens per step (sparsify-model's batch_size; SAELens's default "
                         "train_batch_size_tokens is 4096)")
    ap.add_argument("--term", action="store_true",
                    help="also time the Jacobian alone (forward + backward of the k x k blocks, "
                         "random A, B^T, phi' and indices at the same sizes) with each kernel")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sae_lens.saes.sae import TrainStepInput

    from mi_ideas_plugins.dictionary.sparsify_model.jsae import CHUNK, MLP, make_pair

    gen = torch.Generator().manual_seed(0)
    d, dm = 128, 512
    mlp = MLP(torch.randn(d, dm, generator=gen) / d ** 0.5, torch.zeros(dm),
              torch.randn(dm, d, generator=gen) / dm ** 0.5, torch.zeros(d), "gelu_new")
    x = torch.randn(args.batch, d, generator=gen) * 3
    from mi_ideas_plugins.dictionary.sparsify_model.kernel import library

    kinds = {"lambda = 0 (baseline)": (0.0, "torch"), "Jacobian, kernel c": (1.0, "c"),
             "Jacobian, kernel torch": (1.0, "torch")}
    if library() is None:
        del kinds["Jacobian, kernel c"]
    pairs = {name: make_pair(mlp, d_sae=args.d_sae, k=args.k, lam=lam, seed=0, kernel=kern)
             for name, (lam, kern) in kinds.items()}
    opts = {name: torch.optim.Adam(p.parameters(), lr=1e-3) for name, p in pairs.items()}

    def step(name: str) -> None:
        pair, opt = pairs[name], opts[name]
        inp = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0,
                             is_logging_step=False)
        out = pair.training_forward_pass(inp)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def timed(name: str, n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(n):
            step(name)
        return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n

    for name in pairs:
        timed(name, 5)  # warm-up
    rounds, n = (5, 10) if args.quick else (15, 20)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in pairs}
    for _ in range(rounds):  # alternating, so drift on a shared machine hits all alike
        for name in pairs:
            times[name].append(timed(name, n))
    base = times["lambda = 0 (baseline)"]
    t, s, k = args.batch, args.d_sae, args.k
    # matmul FLOPs (2 per multiply-add). lambda = 0 forward: encode and decode of both SAEs
    # (4 t d s) and the MLP (2 t d dm); backward: the 4 SAE weight gradients and 3 activation
    # gradients through SAE matmuls (x needs none), 2 through the frozen MLP's (no weight grads)
    fwd0 = 2 * t * (4 * d * s + 2 * d * dm)
    bwd0 = 2 * t * (7 * d * s + 2 * d * dm)
    extra_mm = 2 * 4 * s * d * dm                        # A, B and dW_dec, dW_enc2 through them
    extra_bmm = 3 * 2 * t * k * k * dm                   # J, and G^T (B phi'), G A_sel in the backward
    block = t * k * dm * 4                               # bytes of one (t, k, d_mlp) float32 block
    print(f"d_model {d}, d_mlp {dm}, d_sae {s}, k {k}, batch {t}, {args.threads} thread(s)")
    if "Jacobian, kernel c" not in pairs:
        print("no C compiler: the c kernel could not be built, only the torch kernel is timed")
    for i, what in ((0, "wall clock"), (1, "thread CPU time")):
        m0 = statistics.median(b[i] for b in base)
        print(f"[{what}] lambda = 0 step (baseline): {m0 * 1e3:.2f} ms")
        for name, jac in times.items():
            if jac is base:
                continue
            m1 = statistics.median(j[i] for j in jac)
            ratio = statistics.median(j[i] / b[i] for b, j in zip(base, jac))
            print(f"[{what}] lambda > 0 step ({name}): {m1 * 1e3:.2f} ms; ratio (median of {rounds} "
                  f"alternating rounds): {ratio:.2f}x  (goal <= 2x)")
    print(f"matmul FLOPs: lambda = 0 step {(fwd0 + bwd0) / 1e6:.0f} M; Jacobian term +{extra_mm / 1e6:.0f} M "
          f"(A, B and their gradients, batch-independent) +{extra_bmm / 1e6:.0f} M (per-token k x k blocks); "
          f"FLOP floor {(fwd0 + bwd0 + extra_mm + extra_bmm) / (fwd0 + bwd0):.2f}x")
    print(f"memory (kernel torch): the per-token blocks are {block / 2**20:.1f} MiB each (t x k x "
          f"d_mlp float32), gathered 4x, scaled 3x, read by 3 bmm and 2 index_add_ per step in "
          f"blocks of {min(CHUNK, t)} tokens ({min(CHUNK, t) * k * dm * 4 / 2**10:.0f} KiB, "
          f"cache-resident); kernel c reads each token's 2k rows of A and B^T once per pass and "
          f"materialises no block. Both: the MLP's phi, phi', phi'' take ~20 elementwise passes "
          f"over (t, d_mlp) against 2 for torch's gelu and its backward")

    if args.term:
        term(args)


def term(args) -> None:
    """The Jacobian alone: forward + backward of each kernel on the same random inputs."""
    from mi_ideas_plugins.dictionary.sparsify_model.jsae import _ActiveJacobian
    from mi_ideas_plugins.dictionary.sparsify_model.kernel import ActiveJacobianC, library

    gen = torch.Generator().manual_seed(1)
    t, k, s, dm = args.batch, args.k, args.d_sae, 512
    a = torch.randn(s, dm, generator=gen, requires_grad=True)
    bt = torch.randn(s, dm, generator=gen, requires_grad=True)
    dphi = torch.rand(t, dm, generator=gen, requires_grad=True)
    ii = torch.stack([torch.randperm(s, generator=gen)[:k] for _ in range(t)])
    oo = torch.stack([torch.randperm(s, generator=gen)[:k] for _ in range(t)])
    g = torch.randn(t, k, k, generator=gen)
    fns = {"torch": _ActiveJacobian} | ({"c": ActiveJacobianC} if library() is not None else {})
    rounds, n = (5, 20) if args.quick else (15, 40)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds + 1):  # the first round warms up
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                torch.autograd.grad(fn.apply(a, bt, dphi, ii, oo), (a, bt, dphi), g)
            times[name].append((time.perf_counter() - t0) / n)
    print("the Jacobian alone (forward + backward, median of "
          f"{rounds} alternating rounds): " + "; ".join(
              f"kernel {name} {statistics.median(v[1:]) * 1e3:.2f} ms" for name, v in times.items()))


if __name__ == "__main__":
    main()
