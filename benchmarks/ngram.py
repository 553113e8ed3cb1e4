"""ngram-baseline: counting time, batched modified-KN throughput, peak memory at 10x the corpus.

    python benchmarks/ngram.py [--quick] [--scale 10] [--rows 8]

1. **Counting.** The zoo's training text (its manifest's training stories, tokenized with the
   zoo tokenizer and packed into 128-token rows as ``mi_ideas.zoo.build.train`` packs them;
   about 6M tokens) indexed with tokengrams for orders 1..5, with the continuation counts
   and count-of-counts (``NgramCounts.fit``): seconds and tokens per second.
2. **Throughput.** Full-vocabulary modified-KN distributions for n = 1..5 at every position of
   ``--rows`` held-out rows, three ways, in this process, on the same counts:
   - mi-ideas: ``NgramCounts.kn_probs``, one ``batch_count_next`` per order for the whole
     batch and the interpolation vectorised over (positions x vocabulary);
   - baseline A, unbatched: the same formulas one context at a time, one tokengrams
     ``count_next`` call per context and order for the raw counts (what one writes from
     tokengrams' README) and one continuation-count lookup per context and order;
   - baseline B, a dict implementation (``reference.DictKN``: Python dicts of next-token
     counts, numpy over the vocabulary per context; its counting time is printed too).
   All three must give the same distributions (max |difference| printed, must be < 1e-9).
   Also tokengrams' own ``batch_get_smoothed_probs`` (a different smoothing) for scale.
3. **Memory.** ``--scale`` x the corpus (10x: ~60M tokens: the text and 9 copies, each
   under a random permutation of the token ids, so no two copies share an n-gram),
   counted in a fresh child process that imports only numpy, tokengrams and this plugin's
   kn module; prints its peak RSS (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` of
   ``resource.getrusage`` where there is none, which on Linux survives ``execve``), the
   idea's own estimate for that corpus (``idea.memory_items``, what the host checks against
   the budget before a run) and the memory budget (``mi_ideas.runs.memory.budget_bytes``:
   ``--memory-budget`` / ``MI_IDEAS_MEMORY_BUDGET`` / half the RAM). Exits with an error
   when the peak exceeds the estimate or the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def zoo_rows(n_stories: int, seed, tok, n_ctx: int):
    from mi_ideas.data import stories as corpus
    from mi_ideas.zoo.build.lm import encode_texts, pack_rows

    texts = [s.text for s in corpus.generate_stories(n_stories, seed)]
    return pack_rows(encode_texts(tok, texts), n_ctx, tok.eos_token_id)


CHILD = r"""
import json, resource, sys, time
import numpy as np
from mi_ideas_plugins.ngram_baseline.kn import NgramCounts, padded_rows

def peak_rss():
    # VmHWM (this process's own high-water mark): ru_maxrss survives execve on Linux, so in
    # a child it may still be the parent's peak
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

rows = np.load(sys.argv[1], mmap_mode="r")
vocab = int(sys.argv[2])
before = peak_rss()
t = time.perf_counter()
counts = NgramCounts.fit(rows, vocab, 5)
fit = time.perf_counter() - t
held = np.asarray(rows[:8])
pad = padded_rows(held, 4, counts.sep)
ctxs = [pad[i, j + 1:j + 5].tolist() for i in range(8) for j in range(held.shape[1] - 1)]
counts.kn_probs(ctxs, [1, 2, 3, 4, 5])
print(json.dumps({"tokens": int(rows.size), "fit_s": fit, "peak": peak_rss(), "before": before}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the corpus, --scale 2")
    ap.add_argument("--scale", type=int, default=10, help="memory check at this multiple of the corpus")
    ap.add_argument("--rows", type=int, default=8, help="held-out rows in the throughput batch")
    args = ap.parse_args()

    import numpy as np

    from mi_ideas import zoo
    from mi_ideas.runs.memory import budget_bytes, human
    from mi_ideas_plugins.ngram_baseline.config import NgramConfig
    from mi_ideas_plugins.ngram_baseline.idea import memory_items
    from mi_ideas_plugins.ngram_baseline.kn import NgramCounts, interpolate, padded_rows
    from mi_ideas_plugins.ngram_baseline.reference import DictKN

    _, tok = zoo.load_model()
    man = zoo.manifest()
    c = man["corpus"]
    n_ctx = int(zoo.entry("stories-gpt2")["n_ctx"])
    n_train = int(c["n_train_stories"]) // (10 if args.quick else 1)
    scale = 2 if args.quick else args.scale
    V = len(tok)
    t = time.perf_counter()
    train = zoo_rows(n_train, c["train_seed"], tok, n_ctx)
    held = zoo_rows(200, c["heldout_seed"], tok, n_ctx)[:args.rows]
    print(f"corpus: {train.shape[0]} rows x {n_ctx} = {train.size:,} tokens "
          f"(generated and tokenized in {time.perf_counter() - t:.1f} s); vocab {V}")

    # 1. counting
    t = time.perf_counter()
    counts = NgramCounts.fit(train, V, 5)
    fit = time.perf_counter() - t
    print(f"\n1. counting orders 1..5 (tokengrams index + continuation counts + "
          f"count-of-counts): {fit:.2f} s, {train.size / fit / 1e6:.2f} M tokens/s")

    # 2. throughput
    pad = padded_rows(held, 4, counts.sep)
    ctxs = [pad[i, j + 1:j + 5].tolist() for i in range(held.shape[0]) for j in range(n_ctx - 1)]
    orders = [1, 2, 3, 4, 5]
    t = time.perf_counter()
    batched = counts.kn_probs(ctxs, orders)
    t_batch = time.perf_counter() - t

    def unbatched(ctx):
        out, lower = {}, np.full(V, 1.0 / V)
        for k in orders:
            h = ctx[len(ctx) - (k - 1):] if k > 1 else []
            raw = (counts.unigram if k == 1 else
                   np.asarray(counts.index.count_next(h), dtype=np.int64)[:V])
            out[k] = interpolate(raw[None], counts.discounts["raw"][k], lower)[0]
            if k < 5:
                cont = counts.cont_unigram if k == 1 else counts.cont_counts([h], k)[0]
                lower = interpolate(cont[None], counts.discounts["cont"][k], lower)[0]
        return out

    t = time.perf_counter()
    loop = [unbatched(cx) for cx in ctxs]
    t_loop = time.perf_counter() - t
    diff_loop = max(float(np.abs(np.stack([r[n] for r in loop]) - batched[n]).max()) for n in orders)

    n_dict = min(len(ctxs), 2 * (n_ctx - 1))  # the dict baseline is timed on fewer contexts
    dict_rows = train[: max(1, train.shape[0] // 10)] if not args.quick else train
    t = time.perf_counter()
    ref = DictKN(dict_rows, V, 5)
    t_dict_fit = time.perf_counter() - t
    t = time.perf_counter()
    sub = NgramCounts.fit(dict_rows, V, 5)
    t_sub_fit = time.perf_counter() - t
    want = sub.kn_probs(ctxs[:n_dict], orders)
    t = time.perf_counter()
    got = {n: np.stack([ref.probs(cx, n) for cx in ctxs[:n_dict]]) for n in orders}
    t_dict = time.perf_counter() - t
    diff_dict = max(float(np.abs(got[n] - want[n]).max()) for n in orders)

    t = time.perf_counter()
    for n in orders:
        counts.tokengrams_probs(ctxs, n)
    t_tg = time.perf_counter() - t
    P = len(ctxs)
    rate = P / t_batch
    print(f"\n2. full-vocabulary distributions, n = 1..5, {P} positions ({held.shape[0]} rows):")
    print(f"   mi-ideas batched:            {t_batch:7.2f} s  {rate:8.0f} positions/s")
    print(f"   tokengrams unbatched (A):    {t_loop:7.2f} s  {P / t_loop:8.0f} positions/s   "
          f"ratio {t_loop / t_batch:.1f}x   max|diff| {diff_loop:.1e}")
    print(f"   dict implementation (B):     {t_dict:7.2f} s  {n_dict / t_dict:8.0f} positions/s   "
          f"ratio {(t_dict / n_dict) / (t_batch / P):.1f}x   max|diff| {diff_dict:.1e}   "
          f"(on {n_dict} positions; its counting took {t_dict_fit:.1f} s for "
          f"{dict_rows.size:,} tokens, tokengrams {t_sub_fit:.1f} s)")
    print(f"   tokengrams' own smoothing (batch_get_smoothed_probs, not KN): {t_tg:.2f} s, "
          f"{P / t_tg:.0f} positions/s")
    if max(diff_loop, diff_dict) > 1e-9:
        print("ERROR: the implementations disagree", file=sys.stderr)
        return 1
    del counts, sub, ref, got, want, batched, loop

    # 3. memory at scale x the corpus, in a fresh process
    # scale - 1 more copies of the text, each under its own random permutation of the
    # token ids: the copies share no n-gram, so there are scale x the distinct n-grams (more
    # than scale x as many new stories would have: an upper bound on the memory)
    rng = np.random.default_rng(0)
    big = np.concatenate([train] + [rng.permutation(V)[train] for _ in range(1, scale)])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rows.npy")
        np.save(path, big.astype(np.int64))
        n_tok = int(big.size)
        del big
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(V)], check=True,
                             capture_output=True, text=True, env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    est = sum(i.bytes for i in memory_items(n_tok, V, NgramConfig()))
    budget, source = budget_bytes()
    print(f"\n3. {scale}x corpus: {r['tokens']:,} tokens counted in {r['fit_s']:.1f} s; peak RSS "
          f"{human(r['peak'])} (of which {human(r['before'])} before counting: interpreter, "
          f"numpy, tokengrams); the idea's estimate {human(est)}; memory budget "
          f"{human(budget) if budget else 'none'} ({source})")
    ok = r["peak"] - r["before"] <= est and (budget is None or r["peak"] <= budget)
    print("   within the estimate and the budget" if ok else "ERROR: over the estimate or budget")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
