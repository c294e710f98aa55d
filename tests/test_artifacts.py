"""Atomic writes and hash-checked reads."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechrecall.artifacts import ArtifactDir, atomic_path, discard
from mechrecall.errors import ArtifactError


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writes_temporary_goes_with_the_next_write_or_discard_and_nothing_else_does(tmp_path: Path) -> None:
    # what SIGKILL inside atomic_path leaves: a hidden temporary named after the target
    target = tmp_path / "checkpoint.safetensors"
    leftover = tmp_path / ".checkpoint.safetensors.z63jhb92.tmp"
    others = [tmp_path / n for n in ("checkpoint.safetensors.tmp", ".checkpoint.safetensors.notes", ".model.safetensors.ab12.tmp", "mine.txt")]
    for path in [leftover, *others]:
        path.write_text("x")
    with atomic_path(target) as temporary:
        temporary.write_text("whole")
    assert target.read_text() == "whole" and not leftover.exists()
    assert all(path.read_text() == "x" for path in others)
    leftover.write_text("half")  # killed again, this time in the last write before the end
    discard(target)
    assert not target.exists() and not leftover.exists()
    assert sorted(tmp_path.iterdir()) == sorted(others)
    discard(target)  # nothing there: no error


def test_failed_write_keeps_the_previous_version(tmp_path: Path) -> None:
    directory = ArtifactDir.create(tmp_path / "d", "run", {}, {})
    directory.write_json("metrics.json", {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "d" / "metrics.json") as temporary:
        temporary.write_text("{broken")
        raise RuntimeError
    assert directory.read_json("metrics.json") == {"a": 1}


def test_tensors_round_trip_and_tampering_is_caught(tmp_path: Path) -> None:
    directory = ArtifactDir.create(tmp_path / "d", "run", {"x": 1}, {"seed": 0})
    tensors = {"w": torch.arange(12.0).reshape(3, 4)}
    directory.save_tensors("w.safetensors", tensors)
    reopened = ArtifactDir.open(tmp_path / "d", kind="run")
    assert torch.equal(reopened.load_tensors("w.safetensors")["w"], tensors["w"])
    directory.save_tensors("w.safetensors", {"w": torch.zeros(3, 4)})  # a rewrite is re-recorded
    assert torch.equal(ArtifactDir.open(tmp_path / "d").load_tensors("w.safetensors")["w"], torch.zeros(3, 4))
    ArtifactDir.create(tmp_path / "other", "run", {}, {}).save_tensors("w.safetensors", tensors)
    (tmp_path / "other" / "w.safetensors").replace(tmp_path / "d" / "w.safetensors")  # stale file from elsewhere
    with pytest.raises(ArtifactError, match="w.safetensors does not match"):
        reopened.load_tensors("w.safetensors")
    with pytest.raises(ArtifactError, match="not recorded"):
        reopened.load_tensors("absent.safetensors")


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    """safetensors orders its metadata by a per-process hash: without the canonical header, the same
    trace hashed differently run to run (found by test_kill_resume)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from pathlib import Path; from mechrecall.artifacts import write_safetensors; "
        "write_safetensors(Path(sys.argv[1]), {'b': torch.arange(6.).reshape(2, 3), 'a': torch.ones(3, dtype=torch.int32)}, "
        "{k: str(i) for i, k in enumerate('pqrstuvw')})"
    )
    written = []
    for index in range(3):
        path = tmp_path / f"{index}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        written.append(path.read_bytes())
    assert written[0] == written[1] == written[2]
    from safetensors import safe_open
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "0.safetensors")["b"], torch.arange(6.0).reshape(2, 3))
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as handle:
        assert handle.metadata() == {k: str(i) for i, k in enumerate("pqrstuvw")}


def _record_many(path: str, prefix: str, count: int) -> None:
    from mechrecall.artifacts import ArtifactDir

    directory = ArtifactDir.open(Path(path))  # opened once: its manifest in memory goes stale as the other writes
    for index in range(count):
        directory.write_json(f"{prefix}{index}.json", {"index": index})
        directory.set_provenance(f"{prefix}{index}.json", {}, f"writer {prefix}")


def test_two_processes_recording_into_one_directory_keep_each_others_entries(tmp_path: Path) -> None:
    """A run's analyses run side by side in `reproduce`, each recording its files in the run's
    manifest: every change rereads the manifest under a lock, so no entry of the other is lost."""
    import multiprocessing

    ArtifactDir.create(tmp_path, "run", {}, {})
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_record_many, args=(str(tmp_path), prefix, 40)) for prefix in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    manifest = ArtifactDir.open(tmp_path).manifest
    expected = {f"{prefix}{index}.json" for prefix in "ab" for index in range(40)}
    assert set(manifest["files"]) == expected and set(manifest["provenance"]) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*expected, "manifest.json"])  # no lock or temporary left


_HOLD_STAGING = """
import sys, time
from pathlib import Path
from mechrecall.artifacts import ArtifactDir, staging_folder
with staging_folder(Path(sys.argv[1]), kind="world") as staging:
    directory = ArtifactDir.create(staging, "world", {}, {})
    (staging / "data").mkdir()
    (staging / "data" / "half.arrow").write_text("half")
    print(staging, flush=True)
    time.sleep(600)
"""


def _holding_writer(out: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process inside ``staging_folder(out)``, half-way through a world; and its staging folder."""
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_STAGING, str(out)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    return writer, Path(writer.stdout.readline().strip())


def test_a_killed_writers_staging_folder_goes_with_the_next_build_and_nothing_else_does(tmp_path: Path) -> None:
    import mechrecall as mr

    out = tmp_path / "worlds" / "s0"
    alive, live = _holding_writer(out)
    killed, leftover = _holding_writer(out)  # leaves the live writer's folder alone
    assert live.is_dir()
    killed.send_signal(signal.SIGKILL)  # no handler runs: its staging folder stays
    killed.wait()
    # folders that look alike but are not a dead writer's, each left alone
    user_folder = tmp_path / "worlds" / ".s0.abcdefgh"  # the pattern, but someone's own files
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("mine")
    other_kind = tmp_path / "worlds" / ".s0.ijklmnop"  # a mechrecall run, not a world
    ArtifactDir.create(other_kind, "run", {}, {})
    longer = tmp_path / "worlds" / ".s0.backup-2026"  # not mkdtemp's name
    longer.mkdir()
    linked = tmp_path / "worlds" / ".s0.qrstuvwx"
    linked.symlink_to(user_folder, target_is_directory=True)
    assert leftover.is_dir() and (leftover / "data" / "half.arrow").exists()
    try:
        mr.save_world(mr.create_world(mr.WorldConfig(people=4, seed=0)), out)
        assert not leftover.exists()
        assert live.is_dir()  # its writer still runs
    finally:
        alive.send_signal(signal.SIGKILL)
        alive.wait()
    assert (user_folder / "notes.txt").read_text() == "mine"
    assert ArtifactDir.open(other_kind).kind == "run" and longer.is_dir() and linked.is_symlink()
    mr.save_world(mr.create_world(mr.WorldConfig(people=4, seed=0)), out, overwrite=True)  # the live one is dead now
    assert sorted(p.name for p in (tmp_path / "worlds").iterdir()) == sorted(["s0", user_folder.name, other_kind.name, longer.name, linked.name])
    assert mr.load_world(out).config.people == 4
