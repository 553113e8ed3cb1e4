"""sensitive-directions: a planted toy with a known sensitive direction, the SAE-error
consistency check on the zoo, and the default config end to end (symmetry of the radial
option, the answer consistent with its paired test). The planted-model tests of the whole
pipeline are in tests/test_sd_ground_truth.py."""

from __future__ import annotations

import math

import pytest
import torch

from tests.toy_subjects import IdentityBlockSubject
from mi_ideas_plugins.plateaus.common.sweep import clean_run, sweep
from mi_ideas_plugins.plateaus.sensitive_directions import analysis as A
from mi_ideas_plugins.plateaus.sensitive_directions.optimise import (
    max_abs_cos, optimise_directions, readout_for)


# -- a planted toy: the next-token distribution depends on x only through u·x -------------


class PlantedSubject(IdentityBlockSubject):
    """One identity block; logits = (u·h) w_out + b at every position (a planted direction u)."""

    backend = "planted"

    def __init__(self, d: int = 16, vocab: int = 12, seed: int = 0):
        super().__init__(spec="planted", tokenizer=None, n_layers=1, d_model=d, d_vocab=vocab)
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(vocab, d, generator=g) * 2
        u = torch.randn(d, generator=g)
        self.u = u / u.norm()
        self.w_out = torch.randn(vocab, generator=g)
        self.b = torch.randn(vocab, generator=g)

    def logits_of(self, h):
        return (h @ self.u)[..., None] * self.w_out + self.b

    def embed(self, batch):
        return self.emb[batch.input_ids]


def test_planted_direction_is_ranked_first_and_found_by_optimisation():
    subject = PlantedSubject()
    d, u = subject.d_model, subject.u
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, subject.d_vocab, (6, 5), generator=g)
    clean = clean_run(subject, ids, "resid_pre.0")
    n = len(ids)

    def unit(v):
        return v / v.norm(dim=-1, keepdim=True)

    iso = unit(torch.randn(n, 8, d, generator=g))
    null = unit(iso - (iso @ u)[..., None] * u)              # orthogonal to u: no effect
    mixed = unit(u + 0.5 * null)                              # cos(d, u) = 0.89
    fams = {"null": null, "isotropic": iso, "mixed": mixed, "planted": u.expand(n, 8, d)}
    steps = torch.linspace(0, 6, 61)
    res = sweep(subject, clean, "resid_pre.0", torch.cat(list(fams.values()), 1), steps)
    kl = dict(zip(fams, res.kl.split(8, dim=1)))
    t = {f: A.crossing_t(kl[f], steps, 0.05) for f in fams}
    med = {f: A.summary(t[f])["median"] for f in fams}
    # The planted direction crosses first; partial alignment later; orthogonal never.
    assert med["planted"] < 0.95 * med["mixed"] < 0.95 * med["isotropic"]
    assert math.isinf(med["null"]) and kl["null"].abs().max() < 1e-5
    # crossing along cos-c direction happens at t_planted / c exactly (KL depends on t·(u·d))
    c = float((mixed[0, 0] @ u))
    assert t["mixed"][0, 0] == pytest.approx(float(t["planted"][0, 0]) / c, rel=0.03)
    cmp = A.compare(t["planted"], t["isotropic"], cap=6.0)
    # paired over the 6 prompts: planted crosses first on every one (the smallest exact
    # two-sided Wilcoxon p with 6 units is 2 / 2^6 = 0.031)
    assert cmp["prompt_frac"] == 1.0 and cmp["ratio_ci_high"] < 0.95
    assert cmp["wilcoxon_p"] == pytest.approx(2 / 2**6) and cmp["verdict"] == 1.0

    def readout(x_last):  # the toy's differentiable next-token log-probs
        return subject.logits_of(x_last).log_softmax(-1)

    best, best_kl = optimise_directions(readout, clean.x, clean.logprobs, 1.0, restarts=3,
                                        steps=150, lr=0.1, gen=g)
    assert (best @ u).abs().min() > 0.99
    # the KL of the found direction equals the sweep's KL along ±u at the same length
    along_u = sweep(subject, clean, "resid_pre.0", (best @ u).sign()[:, None, None] * u,
                    torch.tensor([1.0])).kl[:, 0, 0]
    assert torch.allclose(best_kl, along_u, atol=1e-5)
    # cosine with a dictionary that contains u: ~1, against a random-direction control
    dictionary = torch.cat([unit(torch.randn(40, d, generator=g)), u[None]])
    assert max_abs_cos(best, dictionary).min() > 0.99
    assert max_abs_cos(iso[:, 0], dictionary).max() < 0.9


def test_optimisation_refuses_remote_subjects():
    from mi_ideas.errors import UsageError

    subject = PlantedSubject()
    subject.remote = True
    with pytest.raises(UsageError, match="remote"):
        readout_for(subject, None, "resid_pre.0")


def test_crossing_t_interpolates_and_censors():
    steps = torch.tensor([0.0, 1.0, 2.0, 3.0])
    kl = torch.tensor([[0.0, 0.05, 0.15, 0.3], [0.0, 0.01, 0.02, 0.03], [0.0, 0.2, 0.3, 0.4]])
    t = A.crossing_t(kl, steps, 0.1)
    assert t[0] == pytest.approx(1.5) and math.isinf(t[1]) and t[2] == pytest.approx(0.5)
    s = A.summary(t)
    assert s["censored_frac"] == pytest.approx(1 / 3) and s["median"] == pytest.approx(1.5)


# -- the zoo ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo():
    from mi_ideas import load_dictionary
    from mi_ideas.dictionaries import site_of
    from mi_ideas import load_subject

    subject = load_subject("zoo:stories-gpt2")
    sae = load_dictionary("zoo:stories-gpt2-resid2-topk", subject)
    return subject, sae, site_of(sae)


def test_sae_error_direction_at_its_own_length_splices_in_the_reconstruction(zoo):
    from mi_ideas.subject import Intervention
    from mi_ideas_plugins.plateaus.common.directions import Pool
    from mi_ideas_plugins.plateaus.sensitive_directions.families import (
        family_directions, reconstruction)

    subject, sae, site = zoo
    torch.set_num_threads(1)
    batch = subject.tokenize(["Once upon a time, there was a kind man named Oliver.",
                              "Mia and Leo went to the farm. They fed the",
                              "One cloudy afternoon, the little dog ran to"], max_length=10)
    clean = clean_run(subject, batch, site)
    x = clean.x.float()
    x_hat = sae.decode(sae.encode(x)).detach()
    assert torch.allclose(reconstruction(sae, x), x_hat)
    d = family_directions("dir_sae_error", x, Pool.fit(torch.randn(50, x.shape[1])), 8, None,
                          sae=sae, freq=None)
    err = (x - x_hat).norm(dim=-1)
    assert d.shape == (3, 1, x.shape[1]) and err.min() > 0.1
    via_sweep = sweep(subject, clean, site, d * err[:, None, None], torch.tensor([1.0])).kl[:, 0, 0]
    # the direct splice: x replaced by the SAE's reconstruction, full forward
    lp = subject.forward(batch, logits=True, interventions=[
        Intervention(site, "replace", x_hat, positions="last")]).logits[:, -1].log_softmax(-1)
    direct = (clean.logprobs.exp() * (clean.logprobs - lp)).sum(-1)
    assert via_sweep.max() > 1e-4                      # the splice really changes the output
    assert torch.allclose(via_sweep, direct, atol=1e-5)
    # the differentiable read-out used by optimise=true reproduces the same numbers
    with torch.no_grad():
        lp_r = readout_for(subject, batch, site)(x_hat)
    assert torch.allclose((clean.logprobs.exp() * (clean.logprobs - lp_r)).sum(-1), direct,
                          atol=1e-5)


def test_default_config_end_to_end(mi_ideas_host, run_idea):
    assert mi_ideas_host.plugin_of("sensitive-directions").name == "plateaus"
    record = run_idea("sensitive-directions")
    assert record.provenance.status == "complete"
    r = record.result
    m = r.metrics
    assert set(m) == set(r.definitions)
    assert set(r.figures) == {"kl_curves", "sensitivity"}
    assert {"sweep", "summary"} <= set(r.artifacts)
    assert m["n_dead_latents"] > 0 and "dir_sae_dead.t_cross_median" in m
    fams = r.details["families"]
    # radial=project (the default): no family but the SAE error keeps a component along x
    for f in fams:
        if f != "dir_sae_error":
            assert abs(m[f"{f}.cos_x_mean"]) < 0.05 and m[f"{f}.cos_x_std"] < 1e-4, f
    # target paths used as directions point at the pool mean before projection
    assert m["toward_real.cos_x_raw_mean"] < -0.3 and m["toward_cov_sample.cos_x_raw_mean"] < -0.3
    # the pool is matched to x and deduplicated: no copy of a reference, no duplicate
    assert m["n_pool_tokens"] >= 2 * 128 and m["n_pool_duplicates_dropped"] > 0
    # The headline answer is derived from its paired test, whatever the zoo says.
    p = m["sae_vs_baseline.wilcoxon_p"]
    assert (m["sae_more_sensitive"] == 0.0) == (p >= 0.05)
    assert m["sae_vs_baseline.ratio_ci_low"] <= m["sae_vs_baseline.ratio"] \
        <= m["sae_vs_baseline.ratio_ci_high"]
    assert r.details["answer"].startswith("No difference") == (p >= 0.05)
    # Gurnee: splicing x_hat is exactly the dir_sae_error family at its own length
    assert m["splice_kl_median"] == pytest.approx(m["dir_sae_error.error_matched_kl_median"])
    kl = record.load_artifact("sweep")
    assert kl["kl.toward_real"].shape == (24, 8, 22) and kl["kl.dir_sae_error"].shape == (24, 1, 22)
    assert kl["kl.toward_real"][..., 0].abs().max() < 1e-5  # step 0 is the clean run
