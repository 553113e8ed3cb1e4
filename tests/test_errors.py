"""Every bad input a careless user gives gets one clear paragraph, never a traceback.

Each case below is fed to the command line; the test checks the exit code (2 for input
errors, 1 for run failures), that nothing but one ``mi-ideas: error:`` paragraph is printed,
and that the message names what was wrong. The table in ``docs/errors.md`` is generated
from these cases (``MI_IDEAS_WRITE_ERRORS_DOC=1 pytest tests/test_errors.py``) and this
test fails when the page and the code disagree, so the page cannot go stale.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mi_ideas.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"

HEADER = """# Errors

Every bad input below was fed to `mi-ideas` by `tests/test_errors.py`, which generated this
table and fails when it no longer matches what the code prints (`TMP` stands for a
temporary directory, `RUN` for a run directory's name). Input errors exit with 2, a run that fails after it started with 1;
none prints a traceback. A failed run's directory keeps `config.json` and `provenance.json`
(status `failed`, with the error and traceback) and whatever artifacts the idea had already
written, each complete (files are written atomically), never a `result.json`.

| input | exit | message |
|---|---|---|
"""


def _failed_run(tmp: Path, toy_host) -> Path:
    from mi_ideas.errors import RunError
    from mi_ideas.runs import execute

    with pytest.raises(RunError):
        execute("toy-fail", out=tmp / "runs", host=toy_host, quiet=True)
    (run_dir,) = (tmp / "runs" / "toy-fail").iterdir()
    return run_dir


def _crashed_probe_run(tmp: Path) -> Path:
    """A model-using run whose process died (provenance still says failed)."""
    import mi_ideas

    run_dir = Path(mi_ideas.run("toy-probe", model="zoo:stories-gpt2", out=tmp / "probe",
                                quiet=True).run_dir)
    prov = json.loads((run_dir / "provenance.json").read_text())
    prov["status"] = "failed"
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    return run_dir


def _tiny_neox(tmp: Path) -> Path:
    from tests.tiny_models import build_tiny

    return build_tiny("gpt_neox", tmp / "neox")


def _cases(tmp: Path, toy_host) -> list[tuple[str, list[str], int, str]]:
    """(what the user did, argv, exit code, a phrase the message must contain)."""
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp / "latin1.yaml").write_bytes("n: 3 # caf\xe9\n".encode("latin-1"))
    (tmp / "confdir").mkdir()
    failed = _crashed_probe_run(tmp)
    corrupt_prov = _failed_run(tmp / "p", toy_host)
    (corrupt_prov / "provenance.json").write_text('{"idea": "toy-fail", "seed": ')
    wrong_prov = _failed_run(tmp / "w", toy_host)
    prov = json.loads((wrong_prov / "provenance.json").read_text())
    prov["seed"] = "zero"
    (wrong_prov / "provenance.json").write_text(json.dumps(prov))
    import mi_ideas

    corrupt_result = Path(mi_ideas.run("toy-echo", out=tmp / "r", quiet=True).run_dir)
    (corrupt_result / "result.json").write_text('{"metrics": ')
    echo_run = Path(mi_ideas.run("toy-echo", out=tmp / "e", quiet=True).run_dir)
    (tmp / "norun").mkdir()
    out = ["--out", str(tmp / "runs")]
    return [
        ("`--sae zoo:nope` (no such dictionary)", ["run", "toy-dict", "--sae", "zoo:nope", *out], 2,
         "the zoo has no dictionary named 'nope'"),
        ("`--sae zoo:stories-gpt2` (a model, not a dictionary)",
         ["run", "toy-dict", "--sae", "zoo:stories-gpt2", *out], 2, "no dictionary named 'stories-gpt2'"),
        ("`--sae nope:x` (unknown prefix, not a directory)", ["run", "toy-dict", "--sae", "nope:x", *out],
         2, "has no known prefix"),
        ("`--model zoo:nope`", ["run", "toy-probe", "--model", "zoo:nope", *out], 2,
         "the zoo has no model named 'nope'"),
        ("`--model zoo:stories-gpt2-resid2-topk` (a dictionary, not a model)",
         ["run", "toy-probe", "--model", "zoo:stories-gpt2-resid2-topk", *out], 2, "dictionaries go to --sae"),
        ("`--model tl:zoo:nope`", ["run", "toy-probe", "--model", "tl:zoo:nope", *out], 2,
         "the zoo has no model named 'nope'"),
        ("`--model gpt2` (no prefix)", ["run", "toy-probe", "--model", "gpt2", *out], 2, "has no known prefix"),
        ("`resume RUN --model zoo:nope`", ["resume", str(failed), "--model", "zoo:nope"], 2,
         "the zoo has no model named 'nope'"),
        ("a `text:` data file that is not UTF-8",
         ["run", "toy-probe", "--model", "zoo:stories-gpt2", "--data", f"text:{tmp / 'latin1.txt'}", *out],
         2, "is not UTF-8"),
        ("a YAML config that is not UTF-8", ["run", "toy-echo", "--config", str(tmp / "latin1.yaml"), *out],
         2, "is not UTF-8 text"),
        ("`--config` naming a directory", ["run", "toy-echo", "--config", str(tmp / "confdir"), *out], 2,
         "is a directory"),
        ("`--set` of an unknown field", ["run", "toy-echo", "--set", "nn=3", *out], 2, "nn"),
        ("`resume` on a corrupt `provenance.json`", ["resume", str(corrupt_prov)], 2,
         "is corrupt (not valid JSON"),
        ("`resume` on a `provenance.json` with a wrong field", ["resume", str(wrong_prov)], 2,
         "seed: Input should be a valid integer"),
        ("`report` on a corrupt `result.json`", ["report", str(corrupt_result)], 2,
         "result.json' is corrupt"),
        ("a config over the memory budget", ["run", "toy-echo", "--set", "n=1000000000",
                                             "--memory-budget", "1GB", *out], 2,
         "over the memory budget of 953.7 MiB"),
        ("`--memory-budget lots`", ["run", "toy-echo", "--memory-budget", "lots", *out], 2, "not a size"),
        ("`--remote` on a TransformerLens model", ["run", "toy-probe", "--model", "tl:zoo:stories-gpt2",
                                                   "--remote", "local", *out], 2, "run locally only"),
        ("`--remote` on an idea that uses no model", ["run", "toy-echo", "--remote", "local", *out], 2,
         "uses no model"),
        ("`--preset` on an idea without presets", ["run", "toy-echo", "--preset", "quick", *out], 2,
         "it defines none"),
        ("`report` on a folder with no runs", ["report", str(tmp / "norun")], 2,
         "holds no run directories"),
        ("`report` comparing runs of different ideas", ["report", str(echo_run), str(failed)], 2,
         "different ideas"),
        ("`sweep --grid n` (no values)", ["sweep", "toy-echo", "--grid", "n", *out], 2,
         "--grid expects KEY=V1,V2"),
        ("`sweep` with a key in both `--grid` and `--set`",
         ["sweep", "toy-echo", "--grid", "n=1,2", "--set", "n=3", *out], 2, "both to --grid and --set"),
        ("`sweep --seeds a`", ["sweep", "toy-echo", "--grid", "n=1", "--seeds", "a", *out], 2,
         "--seeds expects integers"),
        ("a LayerNorm-removal schedule longer than the run",
         ["run", "layernorm-removal", "--set", "steps=20", "--set", "bos_step=25", *out], 2,
         "but the runs have only steps=20"),
        ("`layernorm-removal` on a TransformerLens model",
         ["run", "layernorm-removal", "--model", "tl:zoo:stories-gpt2", *out], 2,
         "fine-tunes a local Hugging Face GPT-2"),
        ("an old plateau family name (renamed after the review)",
         ["run", "sensitive-directions", "--set", "families=[isotropic,dir_cov]", *out], 2,
         "family 'isotropic' was renamed"),
        ("an old activation-plateaus family name",
         ["run", "activation-plateaus", "--set", "families=[real]", *out], 2, "old family name"),
        ("a linear-representation template with a field that is not a slot",
         ["run", "linear-representation", "--set",
          "grid.template={name} saw a {texture} {colour} {furniture} {shape}", *out], 2,
         "which is not among the slots"),
        ("a linear-representation slot with no values",
         ["run", "linear-representation", "--set",
          "grid.slots={texture: [soft, hard], colour: [], furniture: [chair, bed]}", *out], 2,
         "has 0 values"),
        ("a linear-representation position whose slot word the tokenizer merges",
         ["run", "linear-representation", "--set",
          "grid.template={name} saw a {texture}ly {colour} {furniture}", "--set",
          "position=texture", *out], 2, "is not found as whole tokens"),
        ("a steering-vs-prompting judge that is not registered",
         ["run", "steering-vs-prompting", "--set", "judges.concept=llm", *out], 2,
         "is not a judge"),
        ("`steering-vs-prompting --set vector=sae_latent` without `--sae`",
         ["run", "steering-vs-prompting", "--set", "vector=sae_latent", *out], 2,
         "add --sae SPEC"),
        ("a steering SAE read at another site than `site`",
         ["run", "steering-vs-prompting", "--sae", "zoo:stories-gpt2-resid2-topk", "--set",
          "site=resid_pre.1", *out], 2, "the dictionary reads resid_pre.2"),
        ("`ngram-baseline --data zoo-corpus:nope`",
         ["run", "ngram-baseline", "--data", "zoo-corpus:nope", *out], 2, "no model named 'nope'"),
        ("n-gram orders that are not distinct whole numbers",
         ["run", "ngram-baseline", "--set", "orders=[0,2]", *out], 2,
         "orders must be distinct whole numbers"),
        ("more checkpoint steps than checkpoints",
         ["run", "ngram-baseline", "--set", "checkpoint_steps=[1]", *out], 2,
         "checkpoint_steps has 1 entries but checkpoints has 0"),
        ("sparsify-model layers the model does not have",
         ["run", "sparsify-model", "--set", "layers=[0,7]", *out], 2, "layers [7] are outside"),
        ("sparsify-model on a model whose MLP it cannot read (a GPT-NeoX directory)",
         ["run", "sparsify-model", "--model", f"hf:{_tiny_neox(tmp)}", *out], 2,
         "GPT-2-architecture model"),
        ("an unknown Jacobian kernel",
         ["run", "sparsify-model", "--set", "jacobian_kernel=fast", *out], 2, "jacobian_kernel"),
        ("an idea that raises mid-run", ["run", "toy-fail", *out], 1, "marked failed"),
    ]


def _normalise(text: str, tmp: Path) -> str:
    text = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?", "RUN", text.replace(str(tmp), "TMP"))
    return " ".join(text.split())


def test_every_bad_input_gets_one_clear_paragraph(toy_host, tmp_path, capsys):
    rows = []
    cases = _cases(tmp_path, toy_host)
    capsys.readouterr()  # what building the cases' inputs printed
    for what, argv, code, phrase in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == code, (what, rc, err)
        assert "Traceback" not in err, (what, err)
        # one error, last; only warnings may come before it (a config error lists its
        # fields one per line)
        assert err.count("mi-ideas: error:") == 1, (what, err)
        before, message = err.split("mi-ideas: error: ")
        # (progress bars redraw with \r; what remains of a line after them must be a warning)
        leftover = [line.split("\r")[-1] for line in before.split("\n")]
        assert all(not line.strip() or line.startswith("mi-ideas: warning:")
                   or "Loading weights" in line for line in leftover), (what, err)
        assert phrase in message, (what, message)
        rows.append(f"| {what} | {code} | {_normalise(message, tmp_path).replace('|', '∣')} |")
    page = HEADER + "\n".join(rows) + "\n"
    if os.environ.get("MI_IDEAS_WRITE_ERRORS_DOC"):
        DOC.write_text(page, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == page, (
        "docs/errors.md is out of date; regenerate it with "
        "MI_IDEAS_WRITE_ERRORS_DOC=1 pytest tests/test_errors.py")


def test_load_run_names_a_corrupt_file(toy_host, tmp_path):
    import mi_ideas
    from mi_ideas.errors import UsageError

    result = mi_ideas.run("toy-echo", out=tmp_path, quiet=True)
    run_dir = Path(result.run_dir)
    (run_dir / "result.json").write_text('{"metrics": {"value": 1.0')
    with pytest.raises(UsageError, match=re.escape(str(run_dir / "result.json")) + ".*corrupt"):
        mi_ideas.load_run(run_dir)
    (run_dir / "result.json").write_text('{"metrics": {"value": 1.0}}')  # no definition
    with pytest.raises(UsageError, match="does not hold what mi-ideas expects"):
        mi_ideas.load_run(run_dir)


def test_a_truncated_artifact_is_named(toy_host, tmp_path):
    import mi_ideas
    from mi_ideas.errors import UsageError

    record = mi_ideas.load_run(mi_ideas.run("toy-echo", out=tmp_path, quiet=True).run_dir)
    path = record.path / "artifacts" / "draws.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UsageError, match="draws.safetensors.*corrupt or truncated"):
        record.load_artifact("draws")
