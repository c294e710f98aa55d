"""Parameter ablation: reset a set of elements to θ_pre and measure what recall loses.

Sets: the shared set ``S_k`` (from the run's trace), random controls of the same size (by
default with the same count in every parameter tensor, several seeds, mean and spread), and the
graft with the shared elements removed (``γ ∖ S``) against the full graft.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.evaluation import evaluate
from mechrecall.masks import Mask, difference, from_stored, mask_size, random_global, random_like, set_weights
from mechrecall.params import ParameterIndex
from mechrecall.runs import BASE, TUNED, Run, resolve_device, open_run
from mechrecall.trace import max_ranks, resolve_k
from mechrecall.tracing import SHARED_MASK, read_trace

WHATS = ("shared", "random", "graft-minus-shared")
LIKES = ("shared", "global")
METRICS = ("bio", "qa_id", "qa_ood")


def shared_mask_for(run: Run, index: ParameterIndex, k: int | None, fraction: float | None, mode: str = "posthoc") -> Mask:
    """S_k from the run's trace for a given k or fraction, else the exported shared mask."""
    if k is None and fraction is None:
        if SHARED_MASK not in run.directory.manifest["files"]:
            raise ConfigError("give --k or --fraction (or export a shared mask with `mechrecall shared --k`)")
        return from_stored(run.directory.load_tensors(SHARED_MASK), index)
    trace = read_trace(run, mode)
    chosen = resolve_k(trace.bio.numel(), k, fraction)
    ranks = max_ranks(trace.bio, trace.qa, consume=True)
    return {name: t.clone() for name, t in index.unflatten(ranks < chosen).items()}


def drops(reference: dict[str, float], ablated: dict[str, float]) -> dict[str, dict[str, float]]:
    return {
        m: {
            "accuracy": ablated[m],
            "drop": reference[m] - ablated[m],
            "relative_drop": (reference[m] - ablated[m]) / reference[m] if reference[m] > 0 else 0.0,
        }
        for m in METRICS
    }


def ablate_run(
    path: Path | str, what: str, k: int | None = None, fraction: float | None = None, like: str = "shared",
    seeds: int = 3, device: str | None = None,
) -> dict[str, Any]:
    """Reset a set of elements to θ_pre and evaluate; writes ``ablation.json`` (one entry per ``what``)."""
    if what not in WHATS:
        raise ConfigError(f"unknown --what {what!r}: choose one of {', '.join(WHATS)}")
    if like not in LIKES:
        raise ConfigError(f"unknown --like {like!r}: choose shared or global")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    run = open_run(path)
    if not run.is_trained:
        raise ArtifactError(f"{run.path} has no fine-tuned model: finish `mechrecall train` for it first")
    device = resolve_device(device)
    index = ParameterIndex.from_spec(run.spec())
    model = run.load_model("tuned", device=device)
    base, tuned = run.directory.load_tensors(BASE, device=device), run.directory.load_tensors(TUNED, device=device)
    world = run.world()

    def accuracy_with(take_tuned: Mask) -> dict[str, float]:
        set_weights(model, base, tuned, take_tuned)
        metrics = evaluate(model, model.tokenizer, world.dataset)
        return {m: metrics[m]["accuracy"] for m in METRICS}

    tuned_accuracy = {m: run.metrics()[m]["accuracy"] for m in METRICS}
    shared = shared_mask_for(run, index, k, fraction)
    result: dict[str, Any] = {"what": what, "tuned": tuned_accuracy}
    if what == "shared":
        result["size"] = mask_size(shared)
        result["ablated"] = drops(tuned_accuracy, accuracy_with({n: ~m for n, m in shared.items()}))
    elif what == "random":
        controls = []
        for seed in range(seeds):
            chosen = random_like(shared, seed) if like == "shared" else random_global(index, mask_size(shared), seed)
            controls.append(accuracy_with({n: ~m for n, m in chosen.items()}))
        result.update(size=mask_size(shared), like=like, seeds=seeds)
        mean = {m: statistics.fmean(c[m] for c in controls) for m in METRICS}
        result["ablated"] = drops(tuned_accuracy, mean)
        result["spread"] = {m: statistics.pstdev(c[m] for c in controls) for m in METRICS}
        result["per_seed"] = controls
    else:
        from mechrecall.grafting import read_graft

        graft = read_graft(run, index)
        full = accuracy_with(graft)
        trimmed = difference(graft, shared)
        result.update(graft_size=mask_size(graft), removed=mask_size(graft) - mask_size(trimmed), shared_size=mask_size(shared))
        result["graft"] = full
        result["ablated"] = drops(full, accuracy_with(trimmed))
    entries = run.directory.read_json("ablation.json") if "ablation.json" in run.directory.manifest["files"] else {}
    entries[what] = result
    run.directory.write_json("ablation.json", entries)
    return result
