"""How `mechrecall reproduce` runs its steps side by side (``reproduce.run_side_by_side``): each
step after the steps it reads, a run's analyses on the core its training freed while the other
training goes on, and on a failure every other worker stops — a training at its next step, an
analysis at once — leaving nothing running. The steps here are stand-ins whose jobs record what
happened in files, so each property is checked by what the workers did, not by timing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress

from mechrecall.reproduce import Step, StepOutcome, run_side_by_side

WAIT = 120.0  # seconds a stand-in waits for another before it gives up (a failure, never reached when all is well)


def _mark(job: dict[str, Any], name: str) -> None:
    (Path(job["folder"]) / name).write_text(json.dumps({"at": time.time()}))


def _wait_for(path: Path) -> bool:
    deadline = time.time() + WAIT
    while not path.exists():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def quick(job: dict[str, Any], on_step: Any) -> None:
    _mark(job, f"{job['id'].replace('/', '_')}.done")


def waits_for_analysis(job: dict[str, Any], on_step: Any) -> None:
    """A long training that ends only once the other run's analysis has run: possible only if that
    analysis took the worker the other training freed."""
    if not _wait_for(Path(job["folder"]) / "a_shared.done"):
        raise TimeoutError("the analysis of run a never ran while this training went on")
    _mark(job, f"{job['id'].replace('/', '_')}.done")


def trains_until_stopped(job: dict[str, Any], on_step: Any) -> None:
    _mark(job, "training.started")
    for step in range(1, 100_000):
        on_step(step)  # raises once the study stops
        time.sleep(0.01)
    _mark(job, "training.finished")


def analyses_slowly(job: dict[str, Any], on_step: Any) -> None:
    _mark(job, "analysis.started")
    time.sleep(60)
    _mark(job, "analysis.finished")


def fails_once_both_run(job: dict[str, Any], on_step: Any) -> None:
    folder = Path(job["folder"])
    _wait_for(folder / "training.started")
    _wait_for(folder / "analysis.started")
    raise ValueError("a stand-in step failed")


def _step(folder: Path, id: str, run: Any, kind: str = "train", after: tuple[str, ...] = ()) -> Step:
    job = {"id": id, "kind": kind, "run": run, "folder": str(folder)}
    return Step(id, {}, lambda: {}, lambda: {}, lambda report: None, job=job, after=after)


def _run(steps: list[Step], cached: set[str] = frozenset(), workers: int = 2) -> tuple[dict[str, StepOutcome], dict[str, tuple[float, float]]]:
    finished: dict[str, tuple[float, float]] = {}

    def finish(step: Step, seconds: float, started_at: float | None) -> None:
        finished[step.id] = (started_at, started_at + seconds)

    with Progress(disable=True) as bar:
        outcomes = run_side_by_side(steps, workers, bar, {}, lambda step: step.id in cached, finish)
    return outcomes, finished


def test_a_runs_analyses_take_the_core_its_training_freed(tmp_path: Path) -> None:
    steps = [
        _step(tmp_path, "a/train", quick),
        _step(tmp_path, "b/train", waits_for_analysis),
        _step(tmp_path, "a/shared", quick, "analysis", ("a/train",)),
        _step(tmp_path, "a/graft", quick, "analysis", ("a/shared",)),
        _step(tmp_path, "b/shared", quick, "analysis", ("b/train",)),
        _step(tmp_path, "b/graft", quick, "analysis", ("b/shared",)),
    ]
    outcomes, finished = _run(steps)
    assert {i: o.status for i, o in outcomes.items()} == {s.id: "ran" for s in steps}
    # each step after what it reads: a chain's next step starts once the one before has ended
    for step in steps:
        for before in step.after:
            assert finished[step.id][0] >= finished[before][1] - 0.01, (step.id, before)
    # never more at once than there are workers
    moments = sorted({t for span in finished.values() for t in span})
    for moment in moments:
        assert sum(start <= moment < end for start, end in finished.values()) <= 2


def test_a_step_found_cached_when_its_turn_comes_is_skipped(tmp_path: Path) -> None:
    steps = [
        _step(tmp_path, "a/train", quick),
        _step(tmp_path, "a/shared", quick, "analysis", ("a/train",)),
        _step(tmp_path, "a/graft", quick, "analysis", ("a/shared",)),
    ]
    outcomes, _ = _run(steps, cached={"a/shared"})
    assert {i: o.status for i, o in outcomes.items()} == {"a/train": "ran", "a/shared": "cached", "a/graft": "ran"}
    assert not (tmp_path / "a_shared.done").exists() and (tmp_path / "a_graft.done").exists()


def test_a_failing_step_stops_every_other_worker(tmp_path: Path) -> None:
    """Three workers: a training that never ends on its own, an analysis that takes a minute, and a
    step that fails once both are running. The failure reaches the study; the training stops at its next step and the analysis at once
    (had either run on, the call would have waited for it and its "finished" mark would be there)."""
    runs = [
        [_step(tmp_path, "a/train", trains_until_stopped)],
        [_step(tmp_path, "b/train", quick), _step(tmp_path, "b/shared", analyses_slowly, "analysis", ("b/train",))],
    ]
    failing = _step(tmp_path, "c/train", fails_once_both_run)
    with pytest.raises(ValueError, match="stand-in step failed"):
        _run([runs[0][0], runs[1][0], failing, runs[1][1]], workers=3)
    assert (tmp_path / "training.started").exists() and (tmp_path / "analysis.started").exists()
    assert not (tmp_path / "training.finished").exists()
    assert not (tmp_path / "analysis.finished").exists()


def test_the_core_count_is_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A study pinned to one core (``taskset -c 1``, a container's cpuset) gives each training
    one thread and runs one step at a time, instead of sizing itself by the whole machine."""
    import os

    from mechrecall import reproduce

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert reproduce.usable_cores() == 1
    assert reproduce.default_jobs("cpu") == 1
    assert reproduce.training_threads({}, workers=1, cores=reproduce.usable_cores()) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert reproduce.usable_cores() == 3 and reproduce.default_jobs("cpu") == 2

    def no_affinity(pid: int) -> set[int]:
        raise OSError("not on this platform")

    monkeypatch.setattr(os, "sched_getaffinity", no_affinity, raising=False)
    assert reproduce.usable_cores() == 8
