"""The cross-task gradient trace, and the post-hoc variants.

The study's trace (``lr-grad``: signed, learning-rate-weighted gradient sums per task, accumulated
*during* fine-tuning) is made by training itself: ``mechrecall train --trace-individuals 20``
(``mechrecall reproduce`` does so) writes ``trace_training.safetensors``. This analysis makes the
post-hoc variants on θ_task (``grad``, ``grad-delta``, ``grad-theta``; see
``mechrecall.influence``), written as ``trace.safetensors``. :func:`read_trace` loads either,
checked against the weights it was made for.

Both files hold one fp32 tensor per trainable parameter and task, named ``bio/<parameter>`` and
``qa/<parameter>`` with the parameter's shape; the header's metadata records the mode, measure,
split, traced people, example counts and the sha256 of the ``model.safetensors`` traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from mechrecall.analysis import Analysis, option
from mechrecall.encoding import pad_id
from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.influence import (
    POSTHOC_MEASURES,
    TASKS,
    TraceConfig,
    choose_individuals,
    flat_influence,
    posthoc_influence,
    read_metadata,
    trace_metadata,
    traced_examples,
)
from mechrecall.params import ParameterIndex
from mechrecall.results import Result
from mechrecall.runs import BASE, TRAINING_TRACE, TUNED, Run

TRACE = "trace.safetensors"
TRACE_FILES = {"training": TRAINING_TRACE, "posthoc": TRACE}
MODES = tuple(TRACE_FILES)


@dataclass(frozen=True)
class PosthocTraceConfig:
    individuals: int = option(20, "how many QA-ID (or QA-OOD) people to trace, a seeded choice")
    split: str = option("qa_id", "whose people", choices=("qa_id", "qa_ood"))
    measure: str = option("grad", "grad: |g| | grad-delta: |g ⊙ (θ_task − θ_pre)| | grad-theta: |g ⊙ θ|", choices=POSTHOC_MEASURES)
    seed: int = option(0, "seed of the choice of people")

    def validate(self) -> None:
        TraceConfig(self.individuals, self.split, self.measure, self.seed).validate(mode="posthoc")


@dataclass(frozen=True)
class TraceResult(Result):
    SCHEMA = 1
    mode: str
    measure: str
    split: str
    people: tuple[int, ...]
    examples: dict[str, int]
    elements: int


def run(run: Run, config: PosthocTraceConfig, device: str, progress: bool) -> TraceResult:
    world = run.world()
    people = choose_individuals(world, config.split, config.individuals, config.seed)
    model = run.load_model("tuned", device=device)
    base = run.directory.load_tensors(BASE, device=device) if config.measure == "grad-delta" else None
    examples = traced_examples(world, model.tokenizer, people, config.split)
    accumulator = posthoc_influence(model, examples, config.measure, pad_id(model.tokenizer), base, progress=progress)
    run.directory.save_tensors(
        TRACE,
        accumulator.tensors(),
        metadata=trace_metadata(
            mode="posthoc", measure=config.measure, split=config.split, people=people, examples=accumulator.examples,
            model_sha256=run.directory.manifest["files"][TUNED],
        ),
    )
    elements = sum(p.numel() for p in accumulator.parameters.values())
    return TraceResult("posthoc", config.measure, config.split, tuple(people), dict(accumulator.examples), elements)


@dataclass
class Trace:
    """A loaded trace: each task's influence magnitude in flat order, and its metadata."""

    index: ParameterIndex
    bio: torch.Tensor
    qa: torch.Tensor
    metadata: dict[str, Any]


def read_trace(run: Run, mode: str = "training") -> Trace:
    """Load a run's trace (as magnitudes that rank elements), refusing one made for other weights
    or another model."""
    if mode not in TRACE_FILES:
        raise ConfigError(f"unknown trace {mode!r}: choose {' or '.join(MODES)}")
    name = TRACE_FILES[mode]
    if name not in run.directory.manifest["files"]:
        hint = "`mechrecall trace`" if mode == "posthoc" else "`mechrecall train --trace-individuals 20` (or `mechrecall reproduce`)"
        raise ArtifactError(f"{run.path} has no {name}: make it with {hint} first")
    path = run.directory.verify(name)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = read_metadata(handle.metadata())
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:  # truncated or garbage: one line naming the file, never a traceback
        raise ArtifactError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0][:80]}): make the trace again") from None
    except ValueError:
        raise ArtifactError(f"{path} has unreadable metadata (an older format?): make the trace again") from None
    if metadata.get("model_sha256") != run.directory.manifest["files"].get(TUNED):
        raise ArtifactError(f"{path} was made for other weights than {run.path / TUNED}: make the trace again")
    index = ParameterIndex.from_spec(run.spec())
    expected = {f"{task}/{slot.name}": slot.shape for task in TASKS for slot in index.slots}
    if {key: tuple(tensor.shape) for key, tensor in tensors.items()} != expected:
        raise ArtifactError(f"{path} does not fit the model of {run.path} (parameter names or shapes differ): make the trace again")
    measure = str(metadata.get("measure", "grad"))
    return Trace(index, flat_influence(index, tensors, "bio", measure), flat_influence(index, tensors, "qa", measure), metadata)


def describe(result: TraceResult) -> list[str]:
    return [
        f"{result.mode} trace ({result.measure}) of {len(result.people)} {result.split} people: "
        f"{result.examples.get('bio', 0)} BIO and {result.examples.get('qa', 0)} QA examples over {result.elements:,} elements"
    ]


ANALYSIS = Analysis(
    name="trace",
    summary="Post-hoc gradient trace on θ_task (the study's trace is made during training: train --trace-individuals).",
    config=PosthocTraceConfig,
    result=TraceResult,
    reads=lambda config: (TUNED, BASE) if config.measure == "grad-delta" else (TUNED,),
    writes=lambda config: (TRACE,),
    run=run,
    from_study=lambda study: PosthocTraceConfig(individuals=study.analysis.individuals) if study.analysis.trace == "posthoc" else None,
    describe=describe,
    example="mechrecall trace runs/mix --individuals 20 --measure grad",
)
