"""``mechrecall reproduce``: the whole study for both strategies, then its report.

The study is a list of :class:`Step` s — per seed: the world; per seed and strategy: training
(with evaluation), the post-hoc trace, the shared set, grafting, the ablations with their random
controls, head rankings and ablate-heads curves, the attention case study and activation patching;
last, the report. Each step is cached by its inputs: its key is the sha256 of its options and of
the sha256s (from the manifests) of the artifacts it reads. ``steps.json`` in the study folder
records, per step, the key it ran with and the sha256s of what it wrote; a step whose key and
outputs are unchanged is skipped. A second run is therefore a no-op, a changed option reruns the
steps that depend on it (and, through their outputs' hashes, only what changed downstream), and an
interrupted study resumes: finished steps are skipped and training resumes from its checkpoint.

Layout of ``out``::

    manifest.json   the study's config (preset, seeds, analyses), versions, files
    steps.json      the cache: key, outputs and seconds of every finished step
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mechrecall.artifacts import ArtifactDir, package_versions, write_json_atomic
from mechrecall.config import STRATEGIES, AnalysisConfig, StudyConfig, get_preset, override_study, to_dict
from mechrecall.errors import ArtifactError, ConfigError, RunDirError
from mechrecall.runs import resolve_device

LEDGER = "steps.json"
KIND = "study"
REPORT_FORMAT = 3  # part of the report step's key: bump when the report's content changes

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
    job: dict[str, Any] | None = None  # training: what a worker process needs to run it (picklable)

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


@dataclass(frozen=True)
class ReproduceConfig:
    preset: str = "tiny"
    seeds: int = 1  # seeds 0 … seeds−1 (world, initialisation and batch order)
    strategies: tuple[str, ...] = STRATEGIES
    overrides: dict[str, Any] = field(default_factory=dict)  # settings of the preset changed (--set key=value)

    def study(self) -> StudyConfig:
        return override_study(get_preset(self.preset), self.overrides)

    def validate(self) -> None:
        study = self.study()
        if study.model.source == "checkpoint":
            from mechrecall.models import resolve_checkpoint

            resolve_checkpoint(study.model.name)  # not available offline: say so before anything runs
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"unknown strategy {unknown[0] if unknown else ''!r}: choose from {', '.join(STRATEGIES)}")


def run_path(out: Path, seed: int, strategy: str) -> Path:
    return out / f"s{seed}" / strategy


def plan(out: Path, config: ReproduceConfig, study: StudyConfig, device: str | None) -> list[Step]:
    """Every step of the study in the order it runs."""
    from mechrecall.data.store import create_world, save_world

    analysis = study.analysis
    steps: list[Step] = []
    for seed in range(config.seeds):  # every world first: the trainings may then run side by side
        world_config = dataclasses.replace(study.world, seed=seed)
        world_dir = out / "worlds" / f"s{seed}"

        def make_world(report: Report, world_config=world_config, world_dir=world_dir) -> None:
            save_world(create_world(world_config), world_dir, overwrite=True)

        steps.append(Step(f"s{seed}/world", {"world": to_dict(world_config)}, lambda: {}, lambda d=world_dir: world_hash(d), make_world))
    for seed in range(config.seeds):
        for strategy in config.strategies:
            steps += run_steps(out, seed, strategy, out / "worlds" / f"s{seed}", study, analysis, device)
    runs = [run_path(out, seed, strategy) for seed in range(config.seeds) for strategy in config.strategies]
    reported = ("metrics.json", "shared.json", "graft.json", "ablation.json", "heads.json", "attention.json", "patching.json")

    def report_inputs() -> Hashes | None:
        return _merge(*(file_hashes(r, reported) for r in runs))

    def make_report(report: Report) -> None:
        from mechrecall.report import group_runs, write_report

        preamble = [
            f"mechrecall reproduce --preset {config.preset} --seeds {config.seeds}"
            + "".join(f" --set {key}={json.dumps(value)}" for key, value in config.overrides.items()) + f": {study.description}.",
            f"World: {study.world.people:,} people; model: {study.model.name}; training: {study.train.steps:,} mixed steps, "
            f"{study.train.bio_steps:,} + {study.train.qa_steps:,} two-stage steps, batch {study.train.batch_size}, "
            f"lr {study.train.lr:g}, weight decay {study.train.weight_decay:g}, QA share {study.train.qa_share:g}.",
            f"Analyses: {json.dumps(to_dict(analysis))}.",
        ]
        write_report(group_runs(runs), out, title=f"mechrecall: the {config.preset} preset beside the study", preamble=preamble, png=png)
        ArtifactDir.open(out).record("report.md")
        ArtifactDir.open(out).record("report.html")

    from mechrecall.report import static_exporter

    png = static_exporter()  # a report made without PNGs is made again once an exporter is there
    steps.append(Step("report", {"preset": config.preset, "format": REPORT_FORMAT, "overrides": config.overrides, "png": png}, report_inputs, lambda: file_hashes(out, ("report.md", "report.html"), require_complete=False, label="study"), make_report))
    return steps


def run_steps(out: Path, seed: int, strategy: str, world_dir: Path, study: StudyConfig, analysis: AnalysisConfig, device: str | None) -> list[Step]:
    """Training and every analysis of one (seed, strategy) run."""
    from mechrecall.ablation import ablate_run
    from mechrecall.attention import attention_run
    from mechrecall.grafting import GRAFT, GraftConfig, graft_run
    from mechrecall.heads import ablate_heads_run
    from mechrecall.patching import patching_run
    from mechrecall.runs import BASE, TUNED
    from mechrecall.trace import TraceConfig
    from mechrecall.tracing import SHARED_MASK, TRACE_FILES, shared_run, trace_run

    path = run_path(out, seed, strategy)
    prefix = f"s{seed}/{strategy}"
    model_config = dataclasses.replace(study.model, seed=seed)
    train_config = dataclasses.replace(study.train, strategy=strategy, seed=seed)
    trace_config = TraceConfig(individuals=analysis.individuals, split="qa_id", measure="grad", seed=0)
    graft_config = GraftConfig(sparsity=analysis.graft_sparsity, steps=analysis.graft_steps, seed=0)
    trace_file = TRACE_FILES["posthoc"]

    def files(*names: str) -> Callable[[], Hashes | None]:
        return lambda: file_hashes(path, names)

    job = {
        "id": f"{prefix}/train", "world": world_dir, "path": path, "model": model_config, "train": train_config,
        "preset": study.name, "device": device,
    }

    def train(report: Report) -> None:
        train_job(job, lambda step: report(step, train_config.total_steps))

    def trace(report: Report) -> None:
        trace_run(path, trace_config, device=device, progress=False)

    def shared(report: Report) -> None:
        shared_run(path, fraction=analysis.shared_fraction)

    def graft(report: Report) -> None:
        graft_run(path, graft_config, device=device, progress=False)

    def ablate(report: Report) -> None:
        for done, what in enumerate(("shared", "random", "graft-minus-shared")):
            ablate_run(path, what, seeds=analysis.control_seeds, device=device)
            report(done + 1, 3)

    def heads(report: Report) -> None:
        ablate_heads_run(path, top=analysis.heads_top, rank_by="shared", method="reset", curve=list(analysis.heads_curve), device=device)

    def attention(report: Report) -> None:
        from mechrecall.runs import open_run

        cfg = open_run(path).spec()["tl_config"]
        count = min(analysis.attention_heads, cfg["n_layers"] * cfg["n_heads"])
        attention_run(path, f"top:shared:{count}", people=analysis.attention_people, device=device)

    def patch(report: Report) -> None:
        patching_run(path, pairs=analysis.patch_pairs, device=device)

    model_files = files(BASE, TUNED)
    return [
        Step(f"{prefix}/train", {"model": to_dict(model_config), "train": to_dict(train_config)},
             lambda: world_hash(world_dir), files(BASE, TUNED, "metrics.json"), train, total=train_config.total_steps, job=job),
        Step(f"{prefix}/trace", {"trace": to_dict(trace_config)}, model_files, files(trace_file), trace),
        Step(f"{prefix}/shared", {"fraction": analysis.shared_fraction}, files(trace_file), files("shared.json", SHARED_MASK), shared),
        Step(f"{prefix}/graft", {"graft": to_dict(graft_config)}, lambda: _merge(model_files(), files(SHARED_MASK)()),
             files("graft.json", GRAFT), graft),
        Step(f"{prefix}/ablate", {"control_seeds": analysis.control_seeds}, lambda: _merge(model_files(), files(SHARED_MASK, GRAFT)()),
             files("ablation.json"), ablate, total=3),
        Step(f"{prefix}/heads", {"top": analysis.heads_top, "curve": list(analysis.heads_curve)},
             lambda: _merge(model_files(), files(SHARED_MASK, GRAFT)()), files("heads.json"), heads),
        Step(f"{prefix}/attention", {"heads": analysis.attention_heads, "people": analysis.attention_people},
             lambda: _merge(model_files(), files(SHARED_MASK)()), files("attention.json"), attention),
        Step(f"{prefix}/patch", {"pairs": analysis.patch_pairs}, model_files, files("patching.json"), patch),
    ]


# ---- running -----------------------------------------------------------------------------------


def train_job(job: dict[str, Any], on_step: Callable[[int], None] | None = None) -> None:
    """Train one run of the study; a run left there with other settings is trained again."""
    from mechrecall.runs import train_run

    def step(state: Any) -> None:
        if on_step is not None:
            on_step(state.step)

    arguments = dict(preset=job["preset"], device=job["device"], progress=False, on_step=step)
    try:
        train_run(job["world"], job["path"], job["model"], job["train"], **arguments)
    except RunDirError:
        if not Path(job["path"]).exists():
            raise
        # the run there was made with other settings (an option changed): train it again
        train_run(job["world"], job["path"], job["model"], job["train"], overwrite=True, **arguments)


def _train_worker(job: dict[str, Any], cores: int, queue: Any, active: Any) -> float:
    """A worker process: train with an equal share of the CPU cores among the workers still
    training (re-read every 100 steps: when one finishes, the others take its cores), reporting
    progress on ``queue``."""
    import warnings

    import torch

    warnings.simplefilter("ignore")

    def share() -> int:
        return max(1, cores // max(1, active.value))

    torch.set_num_threads(share())

    def on_step(step: int) -> None:
        if step % 10 == 0:
            queue.put((job["id"], step))
        if step % 100 == 0 and torch.get_num_threads() != share():
            torch.set_num_threads(share())

    started = time.perf_counter()
    train_job(job, on_step)
    return time.perf_counter() - started


def default_jobs(device: str | None) -> int:
    """Side-by-side trainings: on a CPU with several cores, small models train faster as one
    single-threaded process per run than as one multi-threaded process after another."""
    import os

    from mechrecall.runs import resolve_device

    return max(1, min(2, os.cpu_count() or 1)) if resolve_device(device) == "cpu" else 1


def _train_in_parallel(jobs: list[Step], workers: int, bar: Progress, tasks: dict[str, Any]) -> dict[str, float]:
    """Run the training steps ``jobs`` in ``workers`` processes; return each one's seconds."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    seconds: dict[str, float] = {}
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queue = manager.Queue()
        active = manager.Value("i", min(workers, len(jobs)))  # trainings running now
        futures = {pool.submit(_train_worker, step.job, os.cpu_count() or 1, queue, active): step for step in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while not queue.empty():
                step_id, step_count = queue.get()
                bar.update(tasks[step_id], completed=step_count)
            for future in done:
                step = futures[future]
                seconds[step.id] = future.result()  # re-raises a worker's error here
                active.value = max(1, min(workers, len(pending)))
                bar.update(tasks[step.id], completed=step.total, status=f"{seconds[step.id]:.1f} s")
    return seconds


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
    return ArtifactDir.create(out, KIND, record, {"seeds": config.seeds})


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
    import warnings

    config.validate()
    resolve_device(device)
    jobs = default_jobs(device) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out)
    study = config.study()
    directory = _open_study(out, config, study)
    steps = plan(out, config, study, device)
    ledger = _read_ledger(out)
    outcomes: list[StepOutcome] = []
    trained_aside: dict[str, float] = {}

    def is_cached(step: Step) -> bool:
        key, record = step.key(), ledger.get(step.id)
        return key is not None and bool(record) and record.get("key") == key and step.outputs() == record.get("outputs")

    def finish(step: Step, seconds: float) -> None:
        produced = step.outputs()
        if produced is None:
            raise ArtifactError(f"step {step.id} finished without writing its outputs: run `mechrecall reproduce` again")
        ledger[step.id] = {"key": step.key(), "outputs": produced, "seconds": round(seconds, 2)}
        write_json_atomic(out / LEDGER, ledger)
        if progress and not console.is_terminal:  # a log file: a line per finished step
            console.print(f"{step.id}: {seconds:.1f} s", highlight=False)
    console = console or Console(stderr=True)
    columns = (
        TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overall = bar.add_task(f"[bold]study ({config.preset}, {config.seeds} seed{'s' if config.seeds > 1 else ''})", total=len(steps), status="")
        tasks: dict[str, Any] = {}
        for index, step in enumerate(steps):
            if step.id in trained_aside:
                outcomes.append(StepOutcome(step.id, "ran", trained_aside[step.id]))
                bar.advance(overall)
                continue
            if is_cached(step):
                cached = bar.add_task(f"  {step.id}", total=1, status="[dim]cached")
                bar.update(cached, completed=1)  # finished now: its clock stops at zero
                outcomes.append(StepOutcome(step.id, "cached", 0.0))
                bar.advance(overall)
                continue
            if step.job is not None and jobs > 1:
                # this and every later pending training whose world exists: side by side
                batch = [step] + [s for s in steps[index + 1:] if s.job is not None and s.key() is not None and not is_cached(s)]
                for s in batch:
                    tasks[s.id] = bar.add_task(f"  {s.id}", total=s.total, status="running")
                for step_id, seconds in _train_in_parallel(batch, jobs, bar, tasks).items():
                    finish(next(s for s in batch if s.id == step_id), seconds)
                    trained_aside[step_id] = seconds
                outcomes.append(StepOutcome(step.id, "ran", trained_aside[step.id]))
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
    directory.mark("complete", last_run={"ran": [o.id for o in ran], "cached": len(outcomes) - len(ran), "seconds": round(sum(o.seconds for o in ran), 2)})
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
    for folder in (destination, destination / "figures"):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--figures {destination}: {folder} is a file; give a folder")
