"""``kill -9`` at random points of a long command, then the same command again: the result is the
one an uninterrupted run gives, bit for bit, and nothing half-written is left beside it.

Each case runs the command once uninterrupted (the reference, which also times it), then, for a few
kill times drawn from a seeded generator over that duration, starts it in a fresh folder, kills it
with SIGKILL (no handler runs: the process dies between any two instructions), runs the same
command to the end and compares every file the artifacts record (their sha256 in the manifests)
with the reference's. Timing makes the kill points vary from machine to machine; each point is a
case of the same claim, so the test holds for every one of them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mechrecall as mr
from conftest import FAST_TRAIN

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from mechrecall_cli.app import main; main()"]
KILLS = 2  # kill points per command (plus the uninterrupted reference)


TIMINGS = {"steps.json"}  # reproduce's ledger: what each step did and how many seconds it took


def _recorded(root: Path) -> dict[str, str]:
    """sha256 of every file recorded by every manifest under ``root``, by path relative to it
    (the timing ledger aside: its seconds differ from run to run by nature). A run's model.json
    names its base by absolute path, so it is compared with that path made relative to ``root``."""
    recorded: dict[str, str] = {}
    for manifest in sorted(root.rglob("manifest.json")):
        files = json.loads(manifest.read_text())["files"]
        prefix = manifest.parent.relative_to(root)
        for name, digest in files.items():
            if name in TIMINGS:
                continue
            if name == "model.json":
                digest = (manifest.parent / name).read_text().replace(str(root), "<root>")
            recorded[str(prefix / name)] = digest
    return recorded


def _on_disk(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _run(command: list[str], timeout: float = 600) -> float:
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return time.perf_counter() - start


def _kill_at(command: list[str], seconds: float) -> float | None:
    """Start ``command`` and SIGKILL it (and any worker it started) after ``seconds``; None if it
    was killed, else how long it took to finish on its own (it must have succeeded)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: a worker dies with its parent, as on a power cut
        process.communicate()
        return None
    assert process.returncode == 0, stderr[-2000:]
    return time.perf_counter() - start


def _kill_and_resume(make_command, reference: Path, tmp_path: Path, seed: int) -> None:
    """Kill at random points, resume, compare with ``reference`` (an uninterrupted run's folder).
    Machines differ in speed from run to run; a command that finished before its kill point is
    run again in a fresh folder with a point drawn over its shorter duration."""
    duration = _run(make_command(reference))
    expected, expected_files = _recorded(reference), _on_disk(reference)
    rng = random.Random(seed)
    for point in range(KILLS):
        for attempt in range(4):
            out = tmp_path / f"killed-{point}-{attempt}"
            at = rng.uniform(0.15, 0.85) * duration
            finished_in = _kill_at(make_command(out), at)
            if finished_in is None:
                break
            duration = min(duration, finished_in)
        else:
            pytest.fail(f"the command always finished before its kill point (last {at:.1f}s of {duration:.1f}s)")
        _run(make_command(out))
        actual = _recorded(out)
        differing = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
        assert not differing, f"killed at {at:.1f}s of {duration:.1f}s, then resumed: {differing[:5]} differ from the uninterrupted run"
        assert _on_disk(out) == expected_files, f"left behind: {sorted(_on_disk(out) - expected_files)[:5]}"


def test_training_with_the_study_trace_killed_then_resumed_is_identical(world_dir: Path, tmp_path: Path) -> None:
    def command(out: Path) -> list[str]:
        return [*CLI, "train", str(world_dir), "--out", str(out), "--model", "micro", "--strategy", "two-stage",
                "--bio-steps", "120", "--qa-steps", "120", "--batch-size", "16", "--warmup-steps", "10", "--lr", "3e-3",
                "--checkpoint-every", "10", "--trace-individuals", "4", "--no-progress", "--device", "cpu"]

    _kill_and_resume(command, tmp_path / "reference", tmp_path, seed=1)


def test_graft_killed_then_run_again_is_identical(world_dir: Path, tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    mr.train_run(world_dir, trained, mr.ModelConfig("micro"), mr.TrainConfig(strategy="mixed", steps=200, **FAST_TRAIN), device="cpu", progress=False)

    def command(out: Path) -> list[str]:
        if not out.exists():
            shutil.copytree(trained, out)
        return [*CLI, "graft", str(out), "--no-with-shared", "--sparsity", "0.01", "--target", "0.9", "--max-sparsity", "0.2",
                "--steps", "30", "--batch-size", "16", "--no-progress", "--device", "cpu"]

    _kill_and_resume(command, tmp_path / "reference", tmp_path, seed=2)


def test_reproduce_killed_then_resumed_is_identical(tmp_path: Path) -> None:
    def command(out: Path) -> list[str]:
        return [*CLI, "reproduce", "--preset", "micro", "--out", str(out), "--set", "checkpoint_every=10",
                "--no-progress", "--device", "cpu", "--jobs", "2"]

    _kill_and_resume(command, tmp_path / "reference", tmp_path, seed=3)
