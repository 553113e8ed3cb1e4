"""Harvest throughput against plain PyTorch, and peak memory as the token count grows.

    python benchmarks/harvest.py [--quick]

1. Throughput: ``mi_ideas.harvest.harvest_to_cache`` (nnsight back-end, every site read in one
   forward per batch, rows streamed to safetensors shards) against a baseline in this same
   process: the same Hugging Face model, the same batches, ``register_forward_hook`` /
   ``register_forward_pre_hook`` on the same modules, activations copied to CPU tensors
   and kept in a list. Goal: ratio (ours / baseline tokens per second) >= 0.95.
   Run for the zoo model and for a GPT-2-small-sized random model (12 x 768).
2. Memory: peak RSS of a fresh process harvesting 1x and 10x the tokens with a fixed
   ``budget_mb``. Goal: flat (ratio ~1), because shards stream to disk.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SITES = ["resid_pre.{L}", "mlp_out.{L}", "resid_post.{L}"]


def gpt2_small_dir(tmp: Path) -> Path:
    """A GPT-2-small-sized model with random weights (no download)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from mi_ideas import zoo

    path = tmp / "gpt2-small-random"
    if not (path / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(str(zoo.model_dir()))
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=256,
                                           vocab_size=len(tok)))
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return path


def texts(n: int) -> list[str]:
    from mi_ideas.data import stories as corpus

    return [s.text for s in corpus.generate_stories(n, seed="bench")]


def baseline(model_dir: Path, data: list[str], layers: list[int], batch_size: int,
             max_length: int) -> tuple[float, int]:
    """Plain PyTorch: HF model, forward hooks on the same modules, copies to CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from mi_ideas import load_subject

    subject = load_subject(f"hf:{model_dir}")  # only for its tokenizer / batching
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    blocks = hf.transformer.h
    store: list = []
    mask_box: list = []

    def keep(x):
        store.append(x[mask_box[0]].detach().float().cpu())

    handles = []
    for L in layers:
        handles.append(blocks[L].register_forward_pre_hook(lambda m, args: keep(args[0])))
        handles.append(blocks[L].mlp.register_forward_hook(lambda m, a, out: keep(out)))
        handles.append(blocks[L].register_forward_hook(
            lambda m, a, out: keep(out[0] if isinstance(out, tuple) else out)))
    n_tokens = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            b = subject.tokenize(data[i:i + batch_size], max_length=max_length)
            mask = b.attention_mask.bool().clone()
            mask[torch.arange(len(b)), b.attention_mask.float().argmax(1)] = False
            mask_box[:] = [mask]
            hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids)
            n_tokens += int(mask.sum())
    dt = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return n_tokens / dt, n_tokens


def ours(model_dir: Path, data: list[str], layers: list[int], batch_size: int,
         max_length: int) -> tuple[float, int]:
    from mi_ideas.data import Dataset
    from mi_ideas.harvest import harvest_to_cache
    from mi_ideas import load_subject

    subject = load_subject(f"hf:{model_dir}")
    sites = [s.format(L=L) for L in layers for s in SITES]
    t0 = time.perf_counter()
    acts = harvest_to_cache(subject, Dataset("bench", data), sites, batch_size=batch_size,
                   max_length=max_length, reuse=False)
    dt = time.perf_counter() - t0
    return acts.n_rows / dt, acts.n_rows


def throughput(name: str, model_dir: Path, n_texts: int, batch_size: int, layers: list[int],
               rounds: int = 3) -> float:
    import statistics

    data = texts(n_texts)
    # warm-up both paths once (imports, allocator), then alternate them `rounds` times and
    # compare medians: run-to-run noise on a shared 2-core machine is about +-10%.
    baseline(model_dir, data[:batch_size], layers, batch_size, 128)
    ours(model_dir, data[:batch_size], layers, batch_size, 128)
    bases, mine = [], []
    for _ in range(rounds):
        b, n = baseline(model_dir, data, layers, batch_size, 128)
        o, m = ours(model_dir, data, layers, batch_size, 128)
        assert n == m, (n, m)
        bases.append(b)
        mine.append(o)
    base, our = statistics.median(bases), statistics.median(mine)
    ratio = our / base
    print(f"{name:<22} tokens={n:>7}  baseline {base:>9.0f} tok/s  mi-ideas {our:>9.0f} tok/s  "
          f"ratio {ratio:.3f}  (median of {rounds} alternating rounds; goal >= 0.95)")
    return ratio


def rss_child(model_dir: str, n_texts: int, budget_mb: float) -> None:
    from mi_ideas.data import Dataset
    from mi_ideas.harvest import harvest_to_cache
    from mi_ideas import load_subject

    subject = load_subject(f"hf:{model_dir}")
    sites = [s.format(L=L) for L in range(subject.n_layers) for s in SITES]
    acts = harvest_to_cache(subject, Dataset("rss", texts(n_texts)), sites, batch_size=16,
                   budget_mb=budget_mb, reuse=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{acts.n_rows} {peak:.1f}")


def peak_rss(model_dir: Path, n_texts: int, budget_mb: float, cache: str) -> tuple[int, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(model_dir), str(n_texts), str(budget_mb)],
        capture_output=True, text=True, check=True, env={**os.environ, "MI_IDEAS_CACHE": cache},
    ).stdout.split()
    return int(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer texts")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]), float(args.rss_child[2]))
        return
    import torch

    from mi_ideas import zoo

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    n = 64 if args.quick else 256
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MI_IDEAS_CACHE"] = str(Path(tmp) / "cache")
        zoo_dir = zoo.model_dir("stories-gpt2")
        print("harvest throughput (same process, same model, batches and sites):")
        throughput("zoo:stories-gpt2", zoo_dir, n * 2, 32, [0, 1, 2, 3])
        throughput("gpt2-small (random)", gpt2_small_dir(Path(tmp)), n // 4, 8, [0, 6, 11],
                   rounds=1 if args.quick else 3)
        print("peak RSS of a fresh process (budget_mb=16):")
        small = peak_rss(zoo_dir, n, 16, str(Path(tmp) / "c1"))
        large = peak_rss(zoo_dir, n * 10, 16, str(Path(tmp) / "c2"))
        print(f"  1x: {small[0]:>8} rows  {small[1]:7.1f} MiB")
        print(f" 10x: {large[0]:>8} rows  {large[1]:7.1f} MiB   ratio {large[1] / small[1]:.3f} "
              f"(goal: flat, ~1)")


if __name__ == "__main__":
    main()
