"""Sweeps over the levers of the strategy gap: each trial is a preset plus overrides, trained
with both strategies over seeds; results as a table (mean and spread) and a plotly figure.

A trial's overrides name fields of ``WorldConfig``, ``TrainConfig`` or ``ModelConfig`` (a name
in more than one goes to the world first, then training, then the model), plus ``base``:
``random`` (θ_pre = a fresh initialisation, the default) or ``disjoint`` (θ_pre = a model of the
same size trained with the mixed strategy on a disjoint population, population "b", while the
studied world is population "a"). Every run is an ordinary run directory, so an interrupted
sweep resumes and finished runs are reused.
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
from mechrecall.config import STRATEGIES, ModelConfig, TrainConfig, WorldConfig, get_preset
from mechrecall.data.store import create_world, save_world
from mechrecall.errors import ConfigError, RunDirError
from mechrecall.runs import Run, open_run, train_run

BASES = ("random", "disjoint")


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

    def configs(self, seed: int) -> tuple[WorldConfig, ModelConfig, TrainConfig, str]:
        study = get_preset(self.preset)
        parts: dict[str, dict[str, Any]] = {"world": {}, "train": {}, "model": {}}
        base = self.overrides.get("base", "random")
        if base not in BASES:
            raise ConfigError(f"trial {self.name!r}: base must be one of {', '.join(BASES)}")
        homes = (("world", study.world), ("train", study.train), ("model", study.model))
        for key, value in self.overrides.items():
            if key == "base":
                continue
            home = next((part for part, config in homes if key in {f.name for f in dataclasses.fields(config)}), None)
            if home is None:
                raise ConfigError(f"trial {self.name!r}: unknown setting {key!r}")
            parts[home][key] = value
        world = dataclasses.replace(study.world, **{**parts["world"], "seed": seed})
        if base == "disjoint":
            world = dataclasses.replace(world, population="a")
        train = dataclasses.replace(study.train, **{**parts["train"], "seed": seed})
        model = dataclasses.replace(study.model, **{**parts["model"], "seed": seed})
        world.validate()
        train.validate()
        return world, model, train, base


def _world_dir(root: Path, world: WorldConfig) -> Path:
    key = json.dumps(dataclasses.asdict(world), sort_keys=True)
    path = root / "worlds" / hashlib.sha256(key.encode()).hexdigest()[:12]
    if not (path / "manifest.json").exists():
        save_world(create_world(world), path, overwrite=path.exists())
    return path


def run_trial(trial: Trial, seed: int, strategy: str, root: Path, device: str | None, progress: bool) -> Run:
    world, model, train, base = trial.configs(seed)
    train = dataclasses.replace(train, strategy=strategy)
    world_path = _world_dir(root, world)
    if base == "disjoint":
        base_world = _world_dir(root, dataclasses.replace(world, population="b", seed=world.seed + 1000))
        base_run = root / trial.name / f"base-s{seed}"
        train_run(base_world, base_run, model, dataclasses.replace(train, strategy="mixed"), preset=trial.preset, device=device, progress=progress)
        model = dataclasses.replace(model, name=str(base_run))
    return train_run(world_path, root / trial.name / f"{strategy}-s{seed}", model, train, preset=trial.preset, device=device, progress=progress)


def run_sweep(
    trials: list[Trial], seeds: list[int], root: Path, strategies: tuple[str, ...] = STRATEGIES, device: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every trial × seed × strategy (reusing finished runs); write ``results.json``."""
    rows = []
    for trial in trials:
        for seed in seeds:
            for strategy in strategies:
                run = run_trial(trial, seed, strategy, root, device, progress)
                rows.append(result_row(trial.name, trial.overrides, seed, strategy, run))
                write_json_atomic(root / "results.json", rows)
    return rows


def result_row(trial: str, overrides: dict[str, Any], seed: int, strategy: str, run: Run) -> dict[str, Any]:
    """One trained run as a row of the sweep's table: its accuracies and training seconds."""
    metrics = run.metrics()
    return {
        "trial": trial, "overrides": overrides, "seed": seed, "strategy": strategy, "run": str(run.path),
        "bio": metrics["bio"]["accuracy"], "qa_id": metrics["qa_id"]["accuracy"], "qa_ood": metrics["qa_ood"]["accuracy"],
        "seconds": run.directory.manifest.get("training", {}).get("seconds"),
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
    for seed in range(int(record["seeds"])):
        for strategy in record.get("strategies", STRATEGIES):
            path = study / f"s{seed}" / strategy
            if not (path / "manifest.json").is_file():
                continue  # not trained (yet): the table has the seeds that are
            run = open_run(path)
            if "metrics.json" not in run.directory.manifest["files"]:
                continue
            rows.append(result_row(trial, overrides, seed, strategy, run))
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trial: mean and spread (population std) over seeds of each strategy's accuracies and
    of the gap (mixed QA-OOD − two-stage QA-OOD, paired by seed)."""
    summary = []
    for trial in dict.fromkeys(row["trial"] for row in rows):
        entry: dict[str, Any] = {"trial": trial}
        by_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for row in (r for r in rows if r["trial"] == trial):
            by_seed.setdefault(row["seed"], {})[row["strategy"]] = row
        for strategy in STRATEGIES:
            for metric in ("bio", "qa_id", "qa_ood"):
                values = [s[strategy][metric] for s in by_seed.values() if strategy in s]
                if values:
                    entry[f"{strategy}/{metric}"] = (statistics.fmean(values), statistics.pstdev(values))
        gaps = [s["mixed"]["qa_ood"] - s["two-stage"]["qa_ood"] for s in by_seed.values() if len(s) == 2]
        if gaps:
            entry["gap"] = (statistics.fmean(gaps), statistics.pstdev(gaps))
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
