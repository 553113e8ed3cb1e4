"""Does the zoo model honour "Never mention W."?  For each food word W and 20 seeds (one neutral
story prefix per seed), sample 60 tokens (temperature 1) after
  neutral:  <bos> PREFIX
  instr:    <bos> Never mention W. PREFIX
  control:  <bos> Never mention X. PREFIX      (X = the next food word: any instruction, other word)
and count continuations that contain W (whole word, plural included); plus greedy decoding, and
P(next token = W) at a food slot ("... In the end, NAME went home and ate some").
Usage: python -m mi_ideas.zoo.build.probe_never [ZOO_ROOT]   (about 2 CPU-minutes)"""

import random, re, sys
import torch
from mi_ideas import zoo
from mi_ideas.data import stories as S


def main() -> None:

    torch.set_num_threads(1)
    root = sys.argv[1] if len(sys.argv) > 1 else None
    model, tok = zoo.load_model(root=root)
    foods = S.FOODS
    prefixes = S.story_prefixes(20, seed=777)  # neutral: no topic / instruction line
    bos = tok.bos_token_id

    def gen(text, seed, sample):
        ids = torch.tensor([[bos] + tok(text, add_special_tokens=False)["input_ids"]])
        g = torch.Generator().manual_seed(seed)
        out, past, inp = [], None, ids
        with torch.no_grad():
            for _ in range(60):  # plain sampling (no top-k / top-p), with the key/value cache
                o = model(inp, past_key_values=past, use_cache=True)
                past, logits = o.past_key_values, o.logits[0, -1].float()
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g) if sample else logits.argmax()[None]
                out.append(int(nxt))
                inp = nxt[None]
        return tok.decode(out)

    def has(text, w):
        return re.search(r"\b" + w + r"(?:s|es)?\b", text, re.I) is not None

    rows = []  # (word, seed, mode, neutral, instr, control)
    for wi, w in enumerate(foods):
        x = foods[(wi + 1) % len(foods)]
        for s, p in enumerate(prefixes):
            for mode in ("sampled", "greedy"):
                if mode == "greedy" and s >= 5:
                    continue  # greedy is deterministic per prefix: 5 prefixes per word
                seed = 1000 * s + wi
                outs = [gen(t, seed, mode == "sampled") for t in
                        (p.text, S.IGNORE_TEMPLATE.format(word=w) + " " + p.text, S.IGNORE_TEMPLATE.format(word=x) + " " + p.text)]
                rows.append((w, s, mode, *[has(o, w) for o in outs], any(has(outs[0], f) for f in foods)))

    def boot(diffs, n=2000):
        rng = random.Random(0)
        m = [sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(n)]
        m.sort()
        return m[int(0.025 * n)], m[int(0.975 * n)]

    for mode in ("sampled", "greedy"):
        r = [row for row in rows if row[2] == mode]
        print(f"\n{mode}: P(W in 60-token continuation), {len(r) // len(foods)} prefixes per word")
        print(f"{'word':<9}{'neutral':>9}{'never W':>9}{'never X':>9}")
        for w in foods:
            rw = [row for row in r if row[0] == w]
            print(f"{w:<9}" + "".join(f"{sum(row[k] for row in rw) / len(rw):>9.2f}" for k in (3, 4, 5)))
        n = len(r)
        a, b, c = (sum(row[k] for row in r) / n for k in (3, 4, 5))
        d = [row[4] - row[3] for row in r]
        dc = [row[4] - row[5] for row in r]
        print(f"pooled (n={n} word x prefix pairs): neutral {a:.3f}, never W {b:.3f}, never X {c:.3f}; "
              f"neutral continuations naming any food: {sum(row[6] for row in r) / n:.3f}")
        print(f"  paired diff never W - neutral {b - a:+.3f} [95% bootstrap {boot(d)[0]:+.3f}, {boot(d)[1]:+.3f}]; "
              f"never W - never X {sum(dc) / n:+.3f} [{boot(dc)[0]:+.3f}, {boot(dc)[1]:+.3f}]")

    # next-token probability of W at a food slot
    print("\nP(next token = W) after '<prefix> In the end, NAME went home and ate some' (mean over 20 prefixes)")
    print(f"{'word':<9}{'neutral':>9}{'never W':>9}{'never X':>9}")
    tot = [0.0, 0.0, 0.0]
    for wi, w in enumerate(foods):
        x = foods[(wi + 1) % len(foods)]
        wid = tok(" " + w, add_special_tokens=False)["input_ids"][0]
        acc = [0.0, 0.0, 0.0]
        for p in prefixes:
            name = p.attrs["hero"]["name"]
            body = p.text + f" In the end, {name} went home and ate some"
            for k, t in enumerate((body, S.IGNORE_TEMPLATE.format(word=w) + " " + body, S.IGNORE_TEMPLATE.format(word=x) + " " + body)):
                ids = torch.tensor([[bos] + tok(t, add_special_tokens=False)["input_ids"]])
                with torch.no_grad():
                    acc[k] += float(torch.softmax(model(ids).logits[0, -1].float(), -1)[wid]) / len(prefixes)
        tot = [a + b / len(foods) for a, b in zip(tot, acc)]
        print(f"{w:<9}" + "".join(f"{v:>9.3f}" for v in acc))
    print(f"{'mean':<9}" + "".join(f"{v:>9.3f}" for v in tot))


if __name__ == "__main__":
    main()
