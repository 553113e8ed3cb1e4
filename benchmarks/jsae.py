"""The Jacobian term's cost: a Jacobian SAE pair's training step with lambda > 0 against the
same step with lambda = 0.

    python benchmarks/jsae.py [--quick] [--threads N]

Workload: the zoo's MLP sizes (d_model 128, d_mlp 512, gelu_new), a pair of TopK SAEs with
d_sae 256 and k 8 (sparsify-model's defaults), batches of 256 random MLP inputs
(``--batch`` changes it; measured on a busy 2-core machine: 3.0x at 256 tokens and 5.0x at
4096, SAELens's default batch, so the per-token gathers of k x d_mlp rows, not the
batch-independent products A and B, dominate the extra cost at large batches).

- Baseline, in this same process: the lambda = 0 step (both SAEs' forward, the MLP on SAE
  1's reconstruction, both MSE losses, backward, Adam step): exactly what training a TopK
  pair without the interaction penalty costs.
- Jacobian SAE step: the same plus A = W_dec1 W_in and B = W_out W_enc2 and the active
  k x k Jacobian per token (``active_jacobian``: O(k^2 d_mlp) per token) with its L1 term.

Both are ``JacobianSAEPair.training_forward_pass`` (SAELens ``TrainStepInput``) + backward
+ ``torch.optim.Adam`` step, SAETrainer's bookkeeping left out of both. Prints the median
step time of each over alternating rounds (a shared machine is noisy) and the ratio; the
goal is ratio <= 2.
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sae_lens.saes.sae import TrainStepInput

    from mi_ideas_plugins.dictionary.sparsify_model.jsae import MLP, make_pair

    gen = torch.Generator().manual_seed(0)
    d, dm = 128, 512
    mlp = MLP(torch.randn(d, dm, generator=gen) / d ** 0.5, torch.zeros(dm),
              torch.randn(dm, d, generator=gen) / dm ** 0.5, torch.zeros(d), "gelu_new")
    x = torch.randn(args.batch, d, generator=gen) * 3
    pairs = {lam: make_pair(mlp, d_sae=args.d_sae, k=args.k, lam=lam, seed=0) for lam in (0.0, 1.0)}
    opts = {lam: torch.optim.Adam(p.parameters(), lr=1e-3) for lam, p in pairs.items()}

    def step(lam: float) -> None:
        pair, opt = pairs[lam], opts[lam]
        inp = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0,
                             is_logging_step=False)
        out = pair.training_forward_pass(inp)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def timed(lam: float, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            step(lam)
        return (time.perf_counter() - t0) / n

    for lam in pairs:
        timed(lam, 5)  # warm-up
    rounds, n = (5, 10) if args.quick else (15, 20)
    t0s, t1s = [], []
    for _ in range(rounds):
        t0s.append(timed(0.0, n))
        t1s.append(timed(1.0, n))
    m0, m1 = statistics.median(t0s), statistics.median(t1s)
    ratios = [b / a for a, b in zip(t0s, t1s)]
    print(f"d_model {d}, d_mlp {dm}, d_sae {args.d_sae}, k {args.k}, batch {len(x)}, "
          f"{args.threads} thread(s)")
    print(f"lambda = 0 step (baseline):   {m0 * 1e3:.2f} ms")
    print(f"lambda > 0 step (Jacobian):   {m1 * 1e3:.2f} ms")
    print(f"ratio (median of {rounds} alternating rounds): {statistics.median(ratios):.2f}x  (goal <= 2x)")


if __name__ == "__main__":
    main()
