"""Limits of the plateau family: memory estimated before anything is allocated, and config
bounds whose messages give the numbers.

- The estimate of each idea's default config is small (< 2 GiB), covers the largest
  tensor the run builds, and is at least a third of the peak RSS increase measured on a
  small real run (in a fresh process, after a warm-up run).
- Each idea's maximum config (every bounded field at its bound) is refused by the memory
  check before the run directory exists, with the estimate in GiB and the fields to lower.
- Each cross-field check prints the numbers involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

IDEAS = ("activation-plateaus", "discrete-output-states", "sensitive-directions")
GiB = 2**30


@pytest.fixture(scope="module")
def subject():
    from mi_ideas import load_subject

    return load_subject("zoo:stories-gpt2")


def _cls(idea):
    from mi_ideas.host import Host

    return Host().get_idea(idea)


def _total(items) -> int:
    return sum(i.bytes for i in items)


def _estimate(idea: str, subject, config: dict | None = None, data: str | None = "default"):
    """The items the host gets: with the idea's default dataset when the estimate takes one."""
    import inspect

    from mi_ideas import load_dataset

    cls = _cls(idea)
    cfg = cls.Config(**(config or {}))
    if "dataset" not in inspect.signature(cls.estimate_memory).parameters:
        return cls.estimate_memory(cfg, subject)
    dataset = None if data is None else load_dataset(cls.default_data if data == "default"
                                                     else data)
    return cls.estimate_memory(cfg, subject, dataset=dataset)


def max_config(idea: str) -> dict:
    """Every numeric field with an upper bound (``le``) at that bound."""
    out = {}
    for name, info in _cls(idea).Config.model_fields.items():
        if info.annotation not in (int, float):
            continue
        for meta in info.metadata:
            if getattr(meta, "le", None) is not None:
                out[name] = meta.le
    return out


# -- estimates against what a run really allocates ----------------------------------------


def test_default_estimates_are_small_and_cover_the_largest_tensor(subject):
    d, vocab = subject.d_model, subject.d_vocab
    # The largest tensor each default run builds: the logits of one batched sweep forward
    # (all positions of rows_per_forward rows; prompts of 10 tokens, and the 15-token
    # prompts of template:person_adjective for discrete-output-states), and for
    # sensitive-directions also the float64 copy of its pool (200 stories, positions 1-9).
    largest = {
        "activation-plateaus": 1024 * 10 * vocab * 4,
        "discrete-output-states": 512 * 15 * vocab * 4,
        "sensitive-directions": max(512 * 10 * vocab * 4, 200 * 9 * d * 8),
    }
    for idea in IDEAS:
        for data in ("default", None):  # with the run's dataset, and without one
            t = time.perf_counter()
            items = _estimate(idea, subject, data=data)
            # A guard that the estimate computes nothing (a sweep takes minutes), not a
            # speed goal: generous, so a busy CI machine does not fail it.
            assert time.perf_counter() - t < 5.0
            total = _total(items)
            assert largest[idea] <= total < 2 * GiB, (idea, data, total)
            assert all(i.what and i.bytes >= 0 for i in items)


def test_discrete_output_states_estimate_reads_the_prompts_off_the_dataset(subject):
    """96 prompts of 15 tokens (template:person_adjective) against 800 of 34
    (template:furniture_grid): the forward of all prompts scales with both."""
    small = _estimate("discrete-output-states", subject)
    big = _estimate("discrete-output-states", subject, {"rows_per_forward": 64},
                    data="template:furniture_grid")
    forward = [i for i in big if "one forward of 256 prompts" in i.what]
    assert forward and "34 tokens" in forward[0].what  # max_prompts = 256 of the 800
    assert any("96 prompts" in i.what and "15 tokens" in i.what for i in small)
    assert _total(small) < _total(_estimate("discrete-output-states", subject, data=None))


MEASURE = r"""
import json, sys
import mi_ideas
from mi_ideas.host import Host

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

idea, warm, config, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
host = Host()
mi_ideas.run(idea, out=out, quiet=True, host=host, **warm)   # imports, thread pools, caches
with open("/proc/self/clear_refs", "w") as f:   # reset the peak RSS (VmHWM) to the current
    f.write("5")
before = status("VmRSS")
r = mi_ideas.run(idea, out=out, quiet=True, host=host, **config)
print(json.dumps({"measured": status("VmHWM") - before,
                  "estimate": r.provenance.model_dump()["memory_estimate_bytes"]}))
"""

# (warm-up config, measured config): the measured runs are a few seconds each.
SMALL_RUNS = {
    "activation-plateaus": (
        dict(n_prompts=4, n_pool=40, n_steps=5, layers=[1],
             families=["toward_real", "toward_sae_synthetic"], rows_per_forward=64),
        dict(n_prompts=16, n_pool=100, n_steps=40,
             families=["toward_real", "toward_real_arc", "dir_isotropic"],
             layers=[], steering=False, sae_reconstruction=False, reinit_control=False,
             compare_bases=False)),
    "discrete-output-states": (
        dict(k_max=13, kmeans_restarts=2, gap_references=2, probe_sites=["resid_post.1"],
             probe_shuffles=1, n_pairs=8, n_steps=5, rows_per_forward=64),
        dict(kmeans_restarts=2, gap_references=2, probe_shuffles=1)),
    "sensitive-directions": (
        dict(n_prompts=4, n_paths=2, n_steps=6, pool_stories=40, rows_per_forward=64),
        dict(n_prompts=16, n_paths=4, pool_stories=100)),
}


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("idea", IDEAS)
def test_estimate_bounds_the_measured_peak(idea, tmp_path):
    """The estimate is never far below the measured peak RSS increase (the side that
    matters: an under-estimate lets a config through that does not fit). No upper check:
    after the warm-up run the allocator often reuses memory it already holds, so the RSS
    increase can be a small fraction of what the run allocates (seen: 20 MiB for a
    259 MiB estimate on a clean CI machine); the estimate's coverage of the largest tensor
    is checked on its own above."""
    warm, config = SMALL_RUNS[idea]
    # a fresh harvest cache: a harvest other tests left behind would make the run skip the
    # very allocation being measured
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               MI_IDEAS_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", MEASURE, idea, json.dumps(warm), json.dumps(config),
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    measured, estimate = got["measured"], got["estimate"]
    assert estimate is not None and measured > 0
    assert measured <= 3 * estimate, (idea, measured / 2**20, estimate / 2**20)


# -- the maximum configs are refused before anything is allocated or written --------------


@pytest.mark.parametrize("idea", IDEAS)
def test_maximum_config_is_refused_instantly_with_the_estimate(idea, tmp_path, monkeypatch,
                                                               subject):
    import mi_ideas
    from mi_ideas.errors import ConfigError, UsageError

    # A fixed budget, so the test does not depend on this machine's RAM; each maximum is
    # far above it (the sweep engine holds one chunk of path points, not all of them, so
    # the maxima are now set by rows_per_forward and the per-row read-outs).
    monkeypatch.setenv("MI_IDEAS_MEMORY_BUDGET", "4GB")
    config = max_config(idea)
    assert {"rows_per_forward", "n_steps"} <= set(config)
    items = _estimate(idea, subject, config)  # what the host computes
    total = _total(items)
    assert total > 2 * 4e9
    out = tmp_path / "runs"
    with pytest.raises(UsageError):  # once untimed: the first call imports SAELens
        mi_ideas.run(idea, out=out, quiet=True, **config)
    t = time.perf_counter()
    with pytest.raises(UsageError) as err:
        mi_ideas.run(idea, out=out, quiet=True, **config)
    elapsed = time.perf_counter() - t
    assert not isinstance(err.value, ConfigError)  # the config itself is valid
    message = str(err.value)
    assert "GiB" in message and "over the memory budget" in message
    assert f"{total / GiB:.1f} GiB" in message or f"{total / 2**40:.1f} TiB" in message
    lower = message.split("Lower ")[1].split(", or raise")[0]
    largest = max(items, key=lambda i: i.bytes)  # the fields to lower include its own
    assert set(largest.fields) & set(config) <= set(lower.split(", ")), (lower, largest)
    assert {"rows_per_forward", "n_steps"} & set(lower.split(", "))
    assert not out.exists()  # nothing written
    assert elapsed < 30.0  # inputs load, no run starts (a guard, not a speed goal)


def test_the_reported_activation_plateaus_config_is_refused(tmp_path, monkeypatch):
    """n_prompts, n_steps, n_pool, n_paths at their bounds used to run 50 s and then fail
    allocating 26,214,400,000 bytes (the path points of one sweep). The engine now builds
    one chunk of points at a time; what still scales with these fields (every row's
    read-outs and their statistics) is over the budget, and is refused before work."""
    import mi_ideas
    from mi_ideas.errors import UsageError

    monkeypatch.setenv("MI_IDEAS_MEMORY_BUDGET", "16GB")
    t = time.perf_counter()
    with pytest.raises(UsageError, match=r"need about \d+\.\d GiB.*read-outs.*Lower "
                                         r"n_paths, n_prompts, n_steps"):
        mi_ideas.run("activation-plateaus", out=tmp_path / "runs", quiet=True,
                     n_prompts=2000, n_steps=400, n_pool=20000, n_paths=64)
    assert time.perf_counter() - t < 30.0  # refused before any sweep (a guard, generous)
    assert not (tmp_path / "runs").exists()


def test_estimates_scale_with_their_fields(subject):
    """Each field named in the refusal really moves the estimate."""
    cls = _cls("activation-plateaus")
    base = _total(cls.estimate_memory(cls.Config(), subject))
    big = _total(cls.estimate_memory(cls.Config(n_prompts=400, n_paths=16, n_steps=200),
                                     subject))
    # the read-outs (KL, L2, JS, TV) of 400 x 16 x 200 rows in each of the 17 sweeps of
    # the default families (6 relative, 11 absolute)
    assert big >= 400 * 16 * 200 * 17 * 4 * 4 and big > 3 * base
    cls = _cls("sensitive-directions")
    plain = _total(cls.estimate_memory(cls.Config(), subject))
    opt = _total(cls.estimate_memory(cls.Config(optimise=True, opt_restarts=64, n_prompts=512),
                                     subject))
    assert opt > 4 * plain
    cls = _cls("discrete-output-states")
    hel = _total(cls.estimate_memory(cls.Config(max_prompts=4096), subject))
    js = _total(cls.estimate_memory(cls.Config(max_prompts=4096, representation="js"), subject))
    assert js > hel + 64 * 4096 * subject.d_vocab * 8


# -- bounds and cross-field checks, each message with its numbers -------------------------


def _config_error(idea: str, **values) -> str:
    from mi_ideas.config import build_config
    from mi_ideas.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_config(_cls(idea).Config, values=values, idea=idea)
    return str(err.value)


def test_every_size_field_is_bounded():
    sizes = {
        "activation-plateaus": {"n_prompts", "n_pool", "prompt_tokens", "n_paths", "n_steps",
                                "rows_per_forward"},
        "discrete-output-states": {"max_prompts", "k_min", "k_max", "kmeans_restarts",
                                   "gap_references", "stability_resamples", "probe_folds",
                                   "probe_shuffles", "n_pairs", "n_steps", "rows_per_forward"},
        "sensitive-directions": {"n_prompts", "prompt_tokens", "pool_stories", "n_paths",
                                 "n_steps", "opt_restarts", "opt_steps", "rows_per_forward"},
    }
    for idea, fields in sizes.items():
        assert fields <= set(max_config(idea)), (idea, fields - set(max_config(idea)))
        for field in fields:
            message = _config_error(idea, **{field: 10**7})
            assert field in message and "less than or equal to" in message


def test_discrete_output_states_bounds():
    assert "less than or equal to 256" in _config_error("discrete-output-states", k_min=50000)
    assert "k_min=20 exceeds k_max=10" in _config_error("discrete-output-states", k_min=20,
                                                        k_max=10)
    assert "k_max=60 exceeds max_prompts - 1 = 39" in _config_error(
        "discrete-output-states", k_max=60, max_prompts=40)
    assert "probe_folds=12 exceeds max_prompts=10" in _config_error(
        "discrete-output-states", max_prompts=10, k_max=8, probe_folds=12)


def test_discrete_output_states_k_min_beyond_the_dataset_fails_before_any_forward(tmp_path):
    import mi_ideas
    from mi_ideas.errors import RunError

    # template:person_adjective has 96 prompts: k_min = 100 is a valid config (max_prompts
    # is 256) that no clustering of these prompts can satisfy.
    with pytest.raises(RunError, match=r"k_min=100 exceeds the 96 prompts .* minus one \(95\)"):
        mi_ideas.run("discrete-output-states", out=tmp_path, quiet=True, k_min=100, k_max=100)


def test_sensitive_directions_cross_field_messages_give_numbers(tmp_path):
    import mi_ideas
    from mi_ideas.errors import RunError

    # n_steps at its bound with the default t_max_rel: the first grid step is 2 / 200
    message = _config_error("sensitive-directions", n_steps=200)
    assert "small_t_rel=0.02 must be below the first grid step t_max_rel / n_steps = 2 / 200 " \
           "= 0.01" in message
    message = _config_error("sensitive-directions", families=["toward_real", "dir_cov"])
    assert "sae_family='dir_sae_latent' is not in families (toward_real, dir_cov)" in message
    message = _config_error("sensitive-directions",
                            families=["toward_real", "toward_real", "dir_cov"],
                            sae_family="toward_real")
    assert "families lists toward_real twice" in message
    message = _config_error("sensitive-directions", families=["isotropic", "dir_cov"])
    assert "family 'isotropic' was renamed: use dir_isotropic" in message
    with pytest.raises(RunError, match="n_paths=200 exceeds the 128 principal components"):
        mi_ideas.run("sensitive-directions", out=tmp_path, quiet=True, n_paths=200)


def test_activation_plateaus_bounds(tmp_path):
    import mi_ideas
    from mi_ideas.errors import RunError

    assert "layers lists a layer twice: [1, 1]" in _config_error("activation-plateaus",
                                                                 layers=[1, 1])
    assert "block indices >= 0" in _config_error("activation-plateaus", layers=[-1])
    # n_prompts vs n_pool vs the dataset (default zoo:stories, 1000 texts): checked before
    # any forward
    with pytest.raises(RunError, match=r"n_prompts=600 and n_pool=500 need at least n_prompts "
                                       r"\+ n_pool = 1100 distinct texts, .* has 1000"):
        mi_ideas.run("activation-plateaus", out=tmp_path, quiet=True, n_prompts=600,
                     n_pool=500)
    # ... and after deduplication (the 1000 stories have fewer than 700 distinct 10-token
    # openings: 682 for corpus v2), still before any forward; distinct + duplicates = 1000
    with pytest.raises(RunError, match=r"need 700 distinct prompts of 10 tokens, but the "
                                       r"dataset .* has only \d+ \(\d+ exact duplicates") as exc:
        mi_ideas.run("activation-plateaus", out=tmp_path, quiet=True, n_prompts=300,
                     n_pool=400)
    import re

    distinct, dups = map(int, re.search(r"has only (\d+) \((\d+) exact", str(exc.value)).groups())
    assert distinct + dups == 1000 and distinct < 700
