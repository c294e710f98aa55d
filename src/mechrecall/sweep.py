"""Sweeps over the levers of the strategy gap: each trial is a preset plus overrides, trained
with both strategies over seeds; results as a table (mean and spread) and a plotly figure.

A trial's overrides name fields of ``WorldConfig``, ``TrainConfig`` or ``ModelConfig`` (a name
in more than one goes to the world first, then training, then the model), and of the base θ_pre:
``base`` is its recipe (``random``, ``bio`` or ``mixed``, see :class:`BaseConfig`) and
``base_<field>`` any other field of it (``base_steps=4000``). With a pre-trained base the
studied world is population "a" and the base's world population "b". A base is trained once per
base config and model (``bases/<hash>``) and shared by every trial, seed and strategy that uses
it. Every run is an ordinary run directory, so an interrupted sweep resumes and finished runs
are reused.

Besides the end accuracies, a row holds what the presets issue asks of each setting: two-stage
BIO accuracy at the end of its BIO stage, ‖θ_task − θ_pre‖/‖θ_pre‖, the chance level of each
split (majority value per attribute) and the QA-OOD left after resetting 1% of every tensor's
elements, drawn at random, to θ_pre (a survivability check of θ_pre, mean over draws).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechrecall.artifacts import ArtifactDir, write_json_atomic
from mechrecall.config import (
    STRATEGIES,
    BaseConfig,
    ModelConfig,
    TrainConfig,
    WorldConfig,
    get_preset,
    key_dict,
)
from mechrecall.data.store import create_world, save_world
from mechrecall.errors import ConfigError, OutputBusyError, RunDirError
from mechrecall.runs import BASE, TUNED, Run, open_run, train_run

SUMMARIZED = (
    "bio", "qa_id", "qa_ood", "bio_after_stage1", "qa_ood_after_stage1", "chance_qa_ood", "relative_update", "reset_survival",
)
RESET_FRACTION = 0.01
RESET_DRAWS = 3


@dataclass(frozen=True)
class Trial:
    name: str
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, preset: str = "tiny") -> Trial:
        """``name:key=value,key=value`` (values parsed as JSON where they can be)."""
        name, _, body = text.partition(":")
        overrides: dict[str, Any] = {}
        for item in filter(None, body.split(",")):
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"trial {name!r}: {item!r} is not key=value")
            try:
                overrides[key.strip().replace("-", "_")] = json.loads(raw)
            except json.JSONDecodeError:
                overrides[key.strip().replace("-", "_")] = raw
        trial = cls(name=name.strip(), preset=preset, overrides=overrides)
        trial.configs(seed=0)  # validate now
        return trial

    def configs(self, seed: int) -> tuple[WorldConfig, ModelConfig, TrainConfig, BaseConfig]:
        study = get_preset(self.preset)
        parts: dict[str, dict[str, Any]] = {"world": {}, "train": {}, "model": {}, "base": {}}
        homes = (("world", study.world), ("train", study.train), ("model", study.model))
        base_fields = {f.name for f in dataclasses.fields(BaseConfig)}
        for key, value in self.overrides.items():
            if key == "base":
                parts["base"]["recipe"] = value
                continue
            if key.startswith("base_") and key[5:] in base_fields:
                parts["base"][key[5:]] = value
                continue
            home = next((part for part, config in homes if key in {f.name for f in dataclasses.fields(config)}), None)
            if home is None:
                raise ConfigError(f"trial {self.name!r}: unknown setting {key!r}")
            parts[home][key] = value
        base = dataclasses.replace(study.base, **parts["base"])
        try:
            base.validate()
        except ConfigError as error:
            raise ConfigError(f"trial {self.name!r}: base: {error}") from None
        world = dataclasses.replace(study.world, **{**parts["world"], "seed": seed})
        if base.pretrained:
            world = dataclasses.replace(world, population="a")
        train = dataclasses.replace(study.train, **{**parts["train"], "seed": seed})
        model = dataclasses.replace(study.model, **{**parts["model"], "seed": seed})
        world.validate()
        train.validate()
        return world, model, train, base


def _key(*configs: Any) -> str:
    # a world at the neutral population split keyed as before the setting existed
    text = json.dumps([key_dict(c) if isinstance(c, WorldConfig) else dataclasses.asdict(c) for c in configs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _world_dir(root: Path, world: WorldConfig) -> Path:
    path = root / "worlds" / _key(world)
    if not (path / "manifest.json").exists():
        save_world(create_world(world), path, overwrite=path.exists())
    return path


BASE_POLL_SECONDS = 10.0


def train_base(
    root: Path, base: BaseConfig, model: ModelConfig, template: TrainConfig, preset: str, device: str | None, progress: bool,
    population_split: str = "last-name",
) -> Run:
    """The pre-trained base of ``base`` (trained once, under ``root/bases/<hash>``). When another
    sweep (side by side, one per core) is pre-training the same base, wait for it and reuse it:
    the base is shared, never trained twice, and the second sweep does not fail."""
    import sys
    import time

    model = dataclasses.replace(model, seed=base.seed)
    training = base.train(template)
    world_path = _world_dir(root, base.world(population_split))
    out = root / "bases" / _key(base, model)
    waiting = False
    while True:
        try:
            return train_run(world_path, out, model, training, preset=preset, device=device, progress=progress or "lines")
        except OutputBusyError:
            if not waiting:
                print(f"waiting for {out}: another process holds this base (pre-training it, or opening the finished one); it is reused once that ends", file=sys.stderr, flush=True)
                waiting = True
            time.sleep(BASE_POLL_SECONDS)


def _finished_twin(root: Path, config: dict[str, Any]) -> Run | None:
    """A finished run under ``root`` trained with exactly ``config`` (another trial's), if any:
    a trial that changes only two-stage settings reuses the mixed run of the one it varies."""
    from mechrecall.errors import ArtifactError
    from mechrecall.runs import effective_config as effective

    wanted = effective(config)
    for manifest in sorted(root.glob("*/*/manifest.json")):
        try:
            found = json.loads(manifest.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if found.get("kind") == "run" and found.get("status") == "complete" and effective(found.get("config") or {}) == wanted:
            try:
                return open_run(manifest.parent)
            except (RunDirError, ArtifactError):
                continue
    return None


def run_trial(trial: Trial, seed: int, strategy: str, root: Path, device: str | None, progress: bool) -> Run:
    from mechrecall.runs import run_config

    world, model, train, base = trial.configs(seed)
    train = dataclasses.replace(train, strategy=strategy)
    world_path = _world_dir(root, world)
    if base.pretrained:
        base_run = train_base(root, base, model, train, trial.preset, device, progress, world.population_split)
        model = dataclasses.replace(model, name=str(base_run.path))
    out = root / trial.name / f"{strategy}-s{seed}"
    if not out.exists():
        twin = _finished_twin(root, run_config(ArtifactDir.open(world_path), model, train, trial.preset))
        if twin is not None:
            return twin
    return train_run(world_path, out, model, train, preset=trial.preset, device=device, progress=progress or "lines")


def run_sweep(
    trials: list[Trial], seeds: list[int], root: Path, strategies: tuple[str, ...] = STRATEGIES, device: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every trial × seed × strategy (reusing finished runs); write ``results.json``
    (merged with the rows already there, so sweeps run side by side share one table)."""
    rows = []
    for trial in trials:
        for seed in seeds:
            for strategy in strategies:
                run = run_trial(trial, seed, strategy, root, device, progress)
                rows.append(result_row(trial.name, trial.overrides, seed, strategy, run))
                _merge_results(root / "results.json", rows[-1])
    return rows


def _merge_results(path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to the table at ``path`` under an exclusive lock: sweeps side by side that
    finish together each read the other's rows before writing (a lost row is a lost run)."""
    import fcntl

    with open(path.parent / f".{path.name}.lock", "a+") as lock:  # kept: removing it would race a waiter
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text()) if path.exists() else []
        rows = [r for r in rows if (r["trial"], r["seed"], r["strategy"]) != (row["trial"], row["seed"], row["strategy"])]
        write_json_atomic(path, rows + [row])


def reset_survival(run: Run, fraction: float = RESET_FRACTION, draws: int = RESET_DRAWS) -> float:
    """QA-OOD accuracy after resetting ``fraction`` of every tensor's elements (drawn at random,
    draw ``d`` seeded by ``d``) to θ_pre, mean over draws, as a share of θ_task's QA-OOD."""
    import torch

    from mechrecall.evaluation import accuracy_evaluator
    from mechrecall.masks import set_weights

    tuned_accuracy = run.metrics()["qa_ood"]["accuracy"]
    if tuned_accuracy == 0:
        return float("nan")
    model = run.load_model("tuned")
    base, tuned = run.directory.load_tensors(BASE), run.directory.load_tensors(TUNED)
    evaluator = accuracy_evaluator(model.tokenizer, run.world().dataset, metrics=("qa_ood",))
    kept = []
    for draw in range(draws):
        generator = torch.Generator().manual_seed(draw)
        take_tuned = {}
        for name, tensor in tuned.items():
            chosen = torch.zeros(tensor.numel(), dtype=torch.bool)
            chosen[torch.randperm(tensor.numel(), generator=generator)[: round(fraction * tensor.numel())]] = True
            take_tuned[name] = ~chosen.reshape(tensor.shape)
        set_weights(model, base, tuned, take_tuned)
        kept.append(evaluator(model)["qa_ood"] / tuned_accuracy)
    return statistics.fmean(kept)


def result_row(trial: str, overrides: dict[str, Any], seed: int, strategy: str, run: Run) -> dict[str, Any]:
    """One trained run as a row of the sweep's table: its accuracies, the measures of θ_pre and
    of forgetting, and training seconds."""
    metrics = run.metrics()
    training = run.directory.manifest.get("training", {})
    evals = training.get("evals", [])
    stage_one = [e for e in evals if e["phase"] == "bio"] if strategy == "two-stage" else []
    return {
        "trial": trial, "overrides": overrides, "seed": seed, "strategy": strategy, "run": str(run.path),
        "bio": metrics["bio"]["accuracy"], "qa_id": metrics["qa_id"]["accuracy"], "qa_ood": metrics["qa_ood"]["accuracy"],
        "bio_after_stage1": stage_one[-1]["bio"] if stage_one else None,
        # what the base's own skill extracts from the newly stored BIOs before any QA is trained
        "qa_ood_after_stage1": stage_one[-1]["qa_ood"] if stage_one else None,
        "chance_qa_ood": training.get("chance", {}).get("qa_ood"),
        # which facts are extracted: in a world whose BIO is not permuted, the one stated first can be
        # read off the name where the rest are read off the facts before them
        "qa_ood_by_attribute": metrics["qa_ood"].get("by_attribute"),
        "relative_update": training.get("relative_update"),
        "reset_survival": reset_survival(run),
        "evals": evals,
        "seconds": training.get("seconds"),
    }


def study_rows(study: Path) -> list[dict[str, Any]]:
    """The rows of a ``mechrecall reproduce`` study folder's trained runs (every seed and strategy
    whose training has finished), so the table can be read off a study without training again."""
    directory = ArtifactDir.open(study)
    if directory.kind != "study":
        raise RunDirError(f"{study} is a {directory.kind} directory, not a study folder: give the --out of `mechrecall reproduce`")
    record = directory.manifest["config"]["reproduce"]
    overrides = record.get("overrides") or {}
    trial = record["preset"] + "".join(f" {key}={value}" for key, value in overrides.items())
    rows = []
    seeds = record["seeds"]
    for seed in (range(int(seeds)) if isinstance(seeds, int) else seeds):
        for strategy in record.get("strategies", STRATEGIES):
            path = study / f"s{seed}" / strategy
            if not (path / "manifest.json").is_file():
                continue  # not trained (yet): the table has the seeds that are
            run = open_run(path)
            if "metrics.json" not in run.directory.manifest["files"]:
                continue
            rows.append(result_row(trial, overrides, seed, strategy, run))
    return rows


def _measure(row: dict[str, Any], metric: str) -> float | None:
    """A row's value of ``metric``; a row written before ``qa_ood_after_stage1`` was recorded
    has it in its evaluations (the last one of the BIO stage)."""
    if metric == "qa_ood_after_stage1" and metric not in row and row.get("strategy") == "two-stage":
        stage_one = [e for e in row.get("evals") or [] if e.get("phase") == "bio"]
        return stage_one[-1]["qa_ood"] if stage_one else None
    return row.get(metric)


def trained_steps(row: dict[str, Any]) -> int | None:
    """How many optimizer steps a row's run trained (its last evaluation is at its end); None for
    a row written without its evaluations."""
    evals = row.get("evals") or []
    return max(e["step"] for e in evals) if evals else None


def equal_steps_gap(mixed: dict[str, Any], two_stage: dict[str, Any]) -> tuple[float, int] | None:
    """The gap with both strategies held to the same number of steps: each strategy's QA-OOD at its
    last evaluation at or before the shorter run's end (the longer run's step may fall short of it,
    between evaluations), and that step count. A trial that trains mixed for 12,000 steps and
    two-stage for 3,500 otherwise credits mixed with more than three times the training. None when
    a row has no evaluations or the longer run none at or before the shorter's end."""
    ends = [trained_steps(mixed), trained_steps(two_stage)]
    if None in ends:
        return None
    length = min(ends)  # type: ignore[type-var]
    at: list[float] = []
    for row in (mixed, two_stage):
        before = [e for e in row["evals"] if e["step"] <= length]
        if not before:
            return None
        at.append(max(before, key=lambda e: e["step"])["qa_ood"])
    return at[0] - at[1], length


def best_kept_qa_ood(row: dict[str, Any]) -> tuple[float, int] | None:
    """The two-stage model at its strongest: the highest QA-OOD of any evaluation along its QA
    stage at which it still meets the study's preconditions (QA-ID ≥ 95%, BIO ≥ 90%), and that
    evaluation's step. Chosen on the held-out people themselves, it is an upper bound on what
    two-stage training could show, so a gap read against it is the conservative one. None when
    no evaluation meets them (or the row has none)."""
    from mechrecall.report import QA_ID_MINIMUM
    from mechrecall.report.table import KEEPS_FACTS

    kept = [e for e in row.get("evals") or [] if e.get("phase") != "bio" and e["qa_id"] >= QA_ID_MINIMUM and e["bio"] >= KEEPS_FACTS]
    if not kept:
        return None
    best = max(kept, key=lambda e: (e["qa_ood"], -e["step"]))
    return best["qa_ood"], best["step"]


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trial: mean and spread (population std) over seeds of each strategy's accuracies and
    of the gap (mixed QA-OOD − two-stage QA-OOD, paired by seed), the gap at equal steps
    (:func:`equal_steps_gap`), the gap against two-stage at its best evaluation that keeps the
    preconditions (:func:`best_kept_qa_ood`) and each strategy's training length."""
    summary = []
    for trial in dict.fromkeys(row["trial"] for row in rows):
        entry: dict[str, Any] = {"trial": trial}
        by_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for row in (r for r in rows if r["trial"] == trial):
            by_seed.setdefault(row["seed"], {})[row["strategy"]] = row
        for strategy in STRATEGIES:
            for metric in SUMMARIZED:
                values = [_measure(s[strategy], metric) for s in by_seed.values() if strategy in s]
                values = [v for v in values if v is not None and v == v]  # missing or NaN: left out
                if values:
                    entry[f"{strategy}/{metric}"] = (statistics.fmean(values), statistics.pstdev(values))
        gaps = [s["mixed"]["qa_ood"] - s["two-stage"]["qa_ood"] for s in by_seed.values() if len(s) == 2]
        if gaps:
            entry["gap"] = (statistics.fmean(gaps), statistics.pstdev(gaps))
        paired = [equal_steps_gap(s["mixed"], s["two-stage"]) for s in by_seed.values() if len(s) == 2]
        paired = [p for p in paired if p is not None]
        if paired:
            entry["gap_equal_steps"] = (statistics.fmean(g for g, _ in paired), statistics.pstdev(g for g, _ in paired))
            entry["equal_steps"] = sorted({step for _, step in paired})
        strongest = [(s["mixed"]["qa_ood"], best_kept_qa_ood(s["two-stage"])) for s in by_seed.values() if len(s) == 2]
        strongest = [(ood, best) for ood, best in strongest if best is not None]
        if strongest:
            entry["gap_best_kept"] = (statistics.fmean(o - b for o, (b, _) in strongest), statistics.pstdev(o - b for o, (b, _) in strongest))
            entry["best_kept_steps"] = sorted({step for _, (_, step) in strongest})
        lengths = {strategy: sorted({n for s in by_seed.values() if strategy in s for n in [trained_steps(s[strategy])] if n})
                   for strategy in STRATEGIES}
        entry["steps"] = {strategy: values for strategy, values in lengths.items() if values}
        entry["seeds"] = len(by_seed)
        seconds = [r["seconds"] for r in rows if r["trial"] == trial and r["seconds"]]
        entry["train_seconds"] = sum(seconds)
        summary.append(entry)
    return summary


def summary_figure(summary: list[dict[str, Any]]):
    import plotly.graph_objects as go

    figure = go.Figure()
    for strategy in STRATEGIES:
        key = f"{strategy}/qa_ood"
        trials = [e for e in summary if key in e]
        figure.add_trace(
            go.Bar(
                name=f"{strategy} QA-OOD", x=[e["trial"] for e in trials], y=[100 * e[key][0] for e in trials],
                error_y={"type": "data", "array": [100 * e[key][1] for e in trials]},
            )
        )
    figure.update_layout(barmode="group", yaxis_title="QA-OOD exact match (%)", template="plotly_white", title="Strategy gap by trial")
    return figure
