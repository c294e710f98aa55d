"""Run directories: making a run (``train_run``), reopening it, evaluating it.

Layout of a run (see DESIGN.md): ``manifest.json``, ``data/`` (the world it was trained on),
``model.json`` (the architecture spec), ``tokenizer/`` (checkpoint tokenizers; models built here
use ``data/tokenizer.json``), ``base.safetensors`` (θ_pre), ``model.safetensors`` (θ_task),
``train_log.json``, ``metrics.json``; ``checkpoint.safetensors`` only while training is unfinished.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformer_lens import HookedTransformer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mechrecall import models
from mechrecall.artifacts import ArtifactDir, check_output, discard, output_lock, staging_folder, swap_into_place
from mechrecall.config import ModelConfig, TrainConfig, from_dict, key_dict, to_dict
from mechrecall.data.store import World, read_world
from mechrecall.encoding import encode_pairs, encode_texts, pad_id
from mechrecall.errors import ArtifactError, ConfigError, RunDirError
from mechrecall.evaluation import accuracy_evaluator, chance_level, evaluate
from mechrecall.influence import (
    InfluenceAccumulator,
    TraceConfig,
    choose_individuals,
    trace_metadata,
)
from mechrecall.training import StepCallback, TrainingTracer, train

BASE = "base.safetensors"
TUNED = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"  # safetensors + JSON: never a pickle
TRAINING_TRACE = "trace_training.safetensors"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None = None) -> str:
    """``device`` checked (a name torch does not know, or CUDA where there is none, is one clear
    error), or the default device when ``None``."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown --device {device!r}: use cpu or cuda (cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 … or cpu")
    if parsed.type == "mps" and not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: this torch has no usable MPS (Apple GPU) support; use cpu")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: mechrecall trains and evaluates on cpu, cuda or mps, not {parsed.type}")
    return device


@dataclass
class Run:
    """An opened run directory; every read is checked against the manifest."""

    directory: ArtifactDir

    @property
    def path(self) -> Path:
        return self.directory.path

    @property
    def train_config(self) -> TrainConfig:
        return from_dict(TrainConfig, self.directory.config["train"])

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.directory.config["model"])

    @property
    def is_trained(self) -> bool:
        return self.directory.complete and TUNED in self.directory.manifest["files"]

    def world(self) -> World:
        return read_world(self.directory)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self.directory.has("tokenizer"):
            folder = self.directory.verify("tokenizer")
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return self.world().tokenizer

    def spec(self) -> models.ModelSpec:
        return self.directory.read_json("model.json")

    def load_model(self, which: str = "tuned", device: str = "cpu") -> HookedTransformer:
        """θ_task (``"tuned"``) or θ_pre (``"base"``) as a ``HookedTransformer``."""
        if which not in ("tuned", "base"):
            raise RunDirError(f"unknown model {which!r}: choose tuned or base")
        artifact = TUNED if which == "tuned" else BASE
        if which == "tuned" and not self.is_trained:
            raise RunDirError(f"{self.path} has no fine-tuned model yet: finish `mechrecall train` for it first")
        model = models.model_from_spec(self.spec(), self.tokenizer(), device=device)
        models.load_parameters(model, self.directory.load_tensors(artifact, device=device))
        model.eval()
        return model

    def metrics(self) -> dict[str, Any]:
        return self.directory.read_json("metrics.json")


def open_run(path: Path | str) -> Run:
    directory = ArtifactDir.open(Path(path))
    if directory.kind != "run":
        raise RunDirError(f"{path} is a {directory.kind} directory, not a run: make a run with `mechrecall train`")
    return Run(directory)


def run_config(
    world_dir: ArtifactDir, model: ModelConfig, training: TrainConfig, preset: str | None, trace: TraceConfig | None = None
) -> dict[str, Any]:
    return {
        "preset": preset,
        "world": world_dir.config["world"],
        "world_fingerprint": world_dir.manifest.get("fingerprint"),
        "model": key_dict(model),
        "train": to_dict(training),
        "trace_during_training": to_dict(trace) if trace is not None else None,
    }


def normalized_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config with every dataclass field present: a setting added since the run was made
    takes its default (defaults keep the old behaviour), so the run still matches."""
    normal = dict(config)
    for key, cls in (("model", ModelConfig), ("train", TrainConfig), ("trace_during_training", TraceConfig)):
        if isinstance(normal.get(key), dict):
            recorded = normal[key]
            normal[key] = to_dict(from_dict(cls, recorded))
            if "architecture" in recorded:  # a built size keyed by its architecture (config.key_dict)
                normal[key]["architecture"] = recorded["architecture"]
    return normal


# training settings a strategy never reads: two runs that differ only there are the same run
UNUSED_BY = {
    "mixed": ("bio_steps", "qa_steps", "bio_loss", "qa_lr", "qa_weight_decay"),
    "two-stage": ("steps", "qa_share"),
    "bio": ("bio_steps", "qa_steps", "qa_lr", "qa_weight_decay", "qa_share"),
}


def effective_config(config: dict[str, Any]) -> str:
    """The config as it acts: normalized, without the training settings its strategy never reads
    (JSON, for comparison)."""
    config = normalized_config(config)
    train = dict(config.get("train") or {})
    for name in UNUSED_BY.get(str(train.get("strategy")), ()):
        train.pop(name, None)
    return json.dumps({**config, "train": train}, sort_keys=True)


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return effective_config(a) == effective_config(b)


def _initial_model(model_config: ModelConfig, world: World, device: str) -> tuple[HookedTransformer, str]:
    source = model_config.source
    if source == "built":
        model = models.build_model(model_config.name, world.tokenizer, seed=model_config.seed, device=device, dtype=model_config.dtype)
        return model, "built"
    if source == "run":
        base = open_run(model_config.name)
        if not base.directory.has("tokenizer") and len(base.tokenizer()) != len(world.tokenizer):
            raise ConfigError(f"the base run {model_config.name} uses another vocabulary than this world")
        return base.load_model("tuned", device=device), "run"
    return models.load_checkpoint(model_config.name, dtype=model_config.dtype, device=device), "checkpoint"


def _create_run(
    out: Path, world_dir: ArtifactDir, world: World, config: dict[str, Any], model_config: ModelConfig, seeds: dict[str, int], device: str
) -> None:
    """Write the run's inputs (world copy, spec, tokenizer, θ_pre) in a staging folder, then rename."""
    model, source = _initial_model(model_config, world, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(out, kind="run") as staging:
        directory = ArtifactDir.create(staging, "run", config, seeds)
        with directory.write_folder("data") as folder:
            shutil.copytree(world_dir.path / "data", folder, dirs_exist_ok=True)
        if source == "checkpoint" or (source == "run" and open_run(model_config.name).directory.has("tokenizer")):
            with directory.write_folder("tokenizer") as folder:
                model.tokenizer.save_pretrained(str(folder))
        directory.write_json("model.json", models.model_spec(model, source, model_config.name))
        directory.save_tensors(BASE, models.trainable_state(model))
        directory.mark("training")
        os.chmod(staging, 0o755)
        swap_into_place(staging, out, "run")


def train_run(
    world_path: Path | str,
    out: Path | str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    preset: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool | Literal["lines"] = True,
    on_step: StepCallback | None = None,
    trace: TraceConfig | None = None,
) -> Run:
    """Fine-tune a model on a world with a strategy; resume an unfinished run with the same config.

    ``out`` that is an unfinished run of the same config resumes from its last checkpoint; a
    finished one is returned as it is; anything else there is refused unless ``overwrite``.
    With ``trace``, the gradient trace of the chosen QA-ID people is accumulated at every step
    and saved as ``trace_training.safetensors``.
    """
    train_config.validate()
    if trace is not None:
        trace.validate()
        if trace.split != "qa_id":
            raise ConfigError("a during-training trace follows people whose QA is trained on: use the qa_id split")
    device = resolve_device(device)
    out = Path(out)
    with output_lock(out):
        return _train_run_locked(world_path, out, model_config, train_config, preset, overwrite, device, progress, on_step, trace)


def _train_run_locked(
    world_path: Path | str, out: Path, model_config: ModelConfig, train_config: TrainConfig, preset: str | None, overwrite: bool,
    device: str, progress: bool | Literal["lines"], on_step: StepCallback | None, trace: TraceConfig | None,
) -> Run:
    world_dir = ArtifactDir.open(Path(world_path))
    if not world_dir.complete:
        raise RunDirError(f"{world_path} is not a complete world or run directory: make it with `mechrecall data`")
    world = read_world(world_dir)
    if trace is not None and trace.individuals is not None:
        choose_individuals(world, trace.split, trace.individuals, trace.seed)  # refuse too many people now
    config = run_config(world_dir, model_config, train_config, preset, trace)
    resumable = False
    if out.exists() and not overwrite:
        try:
            existing = open_run(out)
            resumable = _same_config(existing.directory.config, config)
        except (RunDirError, ArtifactError):
            resumable = False
        if not resumable:
            raise RunDirError(f"{out} already exists and is not an unfinished run of this config: choose another --out or pass --overwrite")
        if existing.is_trained:
            return existing
    if not resumable:
        if model_config.source == "checkpoint":
            models.resolve_checkpoint(model_config.name)  # fail before anything is written
        elif model_config.source == "run" and not open_run(model_config.name).is_trained:
            raise RunDirError(f"the base run {model_config.name} is not finished: train it first")
        check_output(out, overwrite, "run", inputs=(Path(world_path),) + ((Path(model_config.name),) if model_config.source == "run" else ()))
        seeds = {"world": world.config.seed, "model_init": model_config.seed, "train": train_config.seed}
        _create_run(out, world_dir, world, config, model_config, seeds, device)
    run = open_run(out)
    return _finish_training(run, train_config, device, progress, on_step, trace)


def _finish_training(
    run: Run, train_config: TrainConfig, device: str, progress: bool | Literal["lines"], on_step: StepCallback | None, trace: TraceConfig | None
) -> Run:
    world = run.world()
    model = models.model_from_spec(run.spec(), run.tokenizer(), device=device)
    models.load_parameters(model, run.directory.load_tensors(BASE, device=device))
    tokenizer = model.tokenizer
    qa = world.dataset["qa_id"]  # QA of the training people only, by construction
    examples = {
        "bio": encode_texts(tokenizer, list(world.dataset["bio"]["text"])),
        "qa": encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"])),
    }
    tracer: TrainingTracer | None = None
    people: list[int] | str = []
    if trace is not None:
        if trace.individuals is None:
            people, traced = "all", None
        else:
            people = choose_individuals(world, trace.split, trace.individuals, trace.seed)
            chosen = set(people)
            traced = {
                "bio": {i for i, pid in enumerate(world.dataset["bio"]["person_id"]) if pid in chosen},
                "qa": {i for i, pid in enumerate(qa["person_id"]) if pid in chosen},
            }
        tracer = TrainingTracer(InfluenceAccumulator(model, trace.measure), traced)
    base_weights = {name: tensor.detach().clone() for name, tensor in models.trainable_state(model).items()}
    evaluator = accuracy_evaluator(tokenizer, world.dataset, batch_size=train_config.eval_batch_size)
    state = train(
        model, examples, train_config, pad_id(tokenizer), checkpoint_path=run.path / CHECKPOINT, progress=progress,
        on_step=on_step, tracer=tracer, evaluator=evaluator,
    )
    directory = run.directory
    directory.save_tensors(TUNED, models.trainable_state(model))
    if tracer is not None and trace is not None:
        directory.save_tensors(
            TRAINING_TRACE,
            tracer.accumulator.tensors(),
            metadata=trace_metadata(
                mode="training", measure=trace.measure, split=trace.split, people=people,
                examples=tracer.accumulator.examples, model_sha256=directory.manifest["files"][TUNED],
            ),
        )
    directory.write_json("train_log.json", state.log)
    metrics = evaluate(model, tokenizer, world.dataset, batch_size=train_config.eval_batch_size)
    directory.write_json("metrics.json", metrics)
    directory.mark(
        "complete",
        training={
            "steps": state.step, "phase_ends": state.phase_ends, "seconds": round(state.seconds, 2), "device": device,
            "threads": state.threads, "evals": state.evals, "relative_update": relative_update(base_weights, models.trainable_state(model)),
            "chance": chance_level(world.dataset),
        },
    )
    discard(run.path / CHECKPOINT)  # with any half-written copy a kill left
    return run


def relative_update(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor]) -> float:
    """‖θ_task − θ_pre‖ / ‖θ_pre‖ over every trainable element (how far training moved the model)."""
    delta = sum(float((tuned[name].float() - tensor.float()).pow(2).sum()) for name, tensor in base.items())
    size = sum(float(tensor.float().pow(2).sum()) for tensor in base.values())
    return (delta / size) ** 0.5 if size > 0 else float("inf")


def evaluate_run(path: Path | str, which: str = "tuned", batch_size: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Evaluate θ_task (or θ_pre) of a run; writes ``metrics.json`` (``metrics_base.json``)."""
    run = open_run(path)
    device = resolve_device(device)
    model = run.load_model(which, device=device)
    world = run.world()
    metrics = evaluate(model, model.tokenizer, world.dataset, batch_size=batch_size or run.train_config.eval_batch_size)
    run.directory.write_json("metrics.json" if which == "tuned" else "metrics_base.json", metrics)
    return metrics
