"""``mechrecall reproduce``: the whole study for both strategies, then its report.

The study is a list of :class:`Step` s — the base θ_pre (a world of population "b" and a model
pre-trained on it, shared by every seed and strategy, when the preset's base is pre-trained); per
seed: the world; per seed and strategy: training (with evaluation and, by default, the study's
gradient trace accumulated during training), then one step per analysis of
``mechrecall.registry``; last, the report. Each step is cached by its inputs: its key is the sha256 of its options and of
the sha256s (from the manifests) of the artifacts it reads. ``steps.json`` in the study folder
records, per step, the key it ran with and the sha256s of what it wrote; a step whose key and
outputs are unchanged is skipped. A second run is therefore a no-op, a changed option reruns the
steps that depend on it (and, through their outputs' hashes, only what changed downstream), and an
interrupted study resumes: finished steps are skipped and training resumes from its checkpoint.

With ``jobs`` > 1 (a multi-core CPU) the trainings and analyses run in worker processes, each
step as soon as the steps it comes ``after`` have ended: a run's analyses take the core its
training freed while the other strategy still trains (:func:`run_side_by_side`). ``steps.json``
records when each step started, so the schedule can be read back.

Layout of ``out``::

    manifest.json   the study's config (preset, seeds, analyses), versions, files
    steps.json      the cache: key, outputs and seconds of every finished step
    base/           θ_pre: the pre-trained base run (its world in worlds/base)
    worlds/s<seed>/ the world of each seed
    s<seed>/<strategy>/   each run (every analysis writes into it)
    report.md, report.html, figures/
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from mechrecall.artifacts import ArtifactDir, package_versions, write_json_atomic
from mechrecall.config import (
    STRATEGIES,
    StudyConfig,
    get_preset,
    key_dict,
    override_study,
    to_dict,
)
from mechrecall.errors import ArtifactError, ConfigError, RunDirError
from mechrecall.runs import TUNED, resolve_device

LEDGER = "steps.json"
KIND = "study"
REPORT_FORMAT = 8  # part of the report step's key: bump when the report's content changes

Hashes = dict[str, str]
Report = Callable[[int, int], None]  # (done, total) of the running step


@dataclass
class Step:
    """One cached unit of the study."""

    id: str  # unique, e.g. "s0/mixed/trace"
    options: dict[str, Any]  # the settings the step runs with (part of its key)
    inputs: Callable[[], Hashes | None]  # hashes of what it reads; None: an input is missing
    outputs: Callable[[], Hashes | None]  # hashes of what it wrote; None: not (all) there
    action: Callable[[Report], None]
    total: int = 1  # units of progress (training: steps)
    job: dict[str, Any] | None = None  # training or analysis: what a worker process needs to run it (picklable)
    after: tuple[str, ...] = ()  # the steps it waits for (it reads what they write)

    def key(self) -> str | None:
        inputs = self.inputs()
        if inputs is None:
            return None
        payload = json.dumps({"id": self.id, "options": self.options, "inputs": inputs}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class StepOutcome:
    id: str
    status: str  # "ran" | "cached"
    seconds: float


# ---- hashes of artifacts -----------------------------------------------------------------------


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        return ArtifactDir.open(path).manifest
    except (RunDirError, ArtifactError):
        return None


def file_hashes(path: Path, names: tuple[str, ...], require_complete: bool = True, label: str | None = None) -> Hashes | None:
    """The recorded sha256 of ``names`` in the artifact directory ``path`` (None if any is absent
    or, with ``require_complete``, the directory is unfinished). Keys name the file by its last
    two folders (``s0/mixed/trace.safetensors``) or by ``label``, so a study folder can be moved."""
    manifest = _manifest(path)
    if manifest is None or (require_complete and manifest.get("status") != "complete"):
        return None
    files = manifest["files"]
    if not all(name in files for name in names):
        return None
    label = f"{path.parent.name}/{path.name}" if label is None else label
    return {f"{label}/{name}": files[name] for name in names}


def world_hash(path: Path) -> Hashes | None:
    manifest = _manifest(path)
    if manifest is None or manifest.get("status") != "complete":
        return None
    return {"world": manifest["fingerprint"]}


def _merge(*parts: Hashes | None) -> Hashes | None:
    if any(part is None for part in parts):
        return None
    merged: Hashes = {}
    for part in parts:
        merged.update(part)  # type: ignore[arg-type]
    return merged


# ---- the plan ----------------------------------------------------------------------------------


MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class ReproduceConfig:
    preset: str = "tiny"
    seeds: tuple[int, ...] = (0,)  # world, initialisation and batch order of each repetition
    strategies: tuple[str, ...] = STRATEGIES
    overrides: dict[str, Any] = field(default_factory=dict)  # settings of the preset changed (--set key=value)

    def study(self) -> StudyConfig:
        return override_study(get_preset(self.preset), self.overrides)

    def validate(self) -> None:
        study = self.study()
        if study.model.source == "checkpoint":
            from mechrecall.models import resolve_checkpoint

            resolve_checkpoint(study.model.name)  # not available offline: say so before anything runs
        if not self.seeds:
            raise ConfigError("give at least one seed (--seeds N or --seed S)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seed values must be distinct, got {list(self.seeds)}")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise ConfigError(f"--seed {seed!r} must be an integer in [0, {MAX_SEED}]")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"unknown strategy {unknown[0] if unknown else ''!r}: choose from {', '.join(STRATEGIES)}")


def run_path(out: Path, seed: int, strategy: str) -> Path:
    return out / f"s{seed}" / strategy


BASE_DIR = "base"
RESULTS_TABLE = "results.csv"  # one row per seed, strategy and measure (mechrecall.results_table)


def base_path(out: Path) -> Path:
    return out / BASE_DIR


def plan(out: Path, config: ReproduceConfig, study: StudyConfig, device: str | None) -> list[Step]:
    """Every step of the study in the order it runs."""
    from mechrecall.data.store import create_world, save_world
    from mechrecall.runs import TUNED

    steps: list[Step] = []
    base = study.base
    base_hashes: Callable[[], Hashes | None] = lambda: {}  # noqa: E731
    if base.pretrained:
        base_world = base.world(study.world.population_split)
        base_world_dir = out / "worlds" / "base"

        def make_base_world(report: Report) -> None:
            save_world(create_world(base_world), base_world_dir, overwrite=True)

        steps.append(Step("base/world", {"world": key_dict(base_world)}, lambda: {}, lambda: world_hash(base_world_dir), make_base_world))
        base_model = dataclasses.replace(study.model, seed=base.seed)
        base_train = base.train(study.train)
        job = {"id": "base/train", "kind": "train", "run": train_job, "world": base_world_dir, "path": base_path(out), "model": base_model, "train": base_train,
               "preset": study.name, "device": device, "trace": None,
               "alone": True}  # every fine-tuning waits for it: it trains alone, on every core
        steps.append(Step("base/train", {"model": key_dict(base_model), "train": key_dict(base_train)},
                          lambda: world_hash(base_world_dir), lambda: file_hashes(base_path(out), (TUNED, "metrics.json"), label="base"),
                          lambda report: train_job(job, lambda step: report(step, base_train.total_steps)),
                          total=base_train.total_steps, job=job, after=("base/world",)))
        base_hashes = lambda: file_hashes(base_path(out), (TUNED,), label="base")  # noqa: E731
    world = dataclasses.replace(study.world, population="a") if base.pretrained else study.world
    for seed in config.seeds:  # every world first: the trainings may then run side by side
        world_config = dataclasses.replace(world, seed=seed)
        world_dir = out / "worlds" / f"s{seed}"

        def make_world(report: Report, world_config=world_config, world_dir=world_dir) -> None:
            save_world(create_world(world_config), world_dir, overwrite=True)

        steps.append(Step(f"s{seed}/world", {"world": key_dict(world_config)}, lambda: {}, lambda d=world_dir: world_hash(d), make_world))
    for seed in config.seeds:
        for strategy in config.strategies:
            steps += run_steps(out, seed, strategy, out / "worlds" / f"s{seed}", study, device, base_hashes)
    runs = [run_path(out, seed, strategy) for seed in config.seeds for strategy in config.strategies]

    def report_inputs() -> Hashes | None:
        from mechrecall.registry import ANALYSES

        hashes = []
        for r in runs:
            manifest = _manifest(r)
            if manifest is None:
                return None
            reported = ("metrics.json",) + tuple(a.result_file for a in ANALYSES if a.result_file in manifest["files"])
            hashes.append(file_hashes(r, reported))
        return _merge(*hashes)

    def make_report(report: Report) -> None:
        from mechrecall.report import group_runs, write_report

        from mechrecall.results_table import write_results_table

        write_report(group_runs(runs), out, title=f"mechrecall: the {config.preset} preset beside the study",
                     preamble=preamble(config, study, out), png=png)
        write_results_table([(seed, strategy, run_path(out, seed, strategy)) for seed in config.seeds for strategy in config.strategies],
                            out / RESULTS_TABLE)
        for name in ("report.md", "report.html", RESULTS_TABLE):
            ArtifactDir.open(out).record(name)

    from mechrecall.report import static_exporter

    png = static_exporter()  # a report made without PNGs is made again once an exporter is there
    steps.append(Step("report", {"preset": config.preset, "format": REPORT_FORMAT, "overrides": config.overrides, "png": png},
                      report_inputs, lambda: file_hashes(out, ("report.md", "report.html", RESULTS_TABLE), require_complete=False, label="study"),
                      make_report))
    return steps


def world_line(study: StudyConfig) -> str:
    """The studied world and model as run (after any --set), not as the preset describes them."""
    world = study.world
    bios = f"{world.bio_per_person} BIO{'s' if world.bio_per_person != 1 else ''} each" + (", permuted" if world.permute else "") + (
        ", the full name in every sentence" if world.fullname else ", pronouns after the first sentence")
    return (f"World: {world.people:,} people, {bios}; QA of {world.qa_id_fraction:.0%} of them trained (in-distribution), "
            f"the rest held out; model: {study.model.name}.")


def preamble(config: ReproduceConfig, study: StudyConfig, out: Path) -> list[str]:
    train, base = study.train, study.base
    lines = [
        "`mechrecall reproduce --preset " + config.preset + "".join(f" --seed {s}" for s in config.seeds)
        + "".join(f" --set {key}={json.dumps(value)}" for key, value in config.overrides.items()) + "`: "
        + (f"the {config.preset} preset ({study.description}) with the settings set above changed." if config.overrides
           else f"{study.description}."),
        world_line(study),
    ]
    if base.pretrained:
        metrics = _base_metrics(out)
        lines.append(
            f"θ_pre: a base pre-trained here ({base.recipe} recipe: {'BIO texts alone' if base.recipe == 'bio' else 'BIO texts and QA of half'}) "
            f"on {base.people:,} other people (population b; the studied world is population a; "
            + ("disjoint last names: the studied world's last names are new tokens to it" if study.world.population_split == "last-name"
               else "disjoint full names, every name token shared") + f"), {base.steps:,} steps, lr {base.lr:g}, "
            f"weight decay {base.weight_decay:g}" + (f"; on its own people BIO {100 * metrics['bio']:.1f}%, QA-ID {100 * metrics['qa_id']:.1f}%, "
                                                     f"QA-OOD {100 * metrics['qa_ood']:.1f}%" if metrics else "") + "."
        )
    else:
        lines.append("θ_pre: a random initialisation (not a pre-trained model: resets to θ_pre replace weights with noise).")
    qa_lr = train.lr if train.qa_lr is None else train.qa_lr
    qa_decay = train.weight_decay if train.qa_weight_decay is None else train.qa_weight_decay
    lines.append(
        f"Fine-tuning: mixed {train.steps:,} steps (QA share {train.qa_share:g}); two-stage {train.bio_steps:,} BIO steps then "
        f"{train.qa_steps:,} QA steps; batch {train.batch_size}, lr {train.lr:g} (two-stage QA stage {qa_lr:g}), weight decay "
        f"{train.weight_decay:g} (QA stage {qa_decay:g}), AdamW, warmup {train.warmup_steps} then cosine to {train.min_lr_ratio:g}×."
    )
    lines.append(f"Analyses: {json.dumps(to_dict(study.analysis))}.")
    lines.append(machine_line(out))
    return lines


def machine_line(out: Path) -> str:
    """Where θ_pre was made and with what: its sha256, the CPU and the library versions its
    manifest records. Runs of the same commit and seeds are equal bit for bit on one machine; two
    reports to compare should share this line (another CPU kind runs other kernels)."""
    manifest = _manifest(base_path(out))
    if manifest is None:
        return "Made on: θ_pre is not trained in this study (no base run); each run's manifest records the machine it ran on."
    machine = manifest.get("machine") or {}
    versions = manifest.get("versions") or {}
    digest = manifest["files"].get(TUNED, "")
    where = (f"{machine.get('cpu', 'unknown CPU')} ({machine.get('architecture', '?')}, torch kernels {machine.get('cpu_capability', '?')}, "
             f"{machine.get('cores', '?')} cores)" if machine else "a machine its manifest does not describe (made before mechrecall recorded it)")
    return (f"Made on: θ_pre sha256 {digest[:16]}, trained on {where}; torch {versions.get('torch', '?')}, "
            f"transformer-lens {versions.get('transformer-lens', '?')}, transformers {versions.get('transformers', '?')}, "
            f"datasets {versions.get('datasets', '?')}.")


def _base_metrics(out: Path) -> dict[str, float] | None:
    try:
        from mechrecall.runs import open_run

        metrics = open_run(base_path(out)).metrics()
        return {m: metrics[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    except (RunDirError, ArtifactError):
        return None


def run_steps(
    out: Path, seed: int, strategy: str, world_dir: Path, study: StudyConfig, device: str | None, base_hashes: Callable[[], Hashes | None],
) -> list[Step]:
    """Training (with the study's trace) and every registered analysis of one (seed, strategy) run."""
    from mechrecall.influence import TraceConfig
    from mechrecall.registry import ANALYSES
    from mechrecall.runs import BASE, TRAINING_TRACE, TUNED

    path = run_path(out, seed, strategy)
    prefix = f"s{seed}/{strategy}"
    analysis = study.analysis
    model_config = dataclasses.replace(study.model, seed=seed)
    options_model = key_dict(model_config)
    if study.base.pretrained:
        model_config = dataclasses.replace(model_config, name=str(base_path(out).resolve()))
        options_model["name"] = "study base"  # the base's hashes are the step's inputs: the folder may move
    train_config = dataclasses.replace(study.train, strategy=strategy, seed=seed)
    trace = TraceConfig(individuals=analysis.individuals, split="qa_id", measure="lr-grad") if analysis.trace == "training" else None

    def files(*names: str) -> Callable[[], Hashes | None]:
        return lambda: file_hashes(path, names)

    job = {"id": f"{prefix}/train", "kind": "train", "run": train_job, "world": world_dir, "path": path, "model": model_config, "train": train_config,
           "preset": study.name, "device": device, "trace": trace}
    outputs = (BASE, TUNED, "metrics.json") + ((TRAINING_TRACE,) if trace is not None else ())
    steps = [
        Step(f"{prefix}/train", {"model": options_model, "train": key_dict(train_config), "trace": to_dict(trace) if trace else None},
             lambda: _merge(world_hash(world_dir), base_hashes()), files(*outputs),
             lambda report: train_job(job, lambda step: report(step, train_config.total_steps)), total=train_config.total_steps, job=job,
             after=(f"s{seed}/world",) + (("base/train",) if study.base.pretrained else ())),
    ]
    made_by = {output: f"{prefix}/train" for output in outputs}  # artifact of the run -> the step that writes it
    for entry in ANALYSES:
        config = entry.from_study(study) if entry.from_study is not None else None
        if config is None:
            continue

        # an analysis comes after the steps that write what it reads (the graft before the heads
        # ranked by grafted size), so a run's independent analyses run side by side; its manifest
        # is changed under a lock (ArtifactDir._changing), one process at a time
        reads = entry.reads(config)
        if all(name in made_by for name in reads):
            after = tuple(dict.fromkeys(made_by[name] for name in reads)) or (f"{prefix}/train",)
        else:  # reads something no step of the run writes (a post-hoc trace): after all before it
            after = (steps[-1].id,)
        worker_job = {"id": f"{prefix}/{entry.name}", "kind": "analysis", "run": analysis_job, "analysis": entry.name, "path": path, "config": config, "device": device}
        steps.append(Step(f"{prefix}/{entry.name}", {entry.name: to_dict(config)}, files(*reads),
                          files(*entry.outputs(config)), lambda report, job=worker_job: analysis_job(job), job=worker_job,
                          after=after))
        made_by.update({output: f"{prefix}/{entry.name}" for output in entry.outputs(config)})
    return steps


def analysis_job(job: dict[str, Any], on_step: Callable[[int], None] | None = None) -> None:
    """Run one analysis of one run (what a worker runs of an analysis step)."""
    from mechrecall.analysis import execute
    from mechrecall.registry import ANALYSES

    entry = next(a for a in ANALYSES if a.name == job["analysis"])
    execute(entry, job["path"], job["config"], device=job["device"])


# ---- running -----------------------------------------------------------------------------------


def train_job(job: dict[str, Any], on_step: Callable[[int], None] | None = None) -> None:
    """Train one run of the study; a run left there with other settings is trained again."""
    from mechrecall.runs import train_run

    def step(state: Any) -> None:
        if on_step is not None:
            on_step(state.step)

    arguments = dict(preset=job["preset"], device=job["device"], progress=False, on_step=step, trace=job.get("trace"))
    try:
        train_run(job["world"], job["path"], job["model"], job["train"], **arguments)
    except RunDirError:
        if not Path(job["path"]).exists():
            raise
        # the run there was made with other settings (an option changed): train it again
        train_run(job["world"], job["path"], job["model"], job["train"], overwrite=True, **arguments)


class _Stopped(Exception):
    """A worker's training stopped because the study stopped (its checkpoint resumes it)."""


def _leave_with_the_study(parent: int, stop: Any) -> None:
    """In a worker running an analysis (which has no step to stop at): end the process at once
    when the study stops or its process is gone. What it leaves is consistent: every file is
    written atomically, and the step is not in the ledger, so it runs again on resume."""
    import os
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                stopped = os.getppid() != parent or stop.is_set()
            except Exception:  # the study's manager is gone, and so is the study
                stopped = True
            if stopped:
                os._exit(130)

    threading.Thread(target=watch, daemon=True, name="leave-with-the-study").start()


def _worker(job: dict[str, Any], queue: Any, stop: Any) -> tuple[float, float]:
    """A worker process: run one step's ``job["run"](job, on_step)`` — a training (``kind``
    "train") or an analysis — with ``job["threads"]`` CPU threads (a
    fixed number, so the step's bits do not depend on what else runs: see mechrecall.determinism);
    return when it started (epoch seconds) and how long it took. A training reports its progress
    on ``queue`` and stops at the next step once ``stop`` is set or the study's process is gone
    (killed), never training on as an orphan; an analysis leaves at once (``_leave_with_the_study``)."""
    import os
    import warnings

    import datasets
    import torch

    warnings.simplefilter("ignore")
    datasets.disable_progress_bars()  # a worker is quiet: the study's bar shows its progress
    torch.set_num_threads(job["threads"])
    parent = os.getppid()
    started_at, started = time.time(), time.perf_counter()
    if job["kind"] != "train":
        _leave_with_the_study(parent, stop)

    def on_step(step: int) -> None:
        if os.getppid() != parent or (step % 10 == 0 and stop.is_set()):
            raise _Stopped(f"{job['id']} stopped at step {step}")
        if step % 10 == 0:
            queue.put((job["id"], step))

    job["run"](job, on_step)
    return started_at, time.perf_counter() - started


def training_threads(job: dict[str, Any], workers: int, cores: int) -> int:
    """CPU threads of a step run side by side with others: all cores for one that always runs
    alone (the base), else an equal share among ``workers`` — a function of the settings, never of
    which steps happen to be left when a study resumes."""
    return cores if job.get("alone") else max(1, cores // workers)


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the platform has one
    (``taskset``, a container's cpuset), else every core of the machine."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_jobs(device: str | None) -> int:
    """Side-by-side steps: on a CPU with several cores, small models train faster as one
    single-threaded process per run than as one multi-threaded process after another."""
    from mechrecall.runs import resolve_device

    return min(2, usable_cores()) if resolve_device(device) == "cpu" else 1


def run_side_by_side(
    batch: list[Step], workers: int, bar: Progress, tasks: dict[str, Any],
    is_cached: Callable[[Step], bool], finish: Callable[[Step, float, float | None], None],
) -> dict[str, StepOutcome]:
    """Run the steps of ``batch`` (each with a ``job``) in ``workers`` processes, each as soon as
    the steps it comes ``after`` have finished (those outside the batch count as finished) and a
    worker is free — trainings before analyses, the longest work first, so that a run's analyses
    use the core its training freed while the other training goes on. A step found cached when
    its turn comes is skipped. Returns each step's outcome; ``finish`` records each finished one."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    cores = usable_cores()
    members = {step.id for step in batch}
    outcomes: dict[str, StepOutcome] = {}
    waiting = list(batch)

    def ready(step: Step) -> bool:
        return all(before not in members or before in outcomes for before in step.after)

    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queue = manager.Queue()
        stop = manager.Event()
        running: dict[Any, Step] = {}
        try:
            while waiting or running:
                while len(running) < workers:
                    candidates = [step for step in waiting if ready(step)]
                    if not candidates:
                        break
                    step = next((s for s in candidates if (s.job or {}).get("kind") == "train"), candidates[0])
                    waiting.remove(step)
                    if is_cached(step):
                        tasks[step.id] = bar.add_task(f"  {step.id}", total=1, status="[dim]cached")
                        bar.update(tasks[step.id], completed=1)
                        outcomes[step.id] = StepOutcome(step.id, "cached", 0.0)
                        continue
                    job = {**(step.job or {}), "threads": training_threads(step.job or {}, workers, cores)}
                    tasks[step.id] = bar.add_task(f"  {step.id}", total=step.total, status="running")
                    running[pool.submit(_worker, job, queue, stop)] = step
                if not running:
                    if waiting:  # cannot happen with plan()'s order: every step comes after earlier ones
                        raise ArtifactError(f"step {waiting[0].id} waits for a step that never ran: run `mechrecall reproduce` again")
                    break
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    step_id, step_count = queue.get()
                    bar.update(tasks[step_id], completed=step_count)
                for future in done:
                    step = running.pop(future)
                    started_at, seconds = future.result()  # re-raises a worker's error here
                    finish(step, seconds, started_at)
                    outcomes[step.id] = StepOutcome(step.id, "ran", seconds)
                    bar.update(tasks[step.id], completed=step.total, status=f"{seconds:.1f} s")
        except BaseException:  # Ctrl-C, a termination signal, a worker's error: the others stop too
            stop.set()
            for future in running:
                future.cancel()
            raise
    return outcomes


def _open_study(out: Path, config: ReproduceConfig, study: StudyConfig) -> ArtifactDir:
    """The study folder's manifest: created on the first run; a later run with other settings
    updates its config (the steps' cache decides what reruns)."""
    record = {"reproduce": to_dict(config), "study": to_dict(study)}
    manifest = out / "manifest.json"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is a file, not a study folder: choose another --out")
    if out.exists() and not manifest.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} exists and is not a study folder: choose another --out")
    if manifest.exists():
        directory = ArtifactDir.open(out)
        if directory.kind != KIND:
            raise RunDirError(f"{out} is a {directory.kind} directory, not a study folder: choose another --out")
        directory.manifest["config"] = record
        directory.manifest["versions"] = package_versions()
        directory.save_manifest()
        return directory
    return ArtifactDir.create(out, KIND, record, {"seeds": list(config.seeds)})


def _read_ledger(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / LEDGER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def reproduce(
    out: Path | str, config: ReproduceConfig, device: str | None = None, progress: bool = True,
    console: Console | None = None, jobs: int | None = None,
) -> list[StepOutcome]:
    """Run (or skip, when cached) every step of the study; return what each step did.

    ``jobs`` trainings run side by side in worker processes (default: 2 on a multi-core CPU, 1
    on a GPU).
    """

    config.validate()
    resolve_device(device)
    jobs = default_jobs(device) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out)
    study = config.study()
    from mechrecall.artifacts import output_lock

    with output_lock(out):
        return _reproduce_locked(out, config, study, device, progress, console, jobs)


def _reproduce_locked(
    out: Path, config: ReproduceConfig, study: StudyConfig, device: str | None, progress: bool, console: Console | None, jobs: int,
) -> list[StepOutcome]:
    import warnings

    directory = _open_study(out, config, study)
    steps = plan(out, config, study, device)
    ledger = _read_ledger(out)
    outcomes: list[StepOutcome] = []
    done_aside: dict[str, StepOutcome] = {}  # steps run (or found cached) by the worker processes
    began = time.perf_counter()

    def is_cached(step: Step) -> bool:
        key, record = step.key(), ledger.get(step.id)
        return key is not None and bool(record) and record.get("key") == key and step.outputs() == record.get("outputs")

    def finish(step: Step, seconds: float, started_at: float | None = None) -> None:
        produced = step.outputs()
        if produced is None:
            raise ArtifactError(f"step {step.id} finished without writing its outputs: run `mechrecall reproduce` again")
        ledger[step.id] = {"key": step.key(), "outputs": produced, "seconds": round(seconds, 2),
                           "started": round(started_at if started_at is not None else time.time() - seconds, 2)}
        write_json_atomic(out / LEDGER, ledger)
        if progress and not console.is_terminal:  # a log file: a line per finished step
            console.print(f"{step.id}: {seconds:.1f} s", highlight=False)
    console = console or Console(stderr=True)
    columns = (
        TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overall = bar.add_task(f"[bold]study ({config.preset}, seed{'s' if len(config.seeds) > 1 else ''} {', '.join(map(str, config.seeds))})", total=len(steps), status="")
        tasks: dict[str, Any] = {}
        for index, step in enumerate(steps):
            if step.id in done_aside:
                outcomes.append(done_aside[step.id])
                bar.advance(overall)
                continue
            if is_cached(step):
                cached = bar.add_task(f"  {step.id}", total=1, status="[dim]cached")
                bar.update(cached, completed=1)  # finished now: its clock stops at zero
                outcomes.append(StepOutcome(step.id, "cached", 0.0))
                bar.advance(overall)
                continue
            if step.job is not None and jobs > 1:
                # the base alone (on every core); else this and every later step a worker can run,
                # side by side as their inputs become ready
                batch = [step] if step.job.get("alone") else [
                    s for s in steps[index:] if s.job is not None and not s.job.get("alone") and s.id not in done_aside
                ]
                done_aside.update(run_side_by_side(batch, jobs, bar, tasks, is_cached, finish))
                outcomes.append(done_aside[step.id])
                bar.advance(overall)
                continue
            task = bar.add_task(f"  {step.id}", total=step.total, status="running")
            started = time.perf_counter()

            def report(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            step.action(report)
            seconds = time.perf_counter() - started
            finish(step, seconds)
            bar.update(task, completed=step.total, total=step.total, status=f"{seconds:.1f} s")
            bar.advance(overall)
            outcomes.append(StepOutcome(step.id, "ran", seconds))
    directory.reload()
    directory.record(LEDGER)
    ran = [o for o in outcomes if o.status == "ran"]
    directory.mark("complete", last_run={"ran": [o.id for o in ran], "cached": len(outcomes) - len(ran), "seconds": round(sum(o.seconds for o in ran), 2),
                                         "wall_seconds": round(time.perf_counter() - began, 2), "jobs": jobs})
    return outcomes


def export_report(out: Path | str, destination: Path | str) -> list[Path]:
    """Copy the study's report and figures into ``destination`` (e.g. the repository's
    ``figures/``), each file atomically; the links inside ``report.md`` stay valid."""
    import shutil

    from mechrecall.artifacts import atomic_path

    out, destination = Path(out), Path(destination)
    check_destination(destination)
    if not (out / "report.md").is_file():
        raise ArtifactError(f"{out} has no report.md: run `mechrecall reproduce --out {out}` first")
    sources = [out / "report.md", out / "report.html", *sorted((out / "figures").glob("*"))]
    sources += [out / RESULTS_TABLE] if (out / RESULTS_TABLE).is_file() else []
    written = []
    for source in sources:
        target = destination / source.relative_to(out)
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
        written.append(target)
    return written


def check_destination(destination: Path | str) -> None:
    """Refuse a ``--figures`` destination that is a file (before the study runs, not after)."""
    destination = Path(destination)
    for parent in destination.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--figures {destination}: {parent} is a file, not a folder")
    if any(len(part.encode()) > 255 for part in destination.parts):
        raise ConfigError(f"--figures {str(destination)[:40]}…: a name longer than the file system allows (255 bytes)")
    for folder in (destination, destination / "figures"):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--figures {destination}: {folder} is a file; give a folder")
