"""The last-position fast path (``Subject.forward_last_token``) against a plain batched forward.

    python benchmarks/last_token.py [--quick] [--threads N]

Workload (the plateau sweeps'): many rows, each a prompt whose residual stream entering
block L (``resid_pre.L``) is replaced at the last position by a perturbed vector; read-out
KL(clean ‖ perturbed) of the last position's next-token distribution.

- Baseline, in this same process, as a competent researcher writes it: the Hugging Face
  model's plain batched forward over the full prompts (``torch.no_grad``, ``use_cache=False``,
  same chunk of rows per forward) with a ``register_forward_pre_hook`` on block L replacing
  the last position, KL from the last position's logits.
- mi-ideas: ``subject.prefix_cache(prompts)`` once (timed), then
  ``subject.forward_last_token(cache, rows, site, x, stats=StatsRequest(kl_reference=...))``
  per chunk.

On (a) a GPT-2-small-sized random GPT-2 (12 x 768, vocabulary 50257, built from a config)
at resid_pre.6 with 10-token prompts (goal >= 8x) and (b) the zoo model at resid_pre.2
with its story prompts cut to 10 tokens (goal >= 5x). Prints rows/s of both, their ratio
(median of alternating rounds: a shared 2-core machine is noisy) and the largest |KL
difference| between the two. For reference it also times the baseline with
``logits_to_keep=1`` (only the last position's logits computed), which a careful
researcher might add.
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


def baseline(hf, blocks, layer: int, batch, prompt_of, x, ref, chunk: int,
             keep_last: bool = False):
    """Plain HF: full prompts per chunk, a pre-hook on block ``layer`` replacing the last
    position; returns (seconds, kl)."""
    import torch

    box: dict = {}

    def pre(module, args):
        h = args[0].clone()
        h[:, -1] = box["x"]
        return (h, *args[1:])

    handle = blocks[layer].register_forward_pre_hook(pre)
    kl = torch.empty(len(prompt_of))
    extra = {"logits_to_keep": 1} if keep_last else {}
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            for start in range(0, len(prompt_of), chunk):
                rows = slice(start, start + chunk)
                idx = prompt_of[rows]
                box["x"] = x[rows]
                out = hf(input_ids=batch.input_ids[idx], attention_mask=batch.attention_mask[idx],
                         position_ids=batch.position_ids[idx], use_cache=False, **extra)
                lp = out.logits[:, -1].float().log_softmax(-1)
                r = ref[rows]
                kl[rows] = (r.exp() * (r - lp)).sum(-1)
    finally:
        handle.remove()
    return time.perf_counter() - t0, kl


def ours(subject, site: str, batch, prompt_of, x, ref, chunk: int):
    """mi-ideas: one prefix cache, then forward_last_token per chunk; (seconds, kl)."""
    import torch

    from mi_ideas.subject import StatsRequest

    kl = torch.empty(len(prompt_of))
    t0 = time.perf_counter()
    cache = subject.prefix_cache(batch)
    for start in range(0, len(prompt_of), chunk):
        rows = slice(start, start + chunk)
        out = subject.forward_last_token(cache, prompt_of[rows], site, x[rows],
                                         stats=StatsRequest(kl_reference=ref[rows]))
        kl[rows] = out.stats["kl"]
    return time.perf_counter() - t0, kl


def workload(subject, batch, site: str, n_rows: int, seed: int = 0):
    """Rows as a sweep makes them: each prompt repeated, its clean x plus a random
    direction times a step; the clean last-position log-probs as KL reference."""
    import torch

    n = len(batch)
    clean = subject.forward(batch, read=[site], positions="last", logits=True)
    x0 = clean.activations[site]
    logprobs = clean.logits[:, -1].float().log_softmax(-1)
    prompt_of = torch.arange(n).repeat_interleave(-(-n_rows // n))[:n_rows]
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(n_rows, subject.d_model, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    steps = torch.rand(n_rows, 1, generator=gen) * 2 * x0.norm(dim=-1).mean()
    x = x0[prompt_of] + steps * d
    return prompt_of, x, logprobs[prompt_of]


def compare(name: str, subject, hf, blocks, site: str, batch, n_rows: int, chunk: int,
            rounds: int, goal: float) -> float:
    layer = subject.site(site).layer
    prompt_of, x, ref = workload(subject, batch, site, n_rows)
    # warm-up both paths once (allocator, first-call costs), then alternate them
    small = slice(0, min(chunk, n_rows))
    baseline(hf, blocks, layer, batch, prompt_of[small], x[small], ref[small], chunk)
    ours(subject, site, batch, prompt_of[small], x[small], ref[small], chunk)
    t_base, t_ours, t_keep = [], [], []
    diff = 0.0
    for _ in range(rounds):
        tb, kb = baseline(hf, blocks, layer, batch, prompt_of, x, ref, chunk)
        to, ko = ours(subject, site, batch, prompt_of, x, ref, chunk)
        tk, kk = baseline(hf, blocks, layer, batch, prompt_of, x, ref, chunk, keep_last=True)
        t_base.append(tb)
        t_ours.append(to)
        t_keep.append(tk)
        diff = max(diff, float((kb - ko).abs().max()), float((kk - ko).abs().max()))
    tb, to, tk = (statistics.median(t) for t in (t_base, t_ours, t_keep))
    ratio = tb / to
    print(f"{name}: {len(batch)} prompts x {batch.shape[1]} tokens, {n_rows} rows in chunks of "
          f"{chunk}, {site}")
    print(f"  baseline (plain HF forward)        : {n_rows / tb:9.0f} rows/s")
    print(f"  baseline with logits_to_keep=1     : {n_rows / tk:9.0f} rows/s")
    print(f"  forward_last_token (+ prefix cache): {n_rows / to:9.0f} rows/s")
    print(f"  ratio {ratio:.2f}x  (goal >= {goal:g}x; {tk / to:.2f}x against logits_to_keep=1), "
          f"median of {rounds} alternating rounds; max |KL difference| {diff:.2e}")
    return ratio


def gpt2_small(vocab: int):
    """A GPT-2-small-sized model with random weights (no download), as a subject and the
    same Hugging Face module."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from mi_ideas import zoo
    from mi_ideas.backends.nnsight_backend import load_nnsight

    # The zoo tokenizer only gives the subject its special ids; prompts are random ids.
    tok = AutoTokenizer.from_pretrained(str(zoo.model_dir()))
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=256,
                                    vocab_size=vocab)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = load_nnsight(hf, spec="gpt2-small-random", tokenizer=tok)
    return subject, hf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rows, one round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary of model (a)")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from mi_ideas import load_dataset, load_subject, zoo

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    rounds = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # (a) GPT-2-small-sized, random weights, resid_pre.6, 10-token prompts
    subject, hf = gpt2_small(args.vocab)
    gen = torch.Generator().manual_seed(0)
    n_prompts = 16 if args.quick else 32
    ids = torch.randint(1, min(args.vocab, len(subject.tokenizer)), (n_prompts, 9), generator=gen)
    bos = torch.full((n_prompts, 1), subject.pad_token_id, dtype=torch.long)
    batch = subject.batch_from_ids(torch.cat([bos, ids], dim=1))
    compare(f"(a) gpt2-small (random, vocab {args.vocab})", subject, hf, hf.transformer.h,
            "resid_pre.6", batch, 256 if args.quick else 1024, 128 if args.quick else 512,
            rounds, 8)

    # (b) the zoo model at resid_pre.2, its story prompts (10 tokens, as the plateau sweeps)
    subject = load_subject("zoo:stories-gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(str(zoo.model_dir("stories-gpt2"))).eval()
    texts = load_dataset("zoo:stories:400", seed=0).texts
    rows = [subject.tokenize(t, max_length=10).input_ids[0] for t in texts]
    rows = [r for r in rows if len(r) == 10][:50]
    batch = subject.batch_from_ids(torch.stack(rows))
    compare("(b) zoo:stories-gpt2", subject, hf, hf.transformer.h, "resid_pre.2", batch,
            3072 if args.quick else 15360, 512, rounds, 5)


if __name__ == "__main__":
    main()
