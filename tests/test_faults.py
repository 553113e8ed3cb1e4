"""Faults a long run meets: its process killed, a second writer, a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mi_ideas.errors import RunError, UsageError
from mi_ideas.runs import execute, load_run, resume

ROOT = Path(__file__).resolve().parents[1]

# Runs toy-steps in a child process (the toy plugin registered by hand, as conftest does).
CHILD = """
import signal, sys
# A child of a background shell inherits SIGINT ignored; restore Python's default handler so
# the test sends the Ctrl-C a user would.
signal.signal(signal.SIGINT, signal.default_int_handler)
from mi_ideas.host import Host, set_host
from tests import toy_plugin
import mi_ideas
host = Host()
host.register_plugin(toy_plugin, name="toy")
set_host(host)
mi_ideas.run("toy-steps", n_steps=int(sys.argv[2]), sleep_s=float(sys.argv[3]), seed=7,
             out=sys.argv[1], quiet=True)
"""


def _start_child(out: Path, n_steps: int, sleep_s: float) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(n_steps), str(sleep_s)],
                            cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = list((out / "toy-steps").glob("*/checkpoints/progress.safetensors"))
        if runs:
            return proc, runs[0].parents[1]
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the child run never checkpointed")


def test_kill_9_mid_run_then_resume_gives_the_clean_result(toy_host, tmp_path):
    clean = execute("toy-steps", config={"n_steps": 6}, seed=7, out=tmp_path / "clean",
                    host=toy_host, quiet=True)
    proc, run_dir = _start_child(tmp_path / "killed", n_steps=6, sleep_s=0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = load_run(run_dir)
    assert record.provenance.status == "running"  # nobody could write anything else ...
    assert record.status == "stale"                # ... but readers see the writer is gone
    resumed = resume(run_dir, host=toy_host, quiet=True)
    assert resumed.provenance.status == "complete" and resumed.status == "complete"
    assert resumed.result.metrics == clean.result.metrics
    attempts = resumed.provenance.model_dump()["attempts"]
    assert attempts[0]["status"] == "stale" and "died" in attempts[0]["error"]


def test_resume_refuses_a_run_that_is_still_live_and_names_its_writer(toy_host, tmp_path):
    proc, run_dir = _start_child(tmp_path, n_steps=40, sleep_s=0.5)
    try:
        assert load_run(run_dir).status == "running"
        with pytest.raises(UsageError, match=rf"is live: process {proc.pid} on "):
            resume(run_dir, host=toy_host, quiet=True)
    finally:
        proc.kill()
        proc.wait()


def test_sigint_marks_the_run_interrupted_and_it_resumes(toy_host, tmp_path):
    # 12 steps of 0.5 s: a 6 s window for the signal after the first checkpoint, so a busy
    # machine that is slow to notice the checkpoint still interrupts a running run.
    proc, run_dir = _start_child(tmp_path, n_steps=12, sleep_s=0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert load_run(run_dir).provenance.status == "interrupted"
    assert resume(run_dir, host=toy_host, quiet=True).result.metrics["total"] == sum(range(12))


def test_a_full_disk_leaves_nothing_half_written_and_a_clear_failure(toy_host, tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 10)  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(RunError, match="No space left on device"):
        execute("toy-steps", config={"n_steps": 3}, out=tmp_path, host=toy_host, quiet=True)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    (run_dir,) = (tmp_path / "toy-steps").iterdir()
    record = load_run(run_dir)
    assert record.provenance.status == "failed" and "No space left" in record.provenance.error
    # no file under a final name holds the partial bytes, and no temp file is left behind
    assert not (run_dir / "checkpoints" / "progress.safetensors").exists()
    assert not [p for p in run_dir.rglob("*.tmp")]
    assert not (run_dir / "result.json").exists()
