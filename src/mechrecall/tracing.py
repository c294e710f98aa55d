"""Run-level steps of the gradient trace: ``trace_run`` (post-hoc influence on θ_task),
``read_trace`` (hash- and model-checked) and ``shared_run`` (curves, masks, counts per head).

``trace.safetensors`` (and ``trace_training.safetensors``, written by ``train --trace-individuals``)
hold one fp32 tensor per trainable parameter and task, named ``bio/<parameter>`` and
``qa/<parameter>``, each with the parameter's shape; the header's metadata records the mode,
measure, split, traced people, example counts and the sha256 of the ``model.safetensors`` traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mechrecall.config import to_dict
from mechrecall.encoding import pad_id
from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.params import ParameterIndex
from mechrecall.runs import BASE, TRAINING_TRACE, TUNED, Run, resolve_device, open_run
from mechrecall.trace import (
    TASKS, SharedCurve, TraceConfig, choose_individuals, flat_influence, posthoc_influence, read_metadata, resolve_k, shared_curve,
    trace_metadata, traced_examples,
)

TRACE = "trace.safetensors"
TRACE_FILES = {"posthoc": TRACE, "training": TRAINING_TRACE}
SHARED_MASK = "shared_mask.safetensors"


def trace_run(path: Path | str, config: TraceConfig, device: str | None = None, progress: bool = True) -> Path:
    """Post-hoc trace of a run's fine-tuned model; writes ``trace.safetensors``."""
    config.validate()
    run = open_run(path)
    if not run.is_trained:
        raise ArtifactError(f"{run.path} has no fine-tuned model: finish `mechrecall train` for it before tracing")
    device = resolve_device(device)
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
    run.directory.manifest.setdefault("steps", {})["trace"] = to_dict(config)
    run.directory.save_manifest()
    return run.path / TRACE


@dataclass
class Trace:
    """A loaded trace: influence per task in flat order, and its metadata."""

    index: ParameterIndex
    bio: torch.Tensor
    qa: torch.Tensor
    metadata: dict[str, Any]


def read_trace(run: Run, mode: str = "posthoc") -> Trace:
    """Load a run's trace, refusing one that was made for other weights or another model."""
    if mode not in TRACE_FILES:
        raise ConfigError(f"unknown trace {mode!r}: choose posthoc or training")
    name = TRACE_FILES[mode]
    if name not in run.directory.manifest["files"]:
        hint = "`mechrecall trace`" if mode == "posthoc" else "`mechrecall train --trace-individuals N`"
        raise ArtifactError(f"{run.path} has no {name}: make it with {hint} first")
    path = run.directory.verify(name)
    with safe_open(str(path), framework="pt") as handle:
        try:
            metadata = read_metadata(handle.metadata())
        except ValueError:
            raise ArtifactError(f"{path} has unreadable metadata (an older format?): trace the run again") from None
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if metadata.get("model_sha256") != run.directory.manifest["files"].get(TUNED):
        raise ArtifactError(f"{path} was made for other weights than {run.path / TUNED}: trace the run again")
    index = parameter_index(run)
    expected = {f"{task}/{slot.name}": slot.shape for task in TASKS for slot in index.slots}
    found = {key: tuple(tensor.shape) for key, tensor in tensors.items()}
    if found != expected:
        raise ArtifactError(f"{path} does not fit the model of {run.path} (parameter names or shapes differ): trace the run again")
    return Trace(index, flat_influence(index, tensors, "bio"), flat_influence(index, tensors, "qa"), metadata)


def parameter_index(run: Run) -> ParameterIndex:
    return ParameterIndex.from_spec(run.spec())


def shared_run(
    path: Path | str, mode: str = "posthoc", k: int | None = None, fraction: float | None = None
) -> dict[str, Any]:
    """The shared curve of a run's trace; with ``k`` or ``fraction``, also the shared mask S_k
    (``shared_mask.safetensors``) and its counts per head component and MLP neuron. Writes
    ``shared.json``."""
    run = open_run(path)
    trace = read_trace(run, mode)
    chosen_k = resolve_k(trace.bio.numel(), k, fraction) if (k is not None or fraction is not None) else None
    curve, ranks = shared_curve(trace.bio, trace.qa, consume=True)  # loaded for this call: reuse its memory
    result: dict[str, Any] = {"run": str(run.path), "trace": mode, "measure": trace.metadata.get("measure"), "curve": curve.to_json()}
    if chosen_k is not None:
        mask = ranks < chosen_k
        result["mask"] = mask_summary(trace.index, mask, chosen_k)
        run.directory.save_tensors(
            SHARED_MASK,
            {name: tensor.to(torch.uint8) for name, tensor in trace.index.unflatten(mask).items()},
            metadata=trace_metadata(k=chosen_k, trace=mode, trace_sha256=run.directory.manifest["files"][TRACE_FILES[mode]]),
        )
    run.directory.write_json("shared.json", result)
    return result


def mask_summary(index: ParameterIndex, mask: torch.Tensor, k: int) -> dict[str, Any]:
    by_head = index.count_by_head(mask)
    return {
        "k": k,
        "size": int(mask.sum()),
        "by_head": {component: counts.tolist() for component, counts in by_head.items()},
        "head_total": index.head_totals(by_head).tolist(),
        "by_neuron_total": int(index.count_by_neuron(mask).sum()),
        "kv_heads": index.n_kv_heads,
    }


def curve_of(result: dict[str, Any]) -> SharedCurve:
    curve = result["curve"]
    return SharedCurve(n=curve["n"], ks=curve["k"], shared=curve["shared"])
