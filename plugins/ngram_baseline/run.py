"""The computation of ngram-baseline: fit, score the same positions, compare, checkpoints."""

from __future__ import annotations

import math
from typing import Any

from mi_ideas import IdeaResult, RunContext
from mi_ideas.errors import UsageError

from .config import NgramConfig
from .definitions import definition


def _checkpoint_list(ctx: RunContext, config: NgramConfig) -> list[dict[str, Any]]:
    """[{spec, label, step, tokens_seen}] of the checkpoints to score (the final model, when
    it is the subject itself, has spec None)."""
    specs = config.checkpoints
    if specs is None:
        from mi_ideas import zoo

        if ctx.subject.spec != "zoo:stories-gpt2" or not hasattr(zoo, "checkpoints"):
            return []
        rows = zoo.checkpoints("stories-gpt2")
        return [{"spec": None if c.name == "stories-gpt2" else f"zoo:{c.name}",
                 "label": c.name, "step": float(c.step), "tokens_seen": float(c.tokens_seen),
                 "manifest_heldout_loss": float(c.heldout_loss)} for c in rows]
    steps = config.checkpoint_steps  # as many as checkpoints (NgramConfig checks it)
    return [{"spec": s, "label": s, "step": float(steps[i]) if steps else float(i),
             "tokens_seen": float("nan"), "manifest_heldout_loss": float("nan")}
            for i, s in enumerate(specs)]


def _model_nll(subject: Any, rows: Any, batch_rows: int):
    """Per-position negative log-likelihood (R, T-1) of the model on ``rows``."""
    import numpy as np
    import torch

    out = np.zeros((rows.shape[0], rows.shape[1] - 1))
    for start in range(0, rows.shape[0], batch_rows):
        x = torch.as_tensor(rows[start:start + batch_rows], dtype=torch.long)
        with torch.no_grad():
            logits = subject.forward(x, logits=True).logits
        lp = logits[:, :-1].double().log_softmax(-1)
        out[start:start + len(x)] = -lp.gather(-1, x[:, 1:, None]).squeeze(-1).numpy()
    return out


def score_rows(subject: Any, held: Any, counts: Any, orders: list[int], batch_rows: int,
               tokengrams_rows: int = 0, update: Any = None) -> dict[str, Any]:
    """The model and every n-gram on the same held-out positions: per position (R, T-1)
    the model's NLL, each order's NLL, KL(model || n-gram) and top-1 agreement (and
    tokengrams' own NLL on the first ``tokengrams_rows`` rows). Position t of a row is
    predicted by the model's logits at t and by the n-gram from the last n - 1 tokens up
    to and including t (SEP-padded at the row start); its target is token t + 1."""
    import time

    import numpy as np
    import torch

    from . import kn

    top = max(orders)
    R, P = held.shape[0], held.shape[1] - 1
    padded = kn.padded_rows(held, top - 1, counts.sep)
    nll_model = np.zeros((R, P))
    nll = {n: np.zeros((R, P)) for n in orders}
    R_tg = min(R, tokengrams_rows)
    nll_tg = {n: np.zeros((R_tg, P)) for n in orders}
    kl = {n: np.zeros((R, P)) for n in orders}
    agree = {n: np.zeros((R, P), dtype=bool) for n in orders}
    t_kn = t_tg = 0.0
    for start in range(0, R, batch_rows):
        rows = held[start:start + batch_rows]
        b = rows.shape[0]
        x = torch.as_tensor(rows, dtype=torch.long)
        with torch.no_grad():
            logits = subject.forward(x, logits=True).logits
        logq = logits[:, :-1].double().log_softmax(-1).reshape(b * P, -1).numpy()
        target = rows[:, 1:].reshape(-1)
        ar = np.arange(b * P)
        nll_model[start:start + b] = -logq[ar, target].reshape(b, P)
        q = np.exp(logq)
        top_model = logq.argmax(1)
        ctxs = [padded[start + i, t + 1:t + top].tolist() for i in range(b) for t in range(P)]
        t1 = time.perf_counter()
        probs = counts.kn_probs(ctxs, orders)
        t_kn += time.perf_counter() - t1
        for n in orders:
            p = probs[n]
            logp = np.log(p)  # p > 0 everywhere: the order-0 uniform always keeps mass
            nll[n][start:start + b] = -logp[ar, target].reshape(b, P)
            # KL(model || n-gram): the expectation is under the model's q
            kl[n][start:start + b] = (q * (logq - logp)).sum(1).reshape(b, P)
            agree[n][start:start + b] = (p.argmax(1) == top_model).reshape(b, P)
            b_tg = max(0, min(b, R_tg - start))  # rows of this batch among the first R_tg
            if b_tg:
                t1 = time.perf_counter()
                pt = counts.tokengrams_probs(ctxs[:b_tg * P], n)
                t_tg += time.perf_counter() - t1
                with np.errstate(divide="ignore"):
                    nll_tg[n][start:start + b_tg] = -np.log(
                        pt[ar[:b_tg * P], target[:b_tg * P]]).reshape(b_tg, P)
        if update is not None:
            update(b)
    return {"nll_model": nll_model, "nll": nll, "nll_tg": nll_tg, "kl": kl, "agree": agree,
            "R": R, "P": P, "R_tg": R_tg, "t_kn": t_kn, "t_tg": t_tg}


def position_fractions(nll_model: Any, nll: dict[int, Any], eps: float) -> dict[str, Any]:
    """Per-position oracle over the orders: the best n-gram's NLL at each position, the gap
    model - best, and the explained / beyond / below fractions (|gap| <= eps, gap < -eps,
    gap > eps)."""
    import numpy as np

    best = np.min(np.stack([nll[n] for n in sorted(nll)]), axis=0)
    gap = nll_model - best
    return {"best": best, "gap": gap, "explained": float((np.abs(gap) <= eps).mean()),
            "beyond": float((gap < -eps).mean()), "below": float((gap > eps).mean())}


def run(ctx: RunContext, config: NgramConfig) -> IdeaResult:
    import numpy as np
    import torch

    from . import kn
    from .corpus import build_split
    from .stats import by_bins, paired_cluster_ci, story_clusters

    kn.import_tokengrams()  # refuse before anything heavy
    subject = ctx.subject
    ckpts = _checkpoint_list(ctx, config)
    split = build_split(ctx.dataset, subject.tokenizer, config, ctx.rng_for("split"))
    train = split.train.tokens[:config.max_train_rows] if config.max_train_rows else split.train.tokens
    held = split.heldout.tokens[:config.n_eval_rows]
    held_labels = split.heldout.labels[:config.n_eval_rows]
    V, orders, top = subject.d_vocab, list(config.orders), max(config.orders)
    if int(held.max()) >= V:
        raise UsageError(f"held-out token id {int(held.max())} is outside the model's "
                         f"vocabulary ({V}); the data must be tokenized by the model's tokenizer.")
    ctx.log(f"ngram-baseline: {train.shape[0]} training rows ({train.size:,} tokens), "
            f"{held.shape[0]} held-out rows x {held.shape[1] - 1} positions; split by "
            f"{split.method}; orders {orders}")
    import time

    t0 = time.perf_counter()
    counts = kn.NgramCounts.fit(train, V, top)
    t_fit = time.perf_counter() - t0
    ctx.log(f"  counted {train.size:,} tokens up to order {top} in {t_fit:.1f} s")

    bar = ctx.progress(total=held.shape[0], desc="score held-out rows")
    sc = score_rows(subject, held, counts, orders, config.batch_rows, config.tokengrams_rows,
                    bar.update)
    bar.close()
    nll_model, nll, nll_tg, kl, agree = (sc[k] for k in ("nll_model", "nll", "nll_tg", "kl", "agree"))
    R, P, R_tg, t_kn, t_tg = sc["R"], sc["P"], sc["R_tg"], sc["t_kn"], sc["t_tg"]
    ctx.log(f"  modified-KN distributions for {R * P:,} positions x {len(orders)} orders in "
            f"{t_kn:.1f} s" + (f"; tokengrams' own for {R_tg * P:,} positions in {t_tg:.1f} s" if R_tg else ""))
    clusters = story_clusters(held, held_labels)

    result = IdeaResult()

    def add(name: str, value: Any, key: str | None = None, **fmt: Any) -> None:
        result.add(name, value, definition(key or name, **fmt))

    rng = ctx.rng_for("bootstrap")
    add("model.loss", nll_model.mean())
    add("n_heldout_positions", R * P)
    add("n_heldout_rows", R)
    add("n_train_tokens", counts.n_train_tokens)
    add("fit_seconds", t_fit)
    add("n_heldout_stories", int(clusters.max()) + 1)
    eps = config.near_nats
    fr = position_fractions(nll_model, nll, eps)
    best_per_pos, gap = fr["best"], fr["gap"]
    for n in orders:
        add(f"ngram_{n}.loss", nll[n].mean(), "ngram_N.loss", n=n)
        if R_tg:
            add(f"ngram_{n}.loss_tokengrams", nll_tg[n].mean(), "ngram_N.loss_tokengrams",
                n=n, rows=R_tg)
            add(f"ngram_{n}.loss_kn_tokengrams_rows", nll[n][:R_tg].mean(),
                "ngram_N.loss_kn_tokengrams_rows", n=n, rows=R_tg)
            add(f"ngram_{n}.tokengrams_zero_fraction", np.isinf(nll_tg[n]).mean(),
                "ngram_N.tokengrams_zero_fraction", n=n, rows=R_tg)
        add(f"ngram_{n}.top1_agreement", agree[n].mean(), "ngram_N.top1_agreement", n=n)
        add(f"ngram_{n}.kl", kl[n].mean(), "ngram_N.kl", n=n)
        d, lo, hi = paired_cluster_ci(nll_model - nll[n], clusters, rng, config.n_bootstrap)
        add(f"ngram_{n}.model_minus_ngram", d, "ngram_N.model_minus_ngram", n=n)
        add(f"ngram_{n}.model_minus_ngram_ci_low", lo, "ngram_N.model_minus_ngram_ci_low", n=n)
        add(f"ngram_{n}.model_minus_ngram_ci_high", hi, "ngram_N.model_minus_ngram_ci_high", n=n)
    add("best_ngram.loss", best_per_pos.mean())
    add("explained_by_ngrams.fraction", fr["explained"], eps=eps)
    add("beyond_ngrams.fraction", fr["beyond"], eps=eps)
    add("below_ngrams.fraction", fr["below"], eps=eps)
    best_n = min(orders, key=lambda n: nll[n].mean())
    add("best_order", best_n)

    # by position in the context, and by token type of the predicted token
    pos = np.broadcast_to(np.arange(P), (R, P))
    series = {"model": nll_model, **{f"ngram_{n}": nll[n] for n in orders}}
    by_position = by_bins(pos, config.position_bins, series, np.abs(gap) <= eps)
    target_labels = held_labels[:, 1:]
    by_type = {}
    for lid, name in enumerate(split.label_names):
        m = target_labels == lid
        if m.any():
            by_type[name] = {"n": int(m.sum()), **{k: float(v[m].mean()) for k, v in series.items()},
                             "explained_fraction": float((np.abs(gap) <= eps)[m].mean())}

    # checkpoints: the model's loss on the same positions during training
    table = []
    for c in ckpts:
        if c["spec"] is None:
            ck_nll = nll_model
        else:
            import mi_ideas

            ck = mi_ideas.load_subject(c["spec"])
            if ck.d_vocab != V:
                raise UsageError(f"checkpoint {c['spec']!r} has a vocabulary of {ck.d_vocab}, "
                                 f"not the model's {V}; give checkpoints of the same model.")
            ck_nll = _model_nll(ck, held, config.batch_rows)
            del ck
        row = {"label": c["label"], "step": c["step"], "tokens_seen": c["tokens_seen"],
               "loss": float(ck_nll.mean()), "manifest_heldout_loss": c["manifest_heldout_loss"]}
        for n in orders:
            d, lo, hi = paired_cluster_ci(ck_nll - nll[n], clusters, rng, config.n_bootstrap)
            row[f"minus_ngram_{n}"] = [d, lo, hi]
        table.append(row)
        ctx.log(f"  checkpoint {c['label']}: loss {row['loss']:.4f}")
    if table:
        for i, row in enumerate(table):
            add(f"checkpoint_{i}.loss", row["loss"], "checkpoint_I.loss", label=row["label"],
                step=row["step"])
            add(f"checkpoint_{i}.step", row["step"], "checkpoint_I.step", label=row["label"])
        for n in orders:
            beaten = [r for r in table if r[f"minus_ngram_{n}"][2] < 0]
            add(f"ngram_{n}.beaten_at_step", beaten[0]["step"] if beaten else math.nan,
                "ngram_N.beaten_at_step", n=n)
            add(f"ngram_{n}.beaten_at_tokens", beaten[0]["tokens_seen"] if beaten else math.nan,
                "ngram_N.beaten_at_tokens", n=n)

    result.details.update({
        "orders": orders,
        "near_nats": eps,
        "split": {"method": split.method, "data": ctx.dataset.spec, "n_ctx": split.n_ctx,
                  "n_train_texts": split.train.n_texts, "n_heldout_texts": split.heldout.n_texts,
                  "n_train_rows": int(train.shape[0]), "n_heldout_rows_total":
                  int(split.heldout.tokens.shape[0]), "n_eval_rows": R,
                  "heldout_fraction": config.heldout_fraction if split.method == "fraction" else None},
        "smoothing": {
            "ngram_N.loss": "interpolated modified Kneser-Ney (Chen & Goodman), continuation "
                            "counts at lower orders, three discounts per order",
            "ngram_N.loss_tokengrams": "tokengrams' batch_get_smoothed_probs: interpolated "
                                       "absolute discounting on raw counts, default deltas"},
        "discounts": {kind: {str(k): v for k, v in d.items()} for kind, d in counts.discounts.items()},
        "discounts_estimated": {kind: {str(k): v for k, v in d.items()}
                                for kind, d in counts.estimated.items()},
        "n_distinct_ngrams": {str(k): v for k, v in counts.n_distinct.items()},
        "by_position": by_position,
        "by_type": by_type,
        "checkpoints": table,
        "timing_s": {"fit": t_fit, "kn": t_kn, "tokengrams": t_tg},
    })
    tensors = {"nll_model": torch.as_tensor(nll_model, dtype=torch.float32),
               "heldout_tokens": torch.as_tensor(held), "heldout_labels": torch.as_tensor(held_labels)}
    for n in orders:
        tensors[f"nll_ngram_{n}"] = torch.as_tensor(nll[n], dtype=torch.float32)
        tensors[f"kl_ngram_{n}"] = torch.as_tensor(kl[n], dtype=torch.float32)
    ctx.artifacts.save_tensors("per_position", tensors,
                               {"label_names": ",".join(split.label_names)})
    result.artifacts.update(ctx.artifacts.saved)

    from .figures import checkpoint_figure, loss_figure, position_figure

    ctx.artifacts.save_figure("loss_per_n", loss_figure(result))
    ctx.artifacts.save_figure("by_position", position_figure(result))
    if table:
        ctx.artifacts.save_figure("checkpoints", checkpoint_figure(result))
    result.figures.update(ctx.artifacts.figures)
    return result

