"""steering-vs-prompting on a planted toy: a model where adding a known direction raises the
concept token's logit by construction, so the steering effect, the coefficient's working
range and the controls are known before the idea runs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

import mi_ideas
from mi_ideas import hookimpl
from mi_ideas.errors import ConfigError, MiIdeasError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDEA = "steering-vs-prompting"
N_CYCLE, SLOT = 12, 5
WORDS = [f"n{i}" for i in range(N_CYCLE)] + ["cake", "A", "story", "about", "Never", "mention", "."]
TOKENS = ["<pad>", "<bos>"] + WORDS
ID = {t: i for i, t in enumerate(TOKENS)}
TAU, GAMMA = 8.0, 1.0
#: a second coordinate holds TAU_NEVER × (share of "Never" tokens so far); in the toy that
#: obeys the ignore line it lowers cake's logit by that much (and does nothing otherwise)
TAU_NEVER = 100.0
#: bigram logits: every n_i is followed by n_{i+1} (logit 10) except at the slot after n5,
#: where n6 has logit 4 and cake 3 (a plausible alternative); cake is followed by n7.
SLOT_MARGIN = 4.0 - 3.0


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(dict(ID), unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # "cake." -> "cake", "."
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>",
                                   pad_token="<pad>", unk_token="<pad>", padding_side="left")


def _readout(obeys_never: bool = False):
    import torch

    v = len(TOKENS)
    w = torch.zeros(v, v + 2)  # logits[j] = w[j] . h

    def bigram(a, b, logit=10.0):
        w[ID[b], ID[a]] = logit

    for i in range(N_CYCLE):
        if i != SLOT:
            bigram(f"n{i}", f"n{(i + 1) % N_CYCLE}")
    bigram(f"n{SLOT}", f"n{SLOT + 1}", 4.0)
    bigram(f"n{SLOT}", "cake", 3.0)
    bigram("cake", f"n{SLOT + 2}")
    for t in ["<bos>", "<pad>", ".", "A", "story", "about", "Never", "mention"]:
        bigram(t, "n0")
    w[ID["cake"], v] = GAMMA  # the topic coordinate raises cake's logit
    w[ID["cake"], v + 1] = -1.0 if obeys_never else 0.0
    return w


def _hidden(ids, mask, tau=TAU):
    """One-hot token plus a topic coordinate tau × (share of cake tokens so far): a
    uniform causal attention head that writes "cake was mentioned" into the stream."""
    import torch

    h = torch.nn.functional.one_hot(ids, len(TOKENS)).float()
    mask = mask.float()
    seen = mask.cumsum(1).clamp(min=1)
    share = ((ids == ID["cake"]).float() * mask).cumsum(1) / seen
    never = ((ids == ID["Never"]).float() * mask).cumsum(1) / seen
    return torch.cat([h, (tau * share)[..., None], (TAU_NEVER * never)[..., None]], dim=-1)


def _induction_logits(ids, mask, logit=10.0):
    """An induction head only: at each position, ``logit`` on the token that followed the
    latest earlier occurrence of the current token (pad positions ignored), else 0."""
    import torch

    out = torch.zeros(*ids.shape, len(TOKENS))
    for b in range(ids.shape[0]):
        row = [(t, int(ids[b, t])) for t in range(ids.shape[1]) if mask[b, t]]
        for k, (t, tok) in enumerate(row):
            prev = [j for j in range(k - 1) if row[j][1] == tok]
            if prev:
                out[b, t, row[prev[-1] + 1][1]] = logit
    return out


def planted_subject(obeys_never: bool = False, tau: float = TAU, induction: bool = False):
    from mi_ideas.subject import ForwardOutput, Subject, position_index, select_positions

    class PlantedSteering(Subject):
        """Every site is h (after interventions); logits = readout(h). Generation is the
        Subject's own re-running loop."""

        backend = "toy"

        def __init__(self):
            tag = f"{int(obeys_never)}-{tau:g}-{int(induction)}"
            super().__init__(spec=f"toy:planted-steering-{tag}",
                             tokenizer=_tokenizer(), n_layers=1, d_model=len(TOKENS) + 2,
                             d_vocab=len(TOKENS),
                             fingerprint=f"planted-steering-v3-{tag}")
            self.w = _readout(obeys_never)

        def _forward(self, batch, read, positions, interventions, logits, stats,
                     start_layer=None, start_resid=None):
            from mi_ideas import trace_ops

            h = _hidden(batch.input_ids, batch.attention_mask, tau)
            for iv in interventions:
                assert iv.op == "add"
                v = iv.value.float()
                h = h + (v[:, None, :] if v.ndim == 2 else v)
            out_logits = (_induction_logits(batch.input_ids, batch.attention_mask)
                          if induction else h @ self.w.T)
            out = ForwardOutput(logits=out_logits if logits else None)
            for name in read:
                out.activations[name] = select_positions(h, positions, batch)
            if stats is not None and stats.wants_anything():
                out.stats = trace_ops.stats(out_logits, h, *stats.args(
                    position_index(stats.positions, batch)))
            return out

    return PlantedSteering()


def corpus(n: int = 90, seed: int = 0) -> list[str]:
    """Cycle texts of 30 tokens from a random start, '.' every 6 tokens; every third text
    has cake in the slot (…n5 cake n7…), the others n6."""
    rng = random.Random(seed)
    texts = []
    for k in range(n):
        i, toks = rng.randrange(N_CYCLE), []
        for _ in range(30):
            toks.append(f"n{i}")
            if i == SLOT:
                toks.append("cake" if k % 3 == 0 else f"n{SLOT + 1}")
                i = SLOT + 2
            else:
                i = (i + 1) % N_CYCLE
        texts.append(" ".join(t + (" ." if j % 6 == 5 else "") for j, t in enumerate(toks)))
    return texts


COEFS = [0.25, 0.5, 1.0, 2.0, 4.0, 16.0]
TOY = dict(concepts=["cake"], site="resid_post.0", coefficients=COEFS, max_new_tokens=12,
           n_select=6, n_eval=6, prompt_sentences=1, vector_texts=16, n_boot=500,
           swap_words=["n6"])  # the counterfactual of "n5 cake n7" is "n5 n6 n7"


@pytest.fixture(scope="module")
def toy():
    return planted_subject()


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("svp") / "cycle.txt"
    path.write_text("\n".join(corpus()))
    return f"text:{path}"


@pytest.fixture(scope="module")
def toy_run(toy, toy_data, tmp_path_factory):
    return mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True,
                        out=tmp_path_factory.mktemp("runs"), **TOY)


def _unit_vectors(result):
    from safetensors.torch import load_file

    return load_file(str(Path(result.run_dir) / result.artifacts["vectors"]))


def _greedy_reference(unit, c, norm, steps=14):
    """Greedy continuation of the toy from one cycle start, computed from the planted
    read-out directly (not through the Subject or the idea)."""
    import torch

    w, ids = _readout(), [ID["<bos>"], ID["."]]
    for _ in range(steps):
        t = torch.tensor([ids])
        h = _hidden(t, torch.ones_like(t))[0, -1] + c * norm * unit
        ids.append(int((w @ h).argmax()))
    return [TOKENS[i] for i in ids[2:]]


def test_planted_steering_effect_and_the_working_range(toy_run):
    m, d = toy_run.metrics, toy_run.details
    unit = _unit_vectors(toy_run)["cake"]
    norm = m["cake.activation_norm"]
    cycle = [f"n{i % N_CYCLE}" for i in range(14)]
    wanted = [("cake" if i == SLOT + 1 else t) for i, t in enumerate(cycle)]
    working = {c for c in COEFS if _greedy_reference(unit, c, norm) == wanted}
    # the grid brackets the planted range: too weak (no cake) and too strong (broken text)
    assert min(COEFS) not in working and max(COEFS) not in working and working
    assert d["chosen"]["cake"] in working
    # the vector points mostly along the planted topic coordinate
    assert float(unit[-2]) > 0.9 and float(unit[-1]) == 0
    assert m["unsteered.concept"] == 0 and m["steering.concept"] == 1.0
    assert m["steering_vs_control.concept.ci_low"] > 0.5
    # the control (a random direction of the same norm) shows no concept effect
    assert m["control.concept"] == 0 and m["cake.control.norm_ratio"] == pytest.approx(1, abs=1e-5)
    # the toy cannot read instructions: the ignore line changes nothing the vector does
    assert m["steering.ignore.retained"] == pytest.approx(1.0)
    assert m["steering.ignore.retained_vs_ignore_only"] == pytest.approx(1.0)
    assert m["prompting.concept"] == 0 and m["prompting.ignore.retained"] != m["prompting.ignore.retained"]
    sweep = d["sweep"]["cake"]
    assert sweep["16"]["concept"] == 1.0 and sweep["16"]["fluency"] < 0.1  # too strong
    assert all(sweep[f"{c:g}"]["concept"] == 0 for c in COEFS if c < 1)


def test_the_unmatched_contrast_steers_too(toy, toy_data, tmp_path):
    """vector_contrast=texts_without (AxBench's DiffMean against other texts) recovers the
    planted coordinate as well."""
    r = mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True, out=tmp_path,
                     **{**TOY, "coefficients": [2.0], "vector_contrast": "texts_without"})
    assert float(_unit_vectors(r)["cake"][-2]) > 0.9
    assert r.metrics["steering.concept"] == 1.0 and r.metrics["control.concept"] == 0


def test_swapped_contrast_texts_differ_only_in_the_word():
    import re

    import numpy as np

    from mi_ideas.data import Dataset
    from mi_ideas_plugins.representation.steering_vs_prompting.prompts import (
        mentions, vector_texts)

    ds = Dataset("t", ["a cake and a cake.", "no word here.", "Cake? cakes. cake!"])
    pos, neg = vector_texts(ds, [0, 1, 2], "cake", 10, contrast="swap",
                            swap_words=["pie", "bun"], rng=np.random.default_rng(0))
    assert pos == [ds.texts[0], ds.texts[2]] and len(neg) == 2
    assert "cakes" in neg[1]  # whole words only
    for p, n in zip(pos, neg):
        assert not mentions(n, ["cake"])
        back = re.sub(r"\b(pie|bun)\b", "cake", n)
        assert back == re.sub(r"\bCake\b", "cake", p)  # only the word changed


def test_an_ignore_line_the_model_obeys_leaves_nothing_retained(toy_data, tmp_path):
    """In the toy that obeys "Never": the line wipes out the steering effect (retained 0),
    while in the toy that cannot read it, the effect is fully retained (the test above)."""
    obeying = planted_subject(obeys_never=True)
    r = mi_ideas.run(IDEA, model=obeying, data=toy_data, quiet=True, out=tmp_path,
                     **{**TOY, "coefficients": [2.0], "control": False})
    m = r.metrics
    assert m["steering.concept"] == 1.0 and m["steering.ignore.concept"] == 0
    assert m["ignore_only.concept_effect"] == 0
    assert m["steering.ignore.retained"] == 0
    assert (m["steering.ignore.retained.ci_low"], m["steering.ignore.retained.ci_high"]) == (0, 0)


def test_harmonic_mean_is_zero_when_any_score_is_zero():
    from mi_ideas_plugins.representation.steering_vs_prompting.judges import harmonic

    assert harmonic(1.0, 1.0, 0.0) == 0 and harmonic(0.0, 0.9, 0.9) == 0
    assert harmonic(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert harmonic(1.0, 0.5, 0.25) == pytest.approx(3 / 7)


def test_judges_registered_through_the_hook_replace_the_builtins(register_plugin, toy, toy_data,
                                                               tmp_path):
    seen = []

    def half(samples, subject):
        seen.extend(s["continuation"] for s in samples)
        assert not ({"condition", "split"} & set(samples[0]))  # blind to the method
        return [0.5] * len(samples)

    class Judges:
        @hookimpl
        def mi_ideas_register_judges(self, register):
            register("half-concept", half, "always 0.5", "concept")
            register("no-relevance", lambda samples, subject: [0.0] * len(samples),
                     "always 0", "relevance")

    register_plugin(Judges(), name="test-judges")
    small = {**TOY, "coefficients": [2.0], "n_select": 2, "n_eval": 2, "control": False}
    r = mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True, out=tmp_path,
                     judges={"concept": "half-concept", "relevance": "no-relevance"}, **small)
    assert seen and r.details["judges"] == {"concept": "half-concept",
                                            "fluency": "unsteered-logprob",
                                            "relevance": "no-relevance"}
    methods = ["unsteered", "prompting", "steering", "steering.ignore", "prompting.ignore"]
    assert all(r.metrics[f"{k}.concept"] == 0.5 for k in methods)  # not the built-in's 0 / 1
    assert all(r.metrics[f"{k}.harmonic"] == 0 for k in methods)    # zero-gated
    assert r.metrics["steering.fluency"] > 0


def test_the_coefficient_is_never_chosen_on_the_evaluation_prompts(
        register_plugin, toy_run, toy, toy_data, tmp_path):
    """A concept judge that scores the evaluation prompts backwards (1 when the concept is
    absent) changes the evaluation numbers but not the chosen coefficient."""
    from mi_ideas_plugins.representation.steering_vs_prompting.judges import concept_words

    split = toy_run.details["split"]
    assert not set(split["select"]) & set(split["eval"])
    assert not set(split["select_prompts"]) & set(split["eval_prompts"])
    poisoned = set(split["eval_prompts"])

    def backwards_on_eval(samples, subject):
        real = concept_words(samples, subject)
        return [1.0 - c if s["prompt"] in poisoned else c for s, c in zip(samples, real)]

    class Poison:
        @hookimpl
        def mi_ideas_register_judges(self, register):
            register("poison", backwards_on_eval, "inverted on the evaluation prompts", "concept")

    register_plugin(Poison(), name="poison")
    r = mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True, out=tmp_path,
                     judges={"concept": "poison"}, **TOY)
    assert r.details["chosen"] == toy_run.details["chosen"]
    assert r.metrics["steering.concept"] == 0 and toy_run.metrics["steering.concept"] == 1
    samples = json.loads((Path(toy_run.run_dir) / toy_run.artifacts["samples"]).read_text())
    sweep_prompts = {s["prompt"] for s in samples if s["condition"].startswith("sweep@")}
    assert sweep_prompts == set(split["select_prompts"])


def test_an_sae_latent_steers_along_its_decoder_direction(toy, toy_data, tmp_path):
    """A planted dictionary whose latent 3 is the topic direction: with --sae the idea picks
    latent 3 (the one whose activation differs most between texts with and without the
    word) and steers as well as the difference of means."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d = toy.d_model
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=8, metadata=SAEMetadata(
        hook_name="blocks.0.hook_resid_post", model_name="toy")))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        dec = torch.randn(8, d, generator=g)
        dec[:, -2:] = 0
        dec[3] = 0
        dec[3, -2] = 1.0
        dec = dec / dec.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(dec)
        sae.W_enc.copy_(dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    r = mi_ideas.run(IDEA, model=toy, data=toy_data, saes=[sae], quiet=True, out=tmp_path,
                     **{**TOY, "control": False})
    assert r.details["vector"] == "sae_latent" and r.details["latents"] == {"cake": 3}
    assert float(_unit_vectors(r)["cake"][-2]) == pytest.approx(1.0)
    assert r.metrics["steering.concept"] == 1.0 and r.metrics["unsteered.concept"] == 0


@pytest.mark.parametrize("values, message", [
    (dict(concepts=["two words"]), "single words"),
    (dict(coefficients=[0.0, 1.0]), "must all be > 0"),
    (dict(ignore_instruction="Never mention it."), "exactly one {word}"),
    (dict(judges={"concept": "llm"}), "is not a judge"),
    (dict(judges={"concept": "unsteered-logprob"}), "built-in fluency judge"),
    (dict(concepts=["zebra"]), "at least 2 dataset texts that contain"),
    (dict(n_select=60, n_eval=60), "needs 120 prompts"),
    (dict(sae_latent=3, vector="diff_means"), "sae_latent is set"),
])
def test_bad_configs_are_config_errors_before_anything_is_written(toy, toy_data, tmp_path,
                                                                  values, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True, out=tmp_path,
                     **{**TOY, **values})
    assert not list(tmp_path.rglob("config.json"))


def test_sae_latent_without_a_dictionary_names_the_flag(toy, toy_data, tmp_path):
    with pytest.raises(MiIdeasError, match="add --sae SPEC"):
        mi_ideas.run(IDEA, model=toy, data=toy_data, quiet=True, out=tmp_path,
                     **{**TOY, "vector": "sae_latent"})


def test_instructions_in_the_shown_prompt():
    from mi_ideas_plugins.representation.steering_vs_prompting.config import (
        SteeringVsPromptingConfig)
    from mi_ideas_plugins.representation.steering_vs_prompting.prompts import shown_prompt

    before = SteeringVsPromptingConfig()
    chat = SteeringVsPromptingConfig(instruction_placement="after_every_message")
    p = "Mia was kind. She had a dog."
    assert shown_prompt(p, "cake", concept=True, ignore=True, config=before) == \
        "A story about cake. Never mention cake. Mia was kind. She had a dog."
    assert shown_prompt(p, "cake", concept=True, ignore=False, config=chat) == \
        "Mia was kind. A story about cake. She had a dog. A story about cake."
    assert shown_prompt("user: hi\nbot: hello", "cake", concept=True, ignore=True, config=chat) == \
        "Never mention cake.\nuser: hi\nA story about cake.\nbot: hello\nA story about cake."


def test_remote_generation_is_one_request_per_batch(tmp_path, ndif_server, ndif_config):
    """Through the loopback server every model call of the run is one request: per concept,
    the vector texts' forwards, one generate call per batch of rows for the sweep and for
    the evaluation, and two judge forwards (log p(continuation) with the prompt, shared by
    fluency and relevance, and without it) per batch of samples. A generation that sent a
    request per token would add max_new_tokens - 1 requests per generate call."""
    import math

    from tests.test_remote_ideas import SMALL

    ndif_config.APP.REMOTE_LOGGING = False
    cfg = SMALL[IDEA]
    before = ndif_server.stats()["requests"]
    r = mi_ideas.run(IDEA, remote=ndif_server.url, quiet=True, out=tmp_path, **cfg)
    n_requests = ndif_server.stats()["requests"] - before
    sweep_rows = (1 + len(cfg["coefficients"])) * cfg["n_select"]
    eval_rows = 7 * cfg["n_eval"]
    expected = 0
    for word in cfg["concepts"]:
        n_pos, n_neg = r.details["vector_texts"][word]
        expected += math.ceil(n_pos / 64) + math.ceil(n_neg / 64)
        expected += sum(math.ceil(rows / 128) * 3 for rows in (sweep_rows, eval_rows))
    assert n_requests == expected


#: a topic weight large enough that one "cake" in the instruction line puts cake in the slot:
#: at the slot (~19 tokens in, one cake) the coordinate is 40/19 ≈ 2.1 > SLOT_MARGIN, while
#: after "A story about cake. Never mention cake." (two cakes, one Never, ~23 tokens) the
#: obeying toy's Never coordinate (100/23) outweighs it (80/23).
TAU_READS = 40.0


def test_an_instruction_the_toy_reads_puts_the_concept_in_the_slot(toy_data, tmp_path):
    """The instruction line really carries cake into the context; the vector is too weak
    (0.25) to do so. Prompting = 1, steering = 0, so steering − prompting = −1 on every
    prompt; the ignore line itself names cake and this toy cannot obey it, so the ignore
    line alone raises concept presence to 1 and prompting keeps all of its effect."""
    r = mi_ideas.run(IDEA, model=planted_subject(tau=TAU_READS), data=toy_data, quiet=True,
                     out=tmp_path, **{**TOY, "coefficients": [0.25], "control": False})
    m = r.metrics
    assert m["unsteered.concept"] == 0 and m["prompting.concept"] == 1.0
    assert m["prompting.ignore.concept"] == 1.0 and m["ignore_only.concept_effect"] == 1.0
    assert m["prompting.ignore.retained"] == 1.0
    assert m["prompting.ignore.retained_vs_ignore_only"] == 0.0  # all of it is the line's own
    assert m["steering.concept"] == 0
    assert m["steering.ignore.retained"] != m["steering.ignore.retained"]  # no effect: NaN
    assert m["steering_vs_prompting.concept.diff"] == -1.0
    assert (m["steering_vs_prompting.concept.ci_low"],
            m["steering_vs_prompting.concept.ci_high"]) == (-1.0, -1.0)
    assert m["steering_vs_prompting.concept.p_wilcoxon"] < 0.05
    answer = mi_ideas.list_ideas()[IDEA].answer(r)
    assert "Steering has no concept effect to retain" in answer
    assert "Prompting retains 1.000 [1.000, 1.000]" in answer


def test_answer_states_no_retained_share_when_the_effect_interval_contains_zero(toy_run):
    """The docs' rule: a retained share is read only where concept_effect's interval
    excludes 0."""
    from types import SimpleNamespace

    idea = mi_ideas.list_ideas()[IDEA]
    m = dict(toy_run.metrics)
    assert "Steering retains 1.000" in idea.answer(SimpleNamespace(metrics=m))
    m.update({"steering.concept_effect": 0.2, "steering.concept_effect.ci_low": -0.05,
              "steering.concept_effect.ci_high": 0.45, "steering.ignore.retained": 0.7})
    text = idea.answer(SimpleNamespace(metrics=m))
    assert "Steering retains" not in text and "0.700" not in text
    assert "not distinguishable from 0" in text


def test_an_ignore_line_the_reading_toy_obeys_removes_both_effects(toy_data, tmp_path):
    """Both methods put cake in the slot (diff 0); the obeyed ignore line removes it from
    both (retained 0, interval [0, 0]). Swapping the retained arguments, or a CONDITIONS
    entry that drops an instruction, breaks one of these."""
    r = mi_ideas.run(IDEA, model=planted_subject(obeys_never=True, tau=TAU_READS),
                     data=toy_data, quiet=True, out=tmp_path,
                     **{**TOY, "coefficients": [2.0], "control": False})
    m = r.metrics
    assert m["unsteered.concept"] == 0 and m["ignore_only.concept_effect"] == 0
    assert m["prompting.concept"] == 1.0 and m["steering.concept"] == 1.0
    assert m["steering_vs_prompting.concept.diff"] == 0
    assert m["steering_vs_prompting.concept.p_wilcoxon"] == 1.0
    assert m["prompting.ignore.concept"] == 0 and m["steering.ignore.concept"] == 0
    for method in ("prompting", "steering"):
        assert m[f"{method}.ignore.retained"] == 0
        assert (m[f"{method}.ignore.retained.ci_low"], m[f"{method}.ignore.retained.ci_high"]) == (0, 0)
        assert m[f"{method}.concept_effect.ci_low"] == 1.0


def _sample(subject, prompt_ids, continuation_ids):
    return {"prompt": "", "shown_prompt": "", "continuation": "", "concept": "cake",
            "concept_words": ["cake"], "prompt_ids": [ID[t] for t in prompt_ids],
            "continuation_ids": [ID[t] for t in continuation_ids]}


def test_fluency_and_relevance_judges_on_known_log_probs(toy):
    """In the bigram toy the next-token distributions are known in closed form: after n_i
    the logit of n_{i+1} is 10 and every other logit 0, except after n5 (n6: 4, cake: 3);
    after BOS or "." n0 has logit 10."""
    from mi_ideas_plugins.representation.steering_vs_prompting.judges import (
        new_round, prompt_pmi, unsteered_logprob)

    v = len(TOKENS)
    p10 = math.exp(10) / (math.exp(10) + v - 1)
    p_slot = math.exp(4) / (math.exp(4) + math.exp(3) + v - 2)
    informative = _sample(toy, ["<bos>", "n4"], ["n5", "n6", "n7"])
    uninformative = _sample(toy, ["<bos>", "."], ["n0", "n1", "n2"])
    new_round()
    flu = unsteered_logprob([informative, uninformative], toy)
    assert flu[0] == pytest.approx((p10 * p_slot * p10) ** (1 / 3), rel=1e-5)
    assert flu[1] == pytest.approx(p10, rel=1e-5)
    new_round()
    rel = prompt_pmi([informative, uninformative], toy)
    # n5 is likelier after n4 than after BOS (1); n6, n7 depend only on the token before (½)
    assert rel[0] == pytest.approx(2 / 3)
    # "." predicts exactly what BOS predicts: every token ½
    assert rel[1] == pytest.approx(0.5)


def test_a_continuation_that_copies_the_prompt_is_not_relevant():
    """In a toy that is only an induction head, repeating the prompt is what the prompt
    makes most likely: every repeated token but the first would count as "made more likely"
    (old score 7.5/8). Tokens completing a 4-gram of the prompt count 0: the copy scores
    (½ + 1 + 1) / 8, below the ½ of an uninformative prompt."""
    from mi_ideas_plugins.representation.steering_vs_prompting.judges import (
        COPY_N, copied_from_prompt, new_round, prompt_pmi, unsteered_logprob)

    induction = planted_subject(induction=True)
    words = [f"n{i}" for i in range(8)]
    copy = _sample(induction, ["<bos>", *words], words)
    assert copied_from_prompt(copy["prompt_ids"], copy["continuation_ids"]) == \
        [False] * (COPY_N - 1) + [True] * (8 - COPY_N + 1)
    new_round()
    assert prompt_pmi([copy], induction)[0] == pytest.approx(2.5 / 8)
    # the stated limit: the fluency judge still rewards the copy (1/V, then p10 seven times)
    v = len(TOKENS)
    p10 = math.exp(10) / (math.exp(10) + v - 1)
    new_round()
    assert unsteered_logprob([copy], induction)[0] == pytest.approx(
        ((1 / v) * p10 ** 7) ** (1 / 8), rel=1e-5)
    # a continuation that does not repeat the prompt's 4-grams keeps the plain PMI score
    novel = _sample(induction, ["<bos>", *words], ["n0", "n1", "n9", "n2"])
    assert not any(copied_from_prompt(novel["prompt_ids"], novel["continuation_ids"]))
