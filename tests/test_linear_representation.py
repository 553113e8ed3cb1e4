"""linear-representation against planted answers.

The toys are one-block GPT-2s built here from a GPT2Config and constructed weights, saved
as a Hugging Face directory and run as ``--model hf:DIR`` (the user's path). With
W_Q = W_K = 0 every attention score is 0, so attention is uniform over the causal prefix;
each position holds one token, so LN_1(x_p) depends on (token, position) only; with the
MLP's output weights zero, resid_post.0 at the last position is
x_last + (1/P) Σ_p W_OV LN_1(x_p): a sum of one term per (position, token), exactly
additive in the slot words. A strong MLP adds a non-additive function of that sum.

The ladder toy makes LN_1 the identity on its tokens (zero-mean embeddings of norm √d,
unit weight, zero bias, W_V = W_O = I, no position embedding), so each token's
contribution is planted directly:

- "magnitude": the level word is the last token and lives in 4 dims (w) that ln_f's weight
  zeroes; a weaker level has a larger component along w, so the final LayerNorm divides the
  concept's part by a larger σ. At ``ln_final`` the concept-specific part is
  (e_c − ē) / (4 σ_l), its magnitude growing with the level along one direction:
  Spearman 1, consecutive steps of s parallel (diff_cosine 1), norm ratio σ_1 / σ_4.
- "separate": the level words are a, b, −a, −b (a ⊥ b) before the concept token; at
  resid_post.0 the raw steps b − a, −a − b, a − b are mutually orthogonal (raw_diff_cosine
  0) while the concept's part does not change with the level at all (no step of s, so no
  diff_cosine; no Spearman order; norm ratio 1).
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from mi_ideas.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 32
IDEA = "linear-representation"
GRID = {"template": "{ctx} the {size} {colour} {noun}",
        "slots": {"size": ["big", "small", "old", "new"],
                  "colour": ["red", "blue", "green", "black", "white"],
                  "noun": ["cat", "dog", "bird", "fish", "tree", "house"]},
        "contexts": {"ctx": ["one", "two", "three"]}}
N_CELLS, N_PARAMS = 4 * 5 * 6, 3 + 4 + 5


def _save(model, directory):
    from tests.tiny_models import build_tokenizer

    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def _gpt2(seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_models import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=16, n_embd=D, n_layer=1, n_head=4,
                     bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return GPT2LMHeadModel(cfg).eval()


def build_additive(directory, *, mlp_in: float = 1.0, mlp_out: float = 0.0, raw: float = 1.0,
                   seed: int = 0):
    """Random embeddings, LayerNorm and W_V / W_O; W_Q = W_K = 0; the MLP's input weights
    times mlp_in, its output weights and bias times mlp_out (0: no MLP); the embeddings and
    position embeddings times raw (LN_1 undoes the scale; what the last token adds to the
    residual stream directly does not)."""
    import torch

    model = _gpt2(seed)
    gen = torch.Generator().manual_seed(seed)
    block = model.transformer.h[0]
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[0] ** 0.5 if p.ndim == 2 else 3))
        model.transformer.wte.weight.mul_(raw * D ** 0.5)
        model.transformer.wpe.weight.mul_(raw)
        block.ln_1.weight.add_(1.0)
        block.ln_2.weight.add_(1.0)
        block.attn.c_attn.weight[:, :2 * D] = 0  # W_Q, W_K (Conv1D: (in, 3 * out))
        block.attn.c_attn.bias[:2 * D] = 0
        block.mlp.c_fc.weight.mul_(mlp_in)
        block.mlp.c_proj.weight.mul_(mlp_out)
        block.mlp.c_proj.bias.mul_(mlp_out)
    return _save(model, directory)


def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def build_ladder(directory):
    """The ladder toy of the module docstring (blocks of dims: w 0-3, separate levels 4-11,
    concepts 12-19, BOS and contexts 20-27)."""
    import torch

    from tests.tiny_models import BOS_ID, TOKENS

    model = _gpt2()
    tid = {t: i for i, t in enumerate(TOKENS)}
    h8 = 2.0 * _hadamard(8)  # rows 1.. are zero-mean, orthogonal, norm² 32 = d
    wte = torch.zeros(len(TOKENS), D)
    w = torch.tensor([1.0, -1.0, 1.0, -1.0])
    for level, a in zip(["one", "two", "three", "four"], [4.0, 3.0, 2.0, 1.0]):
        wte[tid[level], 0:4] = a * w            # weaker level, larger σ at ln_f
    a_, b_ = torch.tensor(h8[1]), torch.tensor(h8[2])
    for level, v in zip(["five", "six", "seven", "eight"], [a_, b_, -a_, -b_]):
        wte[tid[level], 4:12] = v.float()
    for i, concept in enumerate(["cat", "dog", "bird", "fish"]):
        wte[tid[concept], 12:20] = torch.tensor(h8[i + 1]).float()
    wte[BOS_ID, 20:28] = torch.tensor(h8[1]).float()
    for i, ctx in enumerate(["red", "blue"]):
        wte[tid[ctx], 20:28] = torch.tensor(h8[i + 2]).float()
    block = model.transformer.h[0]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(wte)
        block.ln_1.weight.fill_(1.0)
        block.ln_2.weight.fill_(1.0)
        block.attn.c_attn.weight[:, 2 * D:] = torch.eye(D)  # W_V = I
        block.attn.c_proj.weight.copy_(torch.eye(D))        # W_O = I
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.weight[0:4] = 0.0            # ln_f hides the w block
    return _save(model, directory)


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr-toys")
    return {"additive": build_additive(root / "additive"),
            "mlp": build_additive(root / "mlp", mlp_in=3.0, mlp_out=10.0, raw=0.1),
            "ladder": build_ladder(root / "ladder")}


def _run(model_dir, tmp_path, **config):
    import mi_ideas

    config.setdefault("reinit_control", False)
    return mi_ideas.run(IDEA, model=f"hf:{model_dir}", quiet=True, out=tmp_path, **config)


# -- the fit itself against known answers (no model) ------------------------------------


def test_additive_fit_recovers_planted_effects_and_loco_equals_refits():
    from mi_ideas_plugins.representation.common.additive import fit_additive, sum_to_zero_design

    rng = np.random.default_rng(0)
    n_levels = [3, 4, 2]
    levels = np.array(list(product(*[range(n) for n in n_levels])))
    effects = [rng.normal(size=(n, 5)) for n in n_levels]
    effects = [e - e.mean(0) for e in effects]  # sum-to-zero: the coding's parameters
    mu = rng.normal(size=5)
    y = mu + sum(e[levels[:, s]] for s, e in enumerate(effects))
    fit = fit_additive(y, levels, n_levels)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    for got, want in zip(fit.effects, effects):
        np.testing.assert_allclose(got, want, atol=1e-10)
    tss = ((y - y.mean(0)) ** 2).sum()
    want_shares = [(e[levels[:, s]] ** 2).sum() / tss for s, e in enumerate(effects)]
    np.testing.assert_allclose(fit.shares, want_shares, atol=1e-12)
    # the one-hot design is rank-deficient, the coding is not
    x, _ = sum_to_zero_design(levels, n_levels)
    assert np.linalg.matrix_rank(x) == x.shape[1] == 1 + sum(n - 1 for n in n_levels)
    # leave-one-out from the hat matrix = refitting without the cell (with noise: not exact)
    y = y + rng.normal(size=y.shape)
    fit = fit_additive(y, levels, n_levels)
    for i in (0, 7, len(y) - 1):
        keep = np.arange(len(y)) != i
        coef = np.linalg.lstsq(x[keep], y[keep], rcond=None)[0]
        np.testing.assert_allclose(fit.loco[i], x[i] @ coef, atol=1e-9)


def test_shuffled_r2_matches_its_exact_expectation():
    from mi_ideas_plugins.representation.common.additive import shuffled_r2

    rng = np.random.default_rng(1)
    n_levels = [4, 5, 6]
    levels = np.array(list(product(*[range(n) for n in n_levels])))
    y = rng.normal(size=(len(levels), 8)) ** 3  # any data: heavy tails do not matter
    mean, _, chance = shuffled_r2(y, levels, n_levels, rng, 400)
    assert chance == pytest.approx(N_PARAMS / (N_CELLS - 1))
    assert mean == pytest.approx(chance, abs=0.01)


def test_ladder_scores_on_planted_activations():
    from mi_ideas_plugins.representation.common.ladders import ladder_scores

    rng = np.random.default_rng(2)
    n_l, n_c, n_k, d = 4, 5, 3, 16
    u = rng.normal(size=(n_c, d))
    base = rng.normal(size=(1, 1, n_k, d))
    mags = np.array([1.0, 2.0, 3.5, 5.0])
    mag = base + mags[:, None, None, None] * u[None, :, None, :]
    sc = ladder_scores(mag)
    np.testing.assert_allclose(sc.spearman, 1.0)
    np.testing.assert_allclose(sc.diff_cosine, 1.0, atol=1e-12)
    np.testing.assert_allclose(sc.norm_ratio, 5.0, rtol=1e-12)
    # a level word that adds the same vector to every concept: no concept-specific change
    same = base + u[None, :, None, :] + rng.normal(size=(n_l, 1, 1, d))
    sc = ladder_scores(same)
    assert np.isnan(sc.spearman).all()
    np.testing.assert_allclose(sc.norm_ratio, 1.0, atol=1e-9)


def test_step_cosine_is_on_the_concept_part_not_on_the_level_words():
    """The step cosine must describe the concept-specific part s, not what the level word
    adds to every concept alike (what the raw step h_l+1 − h_l is dominated by).

    (a) each concept's magnitude grows along its own direction while the level words add
    large unrelated vectors: s steps are parallel (cosine 1), ρ = 1, norm ratio 5, the
    verdict is magnitude; the raw steps look like unrelated points (cosine < 0).
    (b) the reverse: a shared intensity axis and no concept change: the raw cosine is 1, but
    s does not move (no step: NaN), no ρ, norm ratio 1, and the verdict is not magnitude."""
    from mi_ideas_plugins.representation.common.ladders import ladder_scores
    from mi_ideas_plugins.representation.linear_representation.answer import is_magnitude

    rng = np.random.default_rng(3)
    n_l, n_c, n_k, d = 4, 6, 3, 32
    u = rng.normal(size=(n_c, d))
    base = rng.normal(size=(1, 1, n_k, d))
    mags = np.array([1.0, 2.0, 3.5, 5.0])
    words = 10 * rng.normal(size=(n_l, 1, 1, d))  # per level, the same for every concept
    sc = ladder_scores(base + words + mags[:, None, None, None] * u[None, :, None, :])
    np.testing.assert_allclose(sc.diff_cosine, 1.0, atol=1e-9)
    np.testing.assert_allclose(sc.spearman, 1.0)
    np.testing.assert_allclose(sc.norm_ratio, 5.0, rtol=1e-9)
    assert (sc.raw_diff_cosine < 0).all()
    assert is_magnitude(1.0, 1.0, float(sc.norm_ratio.mean()), float(sc.diff_cosine.mean()))
    axis = rng.normal(size=d)
    sc = ladder_scores(base + u[None, :, None, :]
                       + mags[:, None, None, None] * axis[None, None, None, :])
    np.testing.assert_allclose(sc.raw_diff_cosine, 1.0, atol=1e-9)
    assert np.isnan(sc.diff_cosine).all() and np.isnan(sc.spearman).all()
    np.testing.assert_allclose(sc.norm_ratio, 1.0, atol=1e-9)
    assert not is_magnitude(float("nan"), float("nan"), 1.0, float("nan"))


def test_ladder_interval_keeps_its_coverage_with_eight_concepts():
    """The ladder intervals are over 8 concepts: the expanded percentile interval must cover
    a known mean about 95% of the time (the plain percentile interval covers about 89% at
    n = 8). 1000 normal samples of 8: binomial s.e. of the coverage 0.007."""
    from mi_ideas_plugins.representation.linear_representation.run import mean_interval

    rng = np.random.default_rng(5)
    hits = [lo <= 0.3 <= hi for lo, hi in (mean_interval(0.3 + rng.normal(size=8), rng,
                                                          n_boot=500)[1:] for _ in range(1000))]
    assert 0.925 <= np.mean(hits) <= 0.975


def test_interaction_is_specific_to_the_planted_pair():
    """Only colour x noun interacts (plus main effects, a context shift and iid noise of
    variance 1): that pair's mean-square ratio is its expectation 1 + K Σ‖γ‖² / (df · d), far
    above 1, and its share is the planted
    interaction's sum of squares over the total; the two pairs without interaction have a
    ratio of about 1 (F(12·8, 119·2·8) noise: 95% of draws within 0.75–1.3)."""
    from mi_ideas_plugins.representation.common.additive import interactions

    rng = np.random.default_rng(4)
    n_levels, k, d = [4, 5, 6], 3, 8
    levels = np.array(list(product(*[range(n) for n in n_levels])))
    y = sum(rng.normal(size=(n, d))[levels[:, s]] * 3 for s, n in enumerate(n_levels))
    gamma = rng.normal(size=(5, 6, d))
    gamma = gamma - gamma.mean(0) - gamma.mean(1, keepdims=True) + gamma.mean((0, 1))
    inter = gamma[levels[:, 1], levels[:, 2]]  # (N, d), doubly centred: no main effect
    obs = ((y + inter)[:, None, :] + rng.normal(size=(1, k, d)) * 2
           + rng.normal(size=(len(levels), k, d)))
    out, _ = interactions(obs, levels, n_levels, ["size", "colour", "noun"])
    # expected ratio: 1 + K Σ_cells ‖γ‖² / (df_ab · d), df_ab = (5 − 1)(6 − 1) (12.8 here)
    want_f = 1 + k * (inter ** 2).sum() / (20 * d)
    assert want_f > 10
    assert out["colour_x_noun"]["f_ratio"] == pytest.approx(want_f, rel=0.15)
    tss = ((obs - obs.mean((0, 1))) ** 2).sum()
    assert out["colour_x_noun"]["share"] == pytest.approx(k * (inter ** 2).sum() / tss, rel=0.1)
    for pair in ("size_x_colour", "size_x_noun"):
        assert 0.7 < out[pair]["f_ratio"] < 1.4, (pair, out[pair])


# -- planted answers through --model hf:DIR ---------------------------------------------


def test_exactly_additive_model(toys, tmp_path):
    """resid_post.0 is exactly additive: R² ≥ 0.999, every held-out cell retrieved, no
    interaction; shuffled labels give the design's exact chance p / (N − 1)."""
    rec = _run(toys["additive"], tmp_path, grid=GRID, sites=["resid_post.0", "resid_mid.0"],
               ladder=None, n_shuffles=200)
    m = rec.metrics
    assert m["n_cells"] == N_CELLS and m["n_contexts"] == 3
    for site in ("resid_post.0", "resid_mid.0"):
        assert m[f"{site}.additive_r2"] >= 0.999
        assert m[f"{site}.loco_nn_accuracy"] == 1.0
        assert m[f"{site}.loco_cosine"] > 0.999
        shares = sum(m[f"{site}.share.{s}"] for s in GRID["slots"])
        assert shares == pytest.approx(m[f"{site}.additive_r2"], abs=1e-6)
        for pair in ("size_x_colour", "size_x_noun", "colour_x_noun"):
            assert m[f"{site}.interaction.{pair}.share"] < 1e-6
    chance = N_PARAMS / (N_CELLS - 1)
    assert m["shuffled.additive_r2_chance"] == pytest.approx(chance)
    # 200 permutations: the mean's standard error is about 0.002 here
    assert m["shuffled.resid_post.0.additive_r2"] == pytest.approx(chance, abs=0.015)
    assert m["cmp.resid_post.0.additive_r2.vs_shuffled.ci_low"] > 0.8


def test_position_at_a_slot_is_causal(toys, tmp_path):
    """Read at the colour token, the noun (later in the prompt) cannot matter."""
    rec = _run(toys["additive"], tmp_path, grid=GRID, sites=["resid_post.0"],
               position="colour", ladder=None, n_shuffles=1)
    m = rec.metrics
    assert m["resid_post.0.additive_r2"] >= 0.999
    assert m["resid_post.0.share.noun"] < 1e-9
    assert m["resid_post.0.share.colour"] > 0.1


def test_strong_mlp_is_clearly_less_additive(toys, tmp_path):
    """The same toy with a strong MLP (output 10x the residual stream it reads; small direct
    embeddings, so the last token does not dominate): its GELU of the additive residual
    couples the slots. A smooth random function of a sum of three terms is still mostly the
    sum of its main effects (measured R² 0.968), so the requirement is R² ≤ 0.99 — a
    non-additive residual at least ten times the exact model's bound (1 − 0.999) — with every
    pairwise interaction above the replicates' noise (mean-square ratio > 2; measured 2.6 to
    3.5; about 1 or below for a pair that does not interact), while resid_mid.0, before the
    MLP, stays exactly additive."""
    rec = _run(toys["mlp"], tmp_path, grid=GRID, sites=["resid_post.0", "resid_mid.0"],
               ladder=None, n_shuffles=1)
    m = rec.metrics
    assert m["resid_mid.0.additive_r2"] >= 0.999          # before the MLP: still exact
    assert m["resid_post.0.additive_r2"] <= 0.99
    assert min(m[f"resid_post.0.interaction.{p}.f_ratio"]
               for p in ("size_x_colour", "size_x_noun", "colour_x_noun")) > 2


LADDER_GRID = {"template": "{ctx} {emotion} {intensity}",
               "slots": {"emotion": ["cat", "dog", "bird", "fish"],
                         "intensity": ["one", "two", "three", "four"]},
               "contexts": {"ctx": ["red", "blue"]}}


def test_ladder_magnitude_along_one_direction(toys, tmp_path):
    ladder = {"template": "{ctx} {emotion} {intensity}", "level_slot": "intensity",
              "concept_slot": "emotion", "slots": LADDER_GRID["slots"],
              "contexts": LADDER_GRID["contexts"]}
    rec = _run(toys["ladder"], tmp_path, grid=LADDER_GRID, sites=["ln_final"],
               ladder=ladder, n_shuffles=1)
    m = rec.metrics
    assert m["ln_final.intensity.spearman"] == pytest.approx(1.0, abs=1e-9)
    assert m["ln_final.intensity.diff_cosine"] > 0.999
    assert "intensity looks like magnitude" in rec.details["answer"]
    # σ_l² = (|a_l w + w/(4 std w)|² + |e_bos + e_ctx + e_c|² / 16) / d, |w|² = 4, std w = 1/√8 … 
    # computed from the construction: the component along w is (a_l + √8 / 4) per unit of w
    along = np.array([4.0, 3.0, 2.0, 1.0]) + np.sqrt(8) / 4
    sigma = np.sqrt((4 * along ** 2 + 3 * 32 / 16) / D)
    assert m["ln_final.intensity.norm_ratio"] == pytest.approx(sigma[0] / sigma[-1], rel=1e-3)


def test_ladder_separate_directions(toys, tmp_path):
    slots = {"emotion": ["cat", "dog", "bird", "fish"],
             "intensity": ["five", "six", "seven", "eight"]}
    ladder = {"template": "{ctx} {intensity} {emotion}", "level_slot": "intensity",
              "concept_slot": "emotion", "slots": slots, "contexts": {"ctx": ["red", "blue"]}}
    grid = {**LADDER_GRID, "template": "{ctx} {intensity} {emotion}", "slots": slots}
    rec = _run(toys["ladder"], tmp_path, grid=grid, sites=["resid_post.0"], ladder=ladder,
               n_shuffles=1)
    m = rec.metrics
    # the level words' steps are orthogonal, but the concept's part does not move at all:
    # no step of s (NaN), no Spearman order, norm ratio 1, and the verdict is not magnitude
    assert abs(m["resid_post.0.intensity.raw_diff_cosine"]) < 1e-3
    assert np.isnan(m["resid_post.0.intensity.diff_cosine"])
    assert np.isnan(m["resid_post.0.intensity.spearman"])
    assert m["resid_post.0.intensity.norm_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert "intensity is not one magnitude" in rec.details["answer"]
    assert "does not move with the level" in rec.details["answer"] and "nan" not in rec.details["answer"]


def test_reinit_control_runs_on_the_same_prompts(toys, tmp_path):
    """The re-initialised copy is a different network read at the same tokens: at
    resid_pre.0 (the last token's embeddings, whatever the weights) it is exactly additive
    with the noun carrying everything; at resid_post.0 its attention is no longer uniform."""
    rec = _run(toys["additive"], tmp_path, grid=GRID, sites=["resid_pre.0", "resid_post.0"],
               ladder=None, n_shuffles=1, reinit_control=True)
    m = rec.metrics
    assert m["reinit.resid_pre.0.additive_r2"] >= 0.999
    assert rec.details["reinit"]["grid"]["resid_pre.0"]["shares"]["noun"] >= 0.999
    # a control that reused the trained weights would give the toy's shares: its unit-scale
    # W_OV puts 13% of resid_post.0's variance into the size and colour words (measured
    # 0.871 noun), while Hugging Face's initialisation (std 0.02) leaves the attention
    # output at a few percent of the read token's embedding (measured 0.995 noun)
    assert m["resid_post.0.share.noun"] < 0.9
    assert m["reinit.resid_post.0.share.noun"] > 0.99
    assert m["cmp.resid_post.0.additive_r2.vs_reinit.n_units"] == N_CELLS


# -- bad grids ----------------------------------------------------------------------------


@pytest.mark.parametrize("grid, match", [
    ({**GRID, "template": "{ctx} the {size} {colour} {noun} {shape}"},
     r"uses \{shape\}, which is not among the slots"),
    ({**GRID, "template": "{ctx} the {size} {noun}"},
     r"colour is given values but the template"),
    ({**GRID, "slots": {**GRID["slots"], "colour": []}}, r"slot 'colour' has 0 values"),
    ({**GRID, "slots": {**GRID["slots"], "colour": ["red", " "]}}, r"'colour' has an empty value"),
    ({**GRID, "slots": {"size": ["big", "small"]}, "template": "{ctx} the {size}"},
     r"at least two slots"),
])
def test_bad_grids_are_config_errors(grid, match, tmp_path):
    import mi_ideas

    with pytest.raises(ConfigError, match=match):
        mi_ideas.run(IDEA, quiet=True, out=tmp_path, grid=grid)


def test_slot_value_not_whole_tokens_is_refused_before_the_run(toys, tmp_path, capsys):
    from mi_ideas.cli import main

    rc = main(["run", IDEA, "--model", f"hf:{toys['additive']}", "--out", str(tmp_path),
               "--set", "grid.template={ctx} the {size} {colour}x {noun}",
               "--set", "grid.slots={size: [big, small], colour: [red, blue], noun: [cat, dog]}",
               "--set", "grid.contexts={ctx: [one, two]}",
               "--set", "position=colour", "--set", "ladder=null",
               "--set", "sites=[resid_post.0]"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "value 'red' of slot 'colour' is not found as whole tokens" in err
    assert "Traceback" not in err
    assert not any(tmp_path.rglob("config.json"))  # refused before the run directory
