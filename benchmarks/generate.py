"""Steered generation through a subject against plain Hugging Face ``generate`` with a hook.

    python benchmarks/generate.py [--quick] [--threads N] [--tl] [--rerun] [--no-remote]

Workload (steering-vs-prompting's): a batch of 16 left-padded prompts of different lengths,
48 new tokens each, greedy, with an ``add`` of a steering vector to the residual stream
entering block L at every position of every step.

- Baseline, in this same process, as a competent researcher writes it: the Hugging Face
  model's own ``generate`` (its key/value cache, ``max_new_tokens = min_new_tokens``, greedy,
  ``torch.no_grad``) with a ``register_forward_pre_hook`` on block L adding the vector.
- mi-ideas: ``subject.generate(batch, max_new_tokens=N, interventions=[Intervention(
  "resid_pre.L", "add", v)])`` on the nnsight back-end (one nnsight ``generate`` trace).
- ``--tl``: also the TransformerLens subject on the zoo (its own cached ``generate`` with
  hooks), against the same baseline.
- ``--rerun``: also the old path (``subject._generate_rerun``: the whole sequence re-run for
  every token), for reference.

On (a) a GPT-2-small-sized random GPT-2 (12 x 768, vocabulary 50257, built from a config)
at resid_pre.6 and (b) the zoo model at resid_pre.2. Prints new tokens/s of both, their
ratio (median of alternating rounds: a shared machine is noisy; goal >= 0.8x) and whether
the tokens are equal: they must be up to each row's first EOS (exits with an error
otherwise); after it they may differ, since Hugging Face's ``min_new_tokens`` makes an EOS
that is the argmax impossible and mi-ideas never suppresses it (the count of such EOS
tokens is printed). Then the zoo batch through the loopback NDIF server (``tests/ndif/server.py``):
the number of requests for the whole batch (goal: 1) and whether its tokens equal the
local run's.
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


def baseline(hf, layer: int, batch, v, n: int, pad: int):
    """Plain HF generate with a pre-hook adding ``v`` to block ``layer``'s input;
    (seconds, ids)."""
    import torch

    def add(module, args, kwargs):
        return (args[0] + v, *args[1:]), kwargs

    handle = hf.transformer.h[layer].register_forward_pre_hook(add, with_kwargs=True)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            ids = hf.generate(batch.input_ids, attention_mask=batch.attention_mask,
                              max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=pad)
    finally:
        handle.remove()
    return time.perf_counter() - t0, ids


def ours(subject, site: str, batch, v, n: int, rerun: bool = False):
    """mi-ideas: ``subject.generate`` (or the re-run reference); (seconds, ids)."""
    from mi_ideas.subject import Intervention

    fn = subject._generate_rerun if rerun else subject.generate
    t0 = time.perf_counter()
    ids = fn(batch, max_new_tokens=n, interventions=[Intervention(site, "add", v)])
    return time.perf_counter() - t0, ids


def steering_vector(subject, batch, site: str, times: float = 1.0):
    """A seeded direction ``times`` the mean norm of the residual stream at ``site``."""
    import torch

    x = subject.activations(batch, [site], positions="last")[site]
    v = torch.randn(subject.d_model, generator=torch.Generator().manual_seed(0))
    return v / v.norm() * times * float(x.norm(dim=-1).mean())


def compare(name: str, subject, hf, layer: int, batch, n: int, rounds: int,
            rerun: bool, tl=None) -> float:
    import torch

    site = f"resid_pre.{layer}"
    v = steering_vector(subject, batch, site)
    ours(subject, site, batch, v, 2)  # warm-up of both paths
    baseline(hf, layer, batch, v, 2, subject.pad_token_id)
    t_hf, t_us = [], []
    for _ in range(rounds):
        t, theirs = baseline(hf, layer, batch, v, n, subject.pad_token_id)
        t_hf.append(t)
        t, mine = ours(subject, site, batch, v, n)
        t_us.append(t)
    tokens = len(batch) * n
    hf_rate, our_rate = tokens / statistics.median(t_hf), tokens / statistics.median(t_us)
    ratio = our_rate / hf_rate
    width = batch.shape[1]
    eos = subject.tokenizer.eos_token_id
    n_eos = int((mine[:, width:] == eos).sum()) if eos is not None else 0
    equal = torch.equal(mine, theirs)
    # HF's min_new_tokens makes an EOS that is the argmax impossible; up to a row's first
    # EOS the two must agree exactly
    new_ours, new_hf = mine[:, width:], theirs[:, width:]
    before_eos = ((new_ours == eos).long().cumsum(-1) == 0) if eos is not None else (
        torch.ones_like(new_ours, dtype=torch.bool))
    equal_before = bool((new_ours == new_hf)[before_eos].all())
    print(f"{name}: {len(batch)} prompts ({width} tokens padded), {n} new tokens, "
          f"add at {site} every step")
    print(f"  HF generate + pre-hook: {hf_rate:8.1f} new tokens/s")
    print(f"  subject.generate:       {our_rate:8.1f} new tokens/s   ratio {ratio:.2f}x "
          f"(goal >= 0.8x)")
    print(f"  tokens equal: {equal}; equal up to each row's first EOS: {equal_before} (EOS "
          f"generated by mi-ideas, which HF's min_new_tokens suppresses: {n_eos})")
    if rerun:
        t, old = ours(subject, site, batch, v, n, rerun=True)
        print(f"  old re-run path:        {tokens / t:8.1f} new tokens/s   (cached / re-run "
              f"{t / statistics.median(t_us):.1f}x); tokens equal: {torch.equal(old, mine)}")
    if tl is not None:
        ours(tl, site, batch, v, 2)
        t_tl = []
        for _ in range(rounds):
            t, by_tl = ours(tl, site, batch, v, n)
            t_tl.append(t)
        tl_rate = tokens / statistics.median(t_tl)
        print(f"  TransformerLens subject: {tl_rate:7.1f} new tokens/s   ratio "
              f"{tl_rate / hf_rate:.2f}x; tokens equal to the nnsight subject's: "
              f"{torch.equal(by_tl, mine)}")
    if not equal_before:
        raise SystemExit(f"{name}: tokens differ from the Hugging Face baseline's")
    return ratio


def prompts(subject, texts, n: int, lengths=range(6, 14)):
    """``n`` prompts cut to lengths cycling through ``lengths`` (left-padded), BOS first."""
    rows = []
    for text in texts:
        ids = subject.tokenize(text).input_ids[0].tolist()
        want = list(lengths)[len(rows) % len(lengths)]
        if len(ids) >= want:
            rows.append(ids[:want])
        if len(rows) == n:
            break
    return subject.batch_from_ids(rows)


def remote_requests(local, batch, n: int) -> None:
    """The zoo batch through the loopback NDIF server: requests for the whole generation."""
    import torch
    from nnsight.schema.config import CONFIG

    from mi_ideas import load_subject
    from mi_ideas.subject import Intervention
    from tests.ndif.fixtures import NDIFTestServer

    v = steering_vector(local, batch, "resid_pre.2")
    ivs = [Intervention("resid_pre.2", "add", v)]
    want = local.generate(batch, max_new_tokens=n, interventions=ivs)
    CONFIG.APP.REMOTE_LOGGING = False
    server = NDIFTestServer().start()
    try:
        remote = load_subject("zoo:stories-gpt2", remote=server.url)
        before = server.stats()["requests"]
        got = remote.generate(batch, max_new_tokens=n, interventions=ivs)
        n_requests = server.stats()["requests"] - before
    finally:
        server.stop()
    print(f"remote (loopback server): {n_requests} request(s) for {len(batch)} prompts x {n} "
          f"new tokens (goal: 1); tokens equal to local: {torch.equal(got, want)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="8 prompts, 16 tokens, one round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per prompt")
    parser.add_argument("--rerun", action="store_true", help="also time the old re-run path")
    parser.add_argument("--no-remote", action="store_true", help="skip the loopback server")
    parser.add_argument("--tl", action="store_true",
                        help="also time the TransformerLens subject on the zoo")
    parser.add_argument("--only", choices=["gpt2", "zoo"], help="one model only")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from mi_ideas import load_dataset, load_subject, zoo

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    rounds, n_prompts, n = (1, 8, 16) if args.quick else (3, 16, args.tokens)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    texts = load_dataset("zoo:stories:200", seed=0).texts

    if args.only != "gpt2":
        subject = load_subject("zoo:stories-gpt2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(str(zoo.model_dir("stories-gpt2"))).eval()
        batch = prompts(subject, texts, n_prompts)
        tl = load_subject("tl:zoo:stories-gpt2") if args.tl else None
        compare("(b) zoo:stories-gpt2", subject, hf, 2, batch, n, rounds, args.rerun, tl)
        if not args.no_remote:
            remote_requests(subject, batch, n)

    if args.only != "zoo":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from last_token import gpt2_small

        subject, hf = gpt2_small(50257)
        batch = prompts(subject, texts, n_prompts)  # zoo-tokenized text: ids < 1359
        compare("(a) gpt2-small-sized (random, vocab 50257)", subject, hf, 6, batch, n, rounds,
                args.rerun)


if __name__ == "__main__":
    main()
