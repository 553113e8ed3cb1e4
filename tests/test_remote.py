"""Subjects through the loopback NDIF server equal the local run; one request per batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mi_ideas.subject import Intervention, StatsRequest

PROMPTS = ["the cat was red", "a dog ran to the big house", "one two"]


def test_remote_harvest_interventions_and_stats_equal_local(local, remote, ndif_server):
    batch = local.tokenize(PROMPTS)
    v = torch.randn(local.d_model, generator=torch.Generator().manual_seed(0))
    ivs = [Intervention("resid_pre.1", "add", v, "last"), Intervention("mlp_out.0", "ablate")]
    ref = local.forward(batch, logits=True).logits[:, -1].log_softmax(-1)
    stats = StatsRequest(kl_reference=ref, topk=3, final_norm=True, entropy=True)
    before = ndif_server.stats()["requests"]
    got = remote.forward(batch, read=local.sites, interventions=ivs, stats=stats)
    assert ndif_server.stats()["requests"] == before + 1  # one request for the whole batch
    want = local.forward(batch, read=local.sites, interventions=ivs, stats=stats)
    for site in local.sites:
        assert torch.allclose(got.activations[site], want.activations[site], atol=1e-5), site
    for key in want.stats:
        assert torch.allclose(got.stats[key].float(), want.stats[key].float(), atol=1e-5), key
    assert remote.remote and got.logits is None  # only the statistics came back


def test_rehearsal_equals_local(ndif_model_dir, local):
    from mi_ideas import load_subject

    rehearsal = load_subject(f"hf:{ndif_model_dir}", remote="local")
    batch = local.tokenize(PROMPTS)
    a = rehearsal.forward(batch, read=["resid_post.1"], logits=True)
    b = local.forward(batch, read=["resid_post.1"], logits=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.activations["resid_post.1"], b.activations["resid_post.1"], atol=1e-5)


def test_remote_parameters_equal_local_in_one_request(local, remote, ndif_server, ndif_model_dir):
    """Subject.parameters: a remote read (one trace for all names, on a server without this
    package) and the rehearsal return the local tensors exactly; a wrong name is refused
    before any request, naming it."""
    from mi_ideas import load_subject
    from mi_ideas.errors import UsageError

    assert ndif_server.can_import("mi_ideas")["importable"] is False
    names = ["transformer.h.1.mlp.c_fc.weight", "transformer.h.0.ln_2.bias", "lm_head.weight"]
    want = local.parameters(names)
    before = ndif_server.stats()["requests"]
    got = remote.parameters(names)
    assert ndif_server.stats()["requests"] == before + 1
    reh = load_subject(f"hf:{ndif_model_dir}", remote="local")
    rehearsal = reh.parameters(names)
    for name in names:
        assert torch.equal(got[name], want[name]) and torch.equal(rehearsal[name], want[name]), name
    for subj, read in ((local, want), (reh, rehearsal)):  # copies: writing to them leaves
        read[names[0]].zero_()                            # the models' weights alone
        assert torch.equal(subj.parameters(names[:1])[names[0]], got[names[0]])
    assert not torch.equal(want[names[0]], local.parameters(["transformer.h.0.mlp.c_fc.weight"])[
        "transformer.h.0.mlp.c_fc.weight"])  # the names select different tensors
    with pytest.raises(UsageError, match=r"no parameter or buffer \['transformer.h.9.mlp.c_fc.weight'\]"):
        remote.parameters(["transformer.h.9.mlp.c_fc.weight"])
    assert ndif_server.stats()["requests"] == before + 1


API_KEY = "sk-test-do-not-leak-42"


def _files_text(path):
    return "\n".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file()
                     and p.suffix in (".json", ".txt", ".html", ""))


def test_remote_run_equals_local_run_and_keeps_the_key_out_of_files(
        toy_host, ndif_model_dir, ndif_server, ndif_config, tmp_path, monkeypatch):
    import json

    import mi_ideas

    ndif_config.APP.REMOTE_LOGGING = False
    monkeypatch.setenv("NDIF_API_KEY", API_KEY)
    local = mi_ideas.run("toy-probe", model=f"hf:{ndif_model_dir}", out=tmp_path, quiet=True)
    before = ndif_server.stats()["requests"]
    remote = mi_ideas.run("toy-probe", model=f"hf:{ndif_model_dir}", remote=ndif_server.url,
                          out=tmp_path, quiet=True)
    stats = ndif_server.stats()
    # 4 prompts in batches of 2: per batch one logprobs request and one steered request
    assert stats["requests"] - before == 4
    assert remote.metrics["mean_kl"] == pytest.approx(local.metrics["mean_kl"], abs=1e-5)
    assert all(r["headers"].get("ndif-api-key") == API_KEY for r in stats["requests_log"][-4:])
    run_dir = tmp_path / "toy-probe"
    assert API_KEY not in _files_text(run_dir)
    prov = json.loads((Path(remote.run_dir) / "provenance.json").read_text())
    assert prov["model"]["remote"] == ndif_server.url


@pytest.mark.parametrize("mode,needle", [
    ("error", "failed while running the request"),
    ("401", "rejected the API key (HTTP 401)"),
    ("die_running", "was lost while it ran the request"),
])
def test_server_failures_fail_the_run_with_one_paragraph(
        toy_host, ndif_model_dir, ndif_server, ndif_config, tmp_path, capsys, mode, needle):
    import json

    from mi_ideas.cli import main

    ndif_config.APP.REMOTE_LOGGING = False
    ndif_server.set_mode(mode, description="RuntimeError: the GPU caught fire")
    rc = main(["run", "toy-probe", "--model", f"hf:{ndif_model_dir}", "--remote",
               ndif_server.url, "--out", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one paragraph
    (run_dir,) = (tmp_path / "toy-probe").iterdir()
    files = sorted(p.name for p in run_dir.rglob("*") if p.is_file())
    assert files == ["config.json", "provenance.json"]  # nothing half-written, no result
    assert json.loads((run_dir / "provenance.json").read_text())["status"] == "failed"


def test_unreachable_server_is_a_clear_error(toy_host, ndif_model_dir, tmp_path, ndif_config, capsys):
    import socket

    from mi_ideas.cli import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc = main(["run", "toy-probe", "--model", f"hf:{ndif_model_dir}", "--remote",
               f"http://127.0.0.1:{port}", "--out", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot reach the NDIF server" in err and "Traceback" not in err


def test_remote_on_an_idea_that_cannot_is_refused_before_work(toy_host, tmp_path, capsys):
    from mi_ideas.cli import main

    assert main(["run", "toy-echo", "--remote", "ndif", "--out", str(tmp_path)]) == 2
    assert "uses no model" in capsys.readouterr().err
    assert not (tmp_path / "toy-echo").exists()


def test_remote_status_reports_reachability_and_served_models(
        ndif_model_dir, ndif_server, ndif_config, capsys, remote):
    from mi_ideas.cli import main

    remote.forward("the cat", read=["resid_pre.0"])  # the server now runs the model
    assert main(["remote", "status", str(ndif_model_dir), "--url", ndif_server.url]) == 0
    out = capsys.readouterr().out
    assert "is reachable" in out and "is being served" in out
    assert main(["remote", "status", "/not/served", "--url", ndif_server.url]) == 1
    assert "is NOT being served" in capsys.readouterr().out
    assert main(["remote", "status", "--url", "http://127.0.0.1:9"]) == 1
    assert "is not reachable" in capsys.readouterr().out


# -- each remote fault: its own one-paragraph message naming the URL ---------------------------

#: What a message must not carry: a traceback, pydantic / JSON / httpx noise.
NOISE = ("Traceback", "ValidationError", "pydantic", "Invalid JSON", "json_invalid",
         "HTTPStatusError", "developer.mozilla.org", "{", "}")


def _assert_clean(message, url, needle):
    assert url in message, message
    assert needle in message, message
    assert "\n" not in message, message  # one paragraph
    for noise in NOISE:
        assert noise not in message, (noise, message)


def _inject(server, fault, monkeypatch):
    """Make the loopback server produce ``fault``; return the URL to use."""
    if fault == "wrong_path":
        return server.url + "/api"
    if fault == "stall":
        import nnsight.intervention.backends.remote as backend

        monkeypatch.setattr(backend, "_READ_TIMEOUT", 0.5)  # nnsight's is 600 s
        server.set_mode("stall", stall=2)
    elif fault.startswith("http_"):
        code = int(fault.partition("_")[2])
        server.set_mode("http", f"injected detail for {code}", code=code)
    else:
        server.set_mode(fault, description="RuntimeError: the GPU caught fire")
    return server.url


# (fault, what the message must say)
FAULTS = [
    ("shutdown_running", "closed the connection while it ran the request"),
    ("http_400", "as invalid (HTTP 400: injected detail for 400)"),
    ("http_404", "answered HTTP 404 to POST /request"),
    ("http_500", "(HTTP 500: injected detail for 500): a fault on the server's side"),
    ("http_503", "a fault on the server's side"),
    ("http_504", "timed out (HTTP 504: injected detail for 504)"),
    ("stall", "did not answer the request"),
    ("wrong_path", "refused the websocket subscription"),
    ("error", "failed while running the request"),
    ("401", "rejected the API key (HTTP 401)"),
]


@pytest.mark.parametrize("fault,needle", FAULTS, ids=[f for f, _ in FAULTS])
def test_each_remote_fault_raises_its_own_message(
        ndif_model_dir, ndif_server, ndif_config, monkeypatch, fault, needle):
    from mi_ideas import load_subject
    from mi_ideas.errors import RemoteRunError

    ndif_config.APP.REMOTE_LOGGING = False
    url = _inject(ndif_server, fault, monkeypatch)
    subject = load_subject(f"hf:{ndif_model_dir}", remote=url)
    with pytest.raises(RemoteRunError) as info:
        subject.forward("the cat", read=["resid_pre.0"])
    message = str(info.value)
    _assert_clean(message, url, needle)
    assert f"hf:{ndif_model_dir}" in message
    if fault == "stall":
        assert "within nnsight's 0.5 s read timeout (POST /request timed out)" in message
    if fault == "shutdown_running":
        assert ndif_server.wait_exit() == -15  # gone before the next test restarts it


RUN_FAULTS = [f for f in FAULTS if f[0] in ("shutdown_running", "http_400", "http_500",
                                             "stall")]


@pytest.mark.parametrize("fault,needle", RUN_FAULTS, ids=[f for f, _ in RUN_FAULTS])
def test_remote_faults_fail_the_run_with_their_message(
        toy_host, ndif_model_dir, ndif_server, ndif_config, tmp_path, monkeypatch,
        fault, needle):
    import json

    import mi_ideas
    from mi_ideas.errors import RunError

    ndif_config.APP.REMOTE_LOGGING = False
    url = _inject(ndif_server, fault, monkeypatch)
    with pytest.raises(RunError) as info:
        mi_ideas.run("toy-probe", model=f"hf:{ndif_model_dir}", remote=url, out=tmp_path,
                     quiet=True)
    _assert_clean(str(info.value), url, needle)
    run_dir = Path(info.value.run_dir)
    files = sorted(p.name for p in run_dir.rglob("*") if p.is_file())
    assert files == ["config.json", "provenance.json"]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["status"] == "failed" and prov["partial_artifacts"] == []
    _assert_clean(prov["error"], url, needle)
    if fault == "shutdown_running":
        assert ndif_server.wait_exit() == -15


def test_remote_status_tells_a_wrong_url_and_a_server_fault_from_unreachable(
        ndif_server, ndif_config, capsys):
    import mi_ideas.remote as remote
    from mi_ideas.cli import main

    wrong = ndif_server.url + "/api"
    assert main(["remote", "status", "--url", wrong]) == 1
    out = capsys.readouterr().out
    assert (f"The server at {wrong} is reachable but /status answered 404: not an NDIF "
            f"server at this URL, or the wrong path") in out
    assert "not reachable" not in out and "firewall" not in out
    info = remote.status(wrong)
    assert info["reachable"] is True and info["http_status"] == 404

    for code in (500, 503):
        ndif_server.set_status_answer(code, "the scheduler is down")
        assert main(["remote", "status", "/some/model", "--remote", ndif_server.url]) == 1
        out = capsys.readouterr().out
        assert (f"The server at {ndif_server.url} is reachable but /status answered {code} "
                f"(the scheduler is down): the server has an internal error") in out
        assert "not reachable" not in out and "being served" not in out
    ndif_server.set_status_answer(None)
    assert main(["remote", "status", "--url", ndif_server.url]) == 0
    assert "is reachable;" in capsys.readouterr().out
