"""LayerNorm removal: the fake-LN training step against the plain fine-tuning step, and
tokens to reach the control per schedule.

    python benchmarks/ln_removal.py [--quick] [--threads N] [--gpt2-small-tokens T]

1. Step throughput. Baseline, in this same process: the plain Hugging Face
   ``GPT2LMHeadModel`` fine-tuning step a competent researcher writes (forward with
   ``labels``-free logits, cross-entropy, backward, AdamW step; SDPA attention). Against it
   the fake-LN step of the same model mid-removal (half of the sites removed: both the real
   and the fixed-sigma paths run, the moving averages are updated, and ln_1 is applied twice
   for the Q/K and V paths). Goal: bookkeeping costs <= 10% (ratio >= 0.91). On (a) the zoo
   model (8 x 128 tokens) and (b) a GPT-2-small-sized model from ``GPT2Config()`` (random
   weights, no download; batch 1 x T tokens). Median of alternating rounds (a shared 2-core
   machine is noisy).
2. Tokens to reach the control: runs the idea's default schedules on the zoo model
   (``--quick``: 60 steps) and prints, per schedule, the steps / tokens / training seconds
   until the run is LN-free and within 0.05 nats of the control's final held-out loss.
   CPU measurement; the GPT-2-small extrapolation of the published schedules is printed
   from (b) and labelled as such.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step_times(hf, x, rounds: int) -> tuple[float, float]:
    """Median seconds of one AdamW step: plain HF, and the fake-LN model mid-removal."""
    import torch
    import torch.nn.functional as F

    from mi_ideas_plugins.layernorm_removal.model import FakeLNGPT2

    fake = FakeLNGPT2(hf, 0).train()
    fake.calibrate(x)
    fake.set_state(set(fake.sites[: len(fake.sites) // 2]), True, True)
    hf = hf.train()
    opts = {"hf": torch.optim.AdamW(hf.parameters(), lr=1e-5),
            "fake": torch.optim.AdamW(fake.parameters(), lr=1e-5)}
    fwd = {"hf": lambda: hf(x).logits, "fake": lambda: fake(x)}
    times: dict[str, list[float]] = {"hf": [], "fake": []}
    for r in range(rounds + 1):
        for name in (("hf", "fake") if r % 2 == 0 else ("fake", "hf")):
            t0 = time.perf_counter()
            logits = fwd[name]()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            if r > 0:  # round 0 is a warm-up
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["hf"]), statistics.median(times["fake"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, 60-step schedules")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpt2-small-tokens", type=int, default=512)
    ap.add_argument("--skip-schedules", action="store_true", help="only the step throughput")
    args = ap.parse_args()
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mi_ideas import zoo

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rounds = 3 if args.quick else 7
    hf, tok = zoo.load_model()
    x = torch.randint(0, hf.config.vocab_size, (8, 128))
    x[:, 0] = tok.eos_token_id
    t_hf, t_fake = step_times(hf, x, rounds)
    print(f"(a) zoo model, 8 x 128 tokens: plain HF step {t_hf * 1e3:.1f} ms "
          f"({x.numel() / t_hf:.0f} tok/s), fake-LN step {t_fake * 1e3:.1f} ms "
          f"({x.numel() / t_fake:.0f} tok/s); throughput ratio fake/HF = {t_hf / t_fake:.3f} "
          f"(goal >= 0.91)")
    torch.manual_seed(0)
    small = GPT2LMHeadModel(GPT2Config())
    n = args.gpt2_small_tokens
    xs = torch.randint(0, 50257, (1, n))
    s_hf, s_fake = step_times(small, xs, max(1, rounds // 3))
    tps = n / s_fake
    print(f"(b) GPT-2-small-sized (GPT2Config(), random weights), 1 x {n} tokens, CPU, "
          f"{args.threads} thread(s): plain HF step {s_hf:.2f} s, fake-LN step {s_fake:.2f} s; "
          f"ratio fake/HF = {s_hf / s_fake:.3f}; {tps:.0f} tokens/s")
    from mi_ideas_plugins.layernorm_removal import schedule as sched

    for s in (sched.HEIMERSHEIM, sched.BARONI):
        tokens = s.total_steps * s.tokens_per_step
        free = s.last_removal() * s.tokens_per_step
        print(f"    EXTRAPOLATION (CPU, not a GPU measurement): the published {s.name} schedule "
              f"({s.total_steps} steps x {s.tokens_per_step} tokens = {tokens / 1e6:.0f}M tokens) "
              f"would take {tokens / tps / 3600:.0f} hours at this rate; its last removal "
              f"(step {s.last_removal()}, {free / 1e6:.0f}M tokens) {free / tps / 3600:.0f} hours")
    if args.skip_schedules:
        return
    import mi_ideas

    steps = 60 if args.quick else 150
    r = mi_ideas.run("layernorm-removal", quiet=True, steps=steps, sae_loss_weight=0.0,
                     export=False, all_at_once=[])
    comp = r.details["compute"]
    print(f"(2) zoo model, {steps} steps of {int(r.metrics['tokens_per_step'])} tokens; control's "
          f"final curve loss {r.metrics['control_curve_loss']:.4f}, target +0.05 nats:")
    for name, c in comp.items():
        reached = "never" if c["steps"] is None else (
            f"step {c['steps']} = {c['tokens']} tokens, {c['seconds']:.1f} s of training")
        print(f"    {name:12s} last removal at step {c['last_removal']}: {reached}")


if __name__ == "__main__":
    main()
