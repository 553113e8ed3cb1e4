"""Every remote-capable idea, run through the loopback NDIF server, equals the local run."""

from __future__ import annotations

import pytest

# Small configs, one per remote-capable built-in idea; a new remote-capable idea must add one.
SMALL = {
    "activation-plateaus": dict(
        n_prompts=6, n_pool=40, n_steps=8, families=["toward_real", "dir_isotropic"], layers=[1],
        steering=True, sae_reconstruction=True, reinit_control=False, rows_per_forward=64),
    "discrete-output-states": dict(
        k_max=13, kmeans_restarts=2, gap_references=2, probe_sites=["resid_post.1"],
        probe_shuffles=1, n_pairs=8, n_steps=5),
    "sensitive-directions": dict(n_prompts=4, n_paths=2, n_steps=6, pool_stories=40),
    "saes-vs-clustering": dict(sizes=[8], sae_steps=40, kmeans_iters=5, n_texts=40,
                               n_eval_texts=8, ce_texts=4),
    "transcoder-clustering": dict(sources=["model"], model_texts=16, model_max_length=24,
                                  top_contexts=5),
    "steering-vs-prompting": dict(concepts=["park"], n_select=3, n_eval=3, coefficients=[1.0],
                                  max_new_tokens=6, vector_texts=8, n_boot=200),
    "linear-representation": dict(
        grid={"slots": {"texture": ["soft", "hard", "rough"], "colour": ["red", "blue"],
                        "furniture": ["chair", "bed"]}, "contexts": {"name": ["Mia", "Tom"]}},
        ladder={"slots": {"intensity": ["slightly", "quite", "very"], "emotion": ["happy", "sad"]},
                "contexts": {"name": ["Mia", "Tom"]}},
        sites=["resid_post.1"], position="colour", n_shuffles=2, reinit_control=False),
    "sparsify-model": dict(layers=[1], lambdas=[1.0], steps=20, toy=False, reinit_control=False,
                           data="zoo:stories:30"),
}

#: Wall-clock metrics: their keys must match, their values cannot.
TIMINGS = (".train_seconds", ".time_ratio")


def _remote_ideas():
    from mi_ideas.host import Host

    return sorted(n for n, cls in Host().ideas.items()
                  if cls.remote and cls.uses_model and cls.__module__.startswith("mi_ideas_plugins"))


def test_every_remote_capable_builtin_idea_has_a_remote_test():
    assert set(_remote_ideas()) <= set(SMALL)


def _rel(metric: str) -> float:
    """Relative tolerance of a metric between a remote and a local run: 1e-4, except for
    small-step curvatures (KL(t_s) / t_s^2, KL ~ 3e-5 nats), where the float32 rounding of
    the local last-position engine and of the remote full forward differs by ~1e-6 nats in
    KL, i.e. ~1e-4 relative (tests/test_sweep_engine.py checks the two engines agree)."""
    return 1e-3 if "curvature" in metric else 1e-4


@pytest.mark.parametrize("idea", sorted(SMALL))
def test_remote_run_equals_local(idea, tmp_path, ndif_server, ndif_config):
    import mi_ideas

    ndif_config.APP.REMOTE_LOGGING = False
    local = mi_ideas.run(idea, quiet=True, out=tmp_path, **SMALL[idea])
    before = ndif_server.stats()["requests"]
    remote = mi_ideas.run(idea, remote=ndif_server.url, quiet=True, out=tmp_path, **SMALL[idea])
    assert ndif_server.stats()["requests"] > before  # the model calls went to the server
    assert remote.provenance.model["remote"] == ndif_server.url
    assert remote.metrics.keys() == local.metrics.keys()
    for key, value in local.metrics.items():
        if not key.endswith(TIMINGS):
            assert remote.metrics[key] == pytest.approx(value, rel=_rel(key), abs=1e-5,
                                                        nan_ok=True), key


#: Metrics a remote run cannot compute (the re-initialised control needs the weights here).
LOCAL_ONLY = {
    "activation-plateaus": {f"reinit.toward_real.{k}" for k in (
        "onset10_js_median", "onset50_js_median", "loglog_slope_js_median", "step_like_fraction",
        "sharpness_median", "sharpness_kl_median", "n_excluded", "n_excluded_l2")} | {
        f"cmp.onset50.toward_real.vs.reinit.{k}" for k in (
            "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "n_units")},
    "linear-representation": {
        f"{pre}resid_post.{L}.{k}" for L in range(4) for pre, keys in (
            ("reinit.", ("additive_r2", "loco_cosine", "loco_nn_accuracy", "intensity.spearman",
                         "intensity.diff_cosine", "intensity.norm_ratio", "share.texture",
                         "share.colour", "share.furniture")),
            ("cmp.", [f"{what}.vs_reinit.{stat}" for what in ("additive_r2", "intensity.spearman")
                      for stat in ("mean_diff", "ci_low", "ci_high", "p_wilcoxon", "n_units")]))
        for k in keys},
}
#: The same, by prefix (ideas whose control has a metric per layer and lambda).
LOCAL_ONLY_PREFIX = {"sparsify-model": "reinit."}


@pytest.mark.parametrize("idea", sorted(SMALL))
def test_default_config_remote_equals_local(idea, tmp_path, ndif_server, ndif_config):
    """The default config (no overrides) gives the same numbers through the server: every
    sub-experiment draws from its own generator, so the local-only control, skipped
    remotely, shifts nothing else."""
    import mi_ideas

    ndif_config.APP.REMOTE_LOGGING = False
    local = mi_ideas.run(idea, quiet=True, out=tmp_path)
    before = ndif_server.stats()["requests"]
    remote = mi_ideas.run(idea, remote=ndif_server.url, quiet=True, out=tmp_path)
    assert ndif_server.stats()["requests"] > before
    local_only = LOCAL_ONLY.get(idea, set())
    if idea in LOCAL_ONLY_PREFIX:
        local_only = {k for k in local.metrics if k.startswith(LOCAL_ONLY_PREFIX[idea])}
        assert local_only  # the control ran locally
    assert local_only <= local.metrics.keys()
    assert remote.metrics.keys() == local.metrics.keys() - local_only
    for key, value in remote.metrics.items():
        if not key.endswith(TIMINGS):
            assert value == pytest.approx(local.metrics[key], rel=_rel(key), abs=1e-5,
                                          nan_ok=True), key
