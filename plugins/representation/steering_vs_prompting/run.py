"""The steering-vs-prompting pipeline (torch): vectors, the coefficient sweep on the first
split, every method on the second, judges, statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mi_ideas.errors import ConfigError

from .config import SteeringVsPromptingConfig
from .judges import harmonic, new_round, resolve_judges, score
from .prompts import Split, shown_prompt, split_dataset, vector_texts

#: The methods scored on the second split: (concept instruction, ignore instruction, vector).
CONDITIONS: dict[str, tuple[bool, bool, str | None]] = {
    "unsteered": (False, False, None),
    "ignore_only": (False, True, None),
    "prompting": (True, False, None),
    "prompting.ignore": (True, True, None),
    "steering": (False, False, "vector"),
    "steering.ignore": (False, True, "vector"),
    "control": (False, False, "control"),
}


@dataclass
class Row:
    """One generation: what the model is shown, and the prompt the judges see."""

    condition: str
    word: str
    prompt: str
    prompt_ids: list[int]
    shown: str


def registered_judges(host: Any = None) -> dict[str, Any]:
    """The judges plugins registered through ``mi_ideas_register_judges`` in the host running
    the idea (the process-wide host when none is given; the built-ins live in .judges)."""
    if host is None:
        from mi_ideas.host import get_host

        host = get_host()
    return host.judges


def vector_kind(config: SteeringVsPromptingConfig, saes: Sequence[Any]) -> str:
    if config.vector == "auto":
        return "sae_latent" if saes else "diff_means"
    if config.vector == "sae_latent" and not saes:
        raise ConfigError(
            "vector=sae_latent steers along an SAE latent's decoder direction, but no "
            "dictionary was given: add --sae SPEC (e.g. --sae zoo:stories-gpt2-resid2-topk, "
            "at resid_pre.2) or use vector=diff_means.")
    return config.vector


def check_sae(subject: Any, sae: Any, site: str, latent: int | None) -> None:
    from mi_ideas.dictionaries import site_of

    sae_site = subject.site(site_of(sae)).name
    if sae_site != site:
        raise ConfigError(
            f"the dictionary reads {sae_site}, but site={site}: an SAE latent's decoder "
            f"direction lives at the SAE's own site. Set --set site={sae_site} or give an SAE "
            f"trained at {site}.")
    d_sae = int(sae.W_dec.shape[0])
    if latent is not None and latent >= d_sae:
        raise ConfigError(f"sae_latent={latent}, but the dictionary has {d_sae} latents "
                          f"(0 .. {d_sae - 1}).")


def generate(subject: Any, rows: Sequence[Row], vectors: Sequence[Any], site: str,
             config: SteeringVsPromptingConfig, seed: int) -> list[dict]:
    """Continuations of ``rows``, row i with ``vectors[i]`` added at every position (None:
    nothing added), in one generate call per ``batch_size`` rows (one remote request each);
    returns the judges' samples."""
    import torch

    from mi_ideas.subject import Intervention

    samples: list[dict] = []
    for start in range(0, len(rows), config.batch_size):
        chunk = rows[start:start + config.batch_size]
        vecs = vectors[start:start + config.batch_size]
        interventions = []
        if any(v is not None for v in vecs):
            # one vector per row (adding a zero vector is exact: those rows are unsteered)
            value = torch.stack([torch.zeros(subject.d_model) if v is None else v.float()
                                 for v in vecs])
            interventions = [Intervention(site, "add", value)]
        batch = subject.tokenize([r.shown for r in chunk])
        ids = subject.generate(batch, max_new_tokens=config.max_new_tokens,
                               interventions=interventions, do_sample=config.do_sample,
                               temperature=config.temperature, seed=seed + start)
        cont = ids[:, batch.input_ids.shape[1]:]
        texts = subject.decode(cont)
        for r, c, t in zip(chunk, cont.tolist(), texts):
            samples.append({"prompt": r.prompt, "shown_prompt": r.shown, "continuation": t,
                            "prompt_ids": list(r.prompt_ids), "continuation_ids": c,
                            "concept": r.word, "concept_words": [r.word]})
    return samples


def judge_all(judges: dict, samples: list[dict], subject: Any) -> dict[str, list[float]]:
    """Every score of every sample, plus the zero-gated harmonic mean."""
    new_round()
    try:
        out = {kind: score(kind, name, fn, samples, subject)
               for kind, (name, fn, _) in judges.items()}
    finally:
        new_round()
    out["harmonic"] = [harmonic(c, f, r) for c, f, r in
                       zip(out["concept"], out["fluency"], out["relevance"])]
    out["distinct"] = [len(set(s["continuation_ids"])) / max(1, len(s["continuation_ids"]))
                       for s in samples]
    return out


def choose(curves: dict[float, float]) -> float:
    """The coefficient with the highest mean harmonic score (ties: the smallest)."""
    best = max(curves.values())
    return min(c for c, v in curves.items() if v == best)


def run_experiment(ctx: Any, config: SteeringVsPromptingConfig) -> dict[str, Any]:
    """Everything the result is made of (see .report)."""
    import torch

    from mi_ideas.context import derived_seed

    from .vectors import build_vector, random_like

    subject = ctx.subject
    site = subject.site(config.site).name
    judges = resolve_judges(config.judges, registered_judges(getattr(ctx, "host", None)))
    kind = vector_kind(config, ctx.saes)
    sae = ctx.saes[0] if kind == "sae_latent" else None
    if sae is not None:
        check_sae(subject, sae, site, config.sae_latent)
    split: Split = split_dataset(ctx.dataset, config)
    ids_of = {p: subject.tokenize(p).input_ids[0].tolist()
              for p in split.select_prompts + split.eval_prompts}

    def rows(condition: str, prompts: Sequence[str], word: str) -> list[Row]:
        concept, ignore, _ = CONDITIONS.get(condition, (False, False, "vector"))
        return [Row(condition, word, p, ids_of[p],
                    shown_prompt(p, word, concept=concept, ignore=ignore, config=config))
                for p in prompts]

    per_concept: dict[str, Any] = {}
    vectors: dict[str, Any] = {}
    all_samples: list[dict] = []
    for word in config.concepts:
        pos, neg = vector_texts(ctx.dataset, split.vector_pool, word, config.vector_texts,
                                contrast=config.vector_contrast, swap_words=config.swap_words,
                                rng=ctx.rng_for(f"swap:{word}"))
        vec = build_vector(subject, site, pos, neg, kind=kind, sae=sae, latent=config.sae_latent,
                           max_length=config.max_length, batch_size=min(config.batch_size, 64))
        seed = derived_seed(ctx.seed, f"generate:{word}") % (2**31)
        ctx.log(f"{word}: {kind} vector from {len(pos)} texts with the word and {len(neg)} "
                f"{'swapped' if config.vector_contrast == 'swap' else 'without'} at {site}; "
                f"activation norm {vec.norm_unit:.3f}"
                + (f", latent {vec.latent}" if vec.latent is not None else ""))

        # 1. the sweep, on the first split only (every coefficient in one batch of rows)
        coefs = [0.0, *config.coefficients]
        sweep_rows = [r for c in coefs for r in rows(f"sweep@{c:g}", split.select_prompts, word)]
        n = len(split.select_prompts)
        sweep_vecs = [None if c == 0 else c * vec.norm_unit * vec.unit for c in coefs for _ in range(n)]
        out = generate(subject, sweep_rows, sweep_vecs, site, config, seed)
        sweep_samples = {c: out[i * n:(i + 1) * n] for i, c in enumerate(coefs)}
        scores = judge_all(judges, out, subject)  # out is the groups in order
        sweep = {c: {k: scores[k][i * n:(i + 1) * n] for k in scores}
                 for i, c in enumerate(sweep_samples)}
        curves = {c: float(sum(s["harmonic"]) / n) for c, s in sweep.items() if c > 0}
        chosen = choose(curves)
        for i, c in enumerate(sweep_samples):
            for j, s in enumerate(sweep_samples[c]):
                all_samples.append({**s, "condition": f"sweep@{c:g}", "split": "select",
                                    **{f"score.{k}": scores[k][i * n + j] for k in scores}})
        ctx.log(f"{word}: harmonic by coefficient (first split) "
                + ", ".join(f"{c:g}: {v:.3f}" for c, v in curves.items())
                + f"; chosen {chosen:g}")

        # 2. every method on the second split, the vector at the chosen coefficient
        steer = chosen * vec.norm_unit * vec.unit
        control = random_like(subject.d_model, ctx.generator_for(f"control:{word}")) * steer.norm()
        conds = [c for c in CONDITIONS if config.control or c != "control"]
        m = len(split.eval_prompts)
        value = {None: None, "vector": steer, "control": control}
        eval_rows = [r for cond in conds for r in rows(cond, split.eval_prompts, word)]
        eval_vecs = [value[CONDITIONS[cond][2]] for cond in conds for _ in range(m)]
        out = generate(subject, eval_rows, eval_vecs, site, config, seed + 7919)
        eval_samples = {cond: out[k * m:(k + 1) * m] for k, cond in enumerate(conds)}
        scores = judge_all(judges, out, subject)  # out is the groups in order
        evals = {cond: {k: scores[k][i * m:(i + 1) * m] for k in scores}
                 for i, cond in enumerate(eval_samples)}
        for i, cond in enumerate(eval_samples):
            for j, s in enumerate(eval_samples[cond]):
                all_samples.append({**s, "condition": cond, "split": "eval",
                                    **{f"score.{k}": scores[k][i * m + j] for k in scores}})
        vectors[word] = vec.unit
        per_concept[word] = {
            "vector": vec, "chosen": chosen, "curves": curves,
            "sweep": {c: {k: float(sum(v) / len(v)) for k, v in s.items()} for c, s in sweep.items()},
            "eval": evals,
            "control_norm_ratio": float(control.norm() / steer.norm()),
            "control_cos": float(torch.dot(control, steer) / (control.norm() * steer.norm())),
        }
    ctx.artifacts.save_tensors("vectors", vectors, {"site": site, "kind": kind,
                               "what": "unit steering direction per concept word"})
    return {"site": site, "kind": kind, "split": split, "judges": judges,
            "per_concept": per_concept, "samples": all_samples}
