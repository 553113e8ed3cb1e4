"""The example plugin's own test, using the fixtures mi-ideas ships for plugin authors."""

import pytest

import mi_ideas_example


def test_listed_by_the_installed_host(mi_ideas_host):
    assert "example-random-directions" in mi_ideas_host.ideas
    assert mi_ideas_host.plugin_of("example-random-directions").distribution == "mi-ideas-example-plugin"


@pytest.mark.parametrize("d", [16, 256])
def test_mean_cosine_matches_theory(run_idea, d):
    record = run_idea("example-random-directions", d=d, n=400)
    m = record.result.metrics
    assert m["mean_abs_cos"] == pytest.approx(m["theory_mean_abs_cos"], rel=0.05)
    assert record.provenance.status == "complete"


def test_registered_by_hand(register_plugin, run_idea, mi_ideas_host):
    # Also works without the entry point, e.g. for a plugin module under development.
    mi_ideas_host.unregister_plugin("example")
    assert "example-random-directions" not in mi_ideas_host.ideas
    register_plugin(mi_ideas_example, name="example-by-hand")
    assert run_idea("example-random-directions", d=8, n=50).result.metrics["max_abs_cos"] <= 1.0


def test_a_config_that_would_not_fit_in_memory_is_refused_up_front(tmp_path):
    import pytest

    import mi_ideas
    from mi_ideas.errors import UsageError

    with pytest.raises(UsageError, match=r"about 14\.9 GiB.*Lower n"):
        mi_ideas.run("example-random-directions", n=20000, memory_budget="8GB", out=tmp_path,
                     quiet=True)
    assert not (tmp_path / "example-random-directions").exists()
