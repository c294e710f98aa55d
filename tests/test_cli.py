"""The CLI: the happy path, and every bad input ending in one clear line and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mechrecall_cli.app import app
from typer.testing import CliRunner

import mechrecall as mr

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_data_train_eval_from_the_command_line(tmp_path: Path) -> None:
    result = _run("data", "--people", "12", "--seed", "1", "--bio-per-person", "2", "--permute", "--out", tmp_path / "w")
    assert result.exit_code == 0, result.output
    world = mr.load_world(tmp_path / "w")
    assert len(world.dataset["bio"]) == 24 and world.config.permute
    result = _run(
        "train", tmp_path / "w", "--model", "micro", "--strategy", "two-stage", "--bio-steps", "6", "--qa-steps", "4",
        "--batch-size", "8", "--out", tmp_path / "r", "--no-progress", "--device", "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "qa_ood" in result.output
    run = mr.open_run(tmp_path / "r")
    assert run.directory.manifest["training"]["phase_ends"] == [6, 10]
    result = _run("eval", tmp_path / "r", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[str(tmp_path / "r")] == run.metrics()


def test_max_steps_caps_a_smoke_run(world_dir: Path, tmp_path: Path) -> None:
    result = _run("train", world_dir, "--model", "micro", "--max-steps", "3", "--batch-size", "4", "--out", tmp_path / "r", "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert mr.open_run(tmp_path / "r").directory.manifest["training"]["steps"] == 3


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--strategy", "three-stage"], "'three-stage' is not one of"),
        (["--preset", "huge"], "'huge' is not one of"),
        (["--qa-share", "0"], "qa-share must lie strictly between 0 and 1"),
        (["--qa-share", "1.2"], "qa-share must lie strictly between 0 and 1"),
        (["--steps", "0"], "steps must be at least 1"),
        (["--model", "EleutherAI/pythia-2.8b"], "not available offline"),
        (["--model", "./no/such/dir"], "not available offline"),
    ],
)
def test_bad_training_options(arguments: list[str], fragment: str, world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _one_line_error(_run("train", world_dir, "--out", out, "--device", "cpu", *arguments), fragment)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_world_options(tmp_path: Path) -> None:
    _one_line_error(_run("data", "--people", "1", "--out", tmp_path / "w"), "people must be at least 2")
    _one_line_error(_run("data", "--qa-id-fraction", "1.5", "--out", tmp_path / "w"), "qa-id-fraction")
    assert list(tmp_path.iterdir()) == []


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_output_needs_overwrite_and_overwrite_only_replaces_what_mechrecall_made(
    world_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    (tmp_path / "taken" / "sub").mkdir()
    (tmp_path / "a-file").write_text("mine too")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path / "taken"), "already exists")
    _one_line_error(_run("train", world_dir, "--out", tmp_path / "taken", "--model", "micro"), "already exists")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path / "taken", "--overwrite"), "not a mechrecall directory, not a world directory; it was left alone")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path / "a-file", "--overwrite"), "it is a file")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path / "a-file" / "sub"), "is a file, not a folder")
    monkeypatch.chdir(tmp_path / "taken")
    _one_line_error(_run("data", "--people", "4", "--out", ".", "--overwrite"), "is the working directory")
    _one_line_error(_run("data", "--people", "4", "--out", "", "--overwrite"), "is the working directory")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path, "--overwrite"), "holds it")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "taken")
    _one_line_error(_run("data", "--people", "4", "--out", tmp_path / "link", "--overwrite"), "symbolic link")
    world_copy = tmp_path / "world"
    shutil.copytree(world_dir, world_copy)
    kept = _snapshot(world_copy)
    _one_line_error(_run("train", world_copy, "--out", world_copy, "--model", "micro", "--overwrite"), "an input of this command")
    _one_line_error(_run("train", world_copy, "--out", tmp_path, "--model", "micro", "--overwrite"), "holds it")
    assert _snapshot(world_copy) == kept
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine" and (tmp_path / "a-file").read_text() == "mine too"
    # a world over a world: replaced, and a bad option first leaves the old run whole
    result = _run("data", "--people", "4", "--seed", "5", "--out", world_copy, "--overwrite")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert _run("train", world_dir, "--out", run, "--model", "micro", "--steps", "3", "--batch-size", "4", "--no-progress").exit_code == 0
    before = _snapshot(run)
    _one_line_error(_run("train", world_dir, "--out", run, "--model", "micro", "--overwrite", "--dtype", "int8"), "'int8' is not one of")
    _one_line_error(_run("train", world_dir, "--out", run, "--model", "micro", "--overwrite", "--lr", "nan"), "lr must be a positive number")
    assert _snapshot(run) == before
    _one_line_error(_run("train", world_dir, "--out", world_dir, "--model", "micro", "--overwrite"), "input of this command")
    _one_line_error(_run("data", "--people", "4", "--out", run, "--overwrite"), "a mechrecall run directory, not a world directory")


def test_a_run_of_another_config_is_not_resumed(mixed_run: mr.Run, world_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(mixed_run.path, copy)
    _one_line_error(_run("train", world_dir, "--out", copy, "--model", "micro", "--steps", "7"), "not an unfinished run of this config")


def test_eval_of_what_is_not_a_run(world_dir: Path, tmp_path: Path) -> None:
    _one_line_error(_run("eval", tmp_path / "missing"), "does not exist")
    _one_line_error(_run("eval", tmp_path), "not a mechrecall directory")
    _one_line_error(_run("eval", world_dir), "not a run")


def test_corrupt_artifact_is_named(mixed_run: mr.Run, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(mixed_run.path, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    _one_line_error(_run("eval", copy, "--device", "cpu"), "model.safetensors does not match the sha256")
    (copy / "model.safetensors").unlink()
    _one_line_error(_run("eval", copy, "--device", "cpu"), "model.safetensors is missing")


def test_eval_of_an_unfinished_run(world_dir: Path, tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def stop(state) -> None:
        raise Stop

    with pytest.raises(Stop):
        mr.train_run(world_dir, tmp_path / "r", mr.ModelConfig("micro"), mr.TrainConfig(steps=5, batch_size=4), device="cpu", progress=False, on_step=stop)
    _one_line_error(_run("eval", tmp_path / "r", "--device", "cpu"), "has no fine-tuned model yet")


def test_usage_errors_exit_with_code_2(tmp_path: Path) -> None:
    result = _run("train", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "Missing argument" in result.output


def _corrupt_copy(run: mr.Run, tmp_path: Path, name: str, change, record: bool = True) -> Path:
    """A copy of ``run`` with ``name`` changed by ``change(path)``; with ``record`` the manifest is
    updated to match (so the file itself, not its hash, is what is wrong)."""
    copy = tmp_path / f"copy-{name.replace('/', '-')}-{record}"
    shutil.copytree(run.path, copy)
    change(copy / name)
    if record and name != "manifest.json":
        manifest = json.loads((copy / "manifest.json").read_text())
        from mechrecall.artifacts import sha256_file

        manifest["files"][name] = sha256_file(copy / name)
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _edit_json(edit):
    def change(path: Path) -> None:
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return change


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit pattern in the middle of the tensor data
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "change", "record", "fragment"),
    [
        ("manifest.json", lambda p: p.write_text("[1, 2]"), False, "holds list, not an object"),
        ("manifest.json", lambda p: p.write_text("null"), False, "holds NoneType"),
        ("manifest.json", lambda p: p.write_text("{not json"), False, "is not valid JSON"),
        ("manifest.json", _edit_json(lambda m: {k: v for k, v in m.items() if k != "files"}), False, "lacks 'files'"),
        ("manifest.json", _edit_json(lambda m: {k: v for k, v in m.items() if k != "config"}), False, "lacks 'config'"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), False, "does not match the sha256"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), True, "is not a readable safetensors file"),
        ("model.safetensors", lambda p: p.unlink(), False, "is missing but recorded"),
        ("model.json", _edit_json(lambda m: {**m, "tl_config": {**m["tl_config"], "act_fn": "bogus"}}), True, "does not describe a model"),
        ("model.json", _edit_json(lambda m: {k: v for k, v in m.items() if k != "tl_config"}), True, "does not describe a model"),
        ("metrics.json", lambda p: p.write_text("{oops"), True, "is not valid JSON"),
        ("trace_training.safetensors", lambda p: p.write_bytes(p.read_bytes()[:64]), False, "does not match the sha256"),
        ("trace_training.safetensors", lambda p: p.write_bytes(p.read_bytes()[:64]), True, "is not a readable safetensors file"),
        ("trace_training.safetensors", _flip_byte, False, "does not match the sha256"),
        ("trace_training.safetensors", lambda p: p.unlink(), False, "is missing but recorded"),
    ],
)
def test_a_corrupt_artifact_is_one_named_error(mixed_run: mr.Run, tmp_path: Path, name: str, change, record: bool, fragment: str) -> None:
    copy = _corrupt_copy(mixed_run, tmp_path, name, change, record)
    # every command that reads the artifact (one that does not read it may run)
    readers = {
        "manifest.json": [["eval", copy], ["shared", copy], ["report", copy, "--out", tmp_path / "report"]],
        "model.safetensors": [["eval", copy], ["attention", copy, "--heads", "0.0", "--people", "1"]],
        "model.json": [["eval", copy], ["attention", copy, "--heads", "0.0", "--people", "1"]],
        "metrics.json": [["report", copy, "--out", tmp_path / "report"]],
        "trace_training.safetensors": [["shared", copy]],
    }[name]
    for command in readers:
        _one_line_error(_run(*command), fragment)


def test_every_command_explains_itself() -> None:
    from mechrecall.registry import ANALYSES

    commands = ["data", "train", "eval", "report", "reproduce", "presets", "pretrain", "export", "ablate-heads", *(a.name for a in ANALYSES)]
    for command in commands:
        result = _run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, command
    assert "[shared|grafted]" in _run("heads", "--help").output.replace(" ", "") or "shared|grafted" in _run("heads", "--help").output
    version = _run("--version")
    assert version.exit_code == 0 and version.output.startswith("mechrecall ")
    assert "report" in _run("report", "--help").output and _run("report", "x").exit_code == 2  # --out is required


def test_the_cli_choices_are_the_librarys() -> None:
    """--help lists choices without importing torch, so the CLI spells them out: they must stay
    the library's (a preset or strategy added there and not here could not be chosen)."""
    from mechrecall import config, models
    from mechrecall_cli import app

    assert {c.value for c in app.Preset} == set(config.PRESETS)
    assert {c.value for c in app.Population} == set(config.POPULATIONS)
    assert {c.value for c in app.Dtype} == set(models.DTYPES)
    assert {c.value for c in app.Strategy} == {*config.STRATEGIES, "bio"}
    assert "<mixed|two-stage|bio>" in _run("train", "--help").output
    wrong = _run("train", "w", "--out", "x", "--strategy", "mix")
    assert wrong.exit_code == 2 and "'mix' is not one of" in wrong.output


def test_train_with_the_study_trace_from_the_command_line(world_dir: Path, tmp_path: Path) -> None:
    result = _run("train", world_dir, "--out", tmp_path / "traced", "--model", "micro", "--steps", "6", "--batch-size", "4",
                  "--trace-individuals", "3", "--qa-lr", "1e-4", "--decay-to", "base", "--eval-every", "3", "--no-progress")
    assert result.exit_code == 0, result.output
    run = mr.open_run(tmp_path / "traced")
    assert "trace_training.safetensors" in run.directory.manifest["files"]
    assert run.train_config.decay_to == "base" and len(run.directory.manifest["training"]["evals"]) == 2
    _one_line_error(_run("train", world_dir, "--out", tmp_path / "x", "--model", "micro", "--trace-individuals", "3", "--trace-all"), "not both")
    _one_line_error(_run("train", world_dir, "--out", tmp_path / "x", "--model", "micro", "--decay-to", "one"), "'one' is not one of")
