"""Grafting (after Panigrahi et al., 2023): a sparse binary mask γ over all trainable parameters
such that θ_pre + γ ⊙ (θ_task − θ_pre) recovers the fine-tuned model's QA accuracy.

γ is relaxed as ``γ = b + (1 − 2b) ⊙ σ(S − bias)`` around a base mask ``b`` (the top-α elements
by |θ_task − θ_pre|); ``S`` starts in [0, 1) so ``γ ≈ b`` (bias 10: σ ≈ 5e-5). Each step takes a
batch of training QA of the fitting people, computes the loss gradient ``g`` at the continuous
graft and moves ``S`` down the exact chain-rule gradient ``(1 − 2b) ⊙ g ⊙ Δθ ⊙ σ'(S − bias)``,
scaled so that its largest entry moves by ``lr`` (the raw gradient's scale depends on the model;
this keeps one ``lr`` meaningful for any model, and still moves only the elements whose gradient
is large, which keeps γ sparse). Every ``eval_every`` steps the rounded mask is scored by exact
match on the fitting people's QA plus the held-out people's QA (a part of the training people
never used for the gradient); the best rounded mask is kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import track
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.encoding import Encoded, collate, encode_pairs, pad_id, per_example_loss
from mechrecall.errors import ConfigError
from mechrecall.evaluation import exact_match
from mechrecall.masks import Mask, set_weights
from mechrecall.params import ParameterIndex
from mechrecall.training import ExampleStream

SPARSITY_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5)


@dataclass(frozen=True)
class GraftConfig:
    sparsity: float = 1e-3  # α: the base mask holds round(α · N) elements
    steps: int = 60
    batch_size: int = 64
    lr: float = 10.0  # how far the most-influenced logit moves per step (bias 10: one step can flip it)
    sigmoid_bias: float = 10.0
    eval_every: int = 5
    heldout_fraction: float = 0.1  # of the QA-ID people: kept out of the gradient, used to pick γ
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"--sparsity must lie strictly between 0 and 1, got {self.sparsity}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"held-out fraction must lie strictly between 0 and 1, got {self.heldout_fraction}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")


def base_mask(index: ParameterIndex, delta: dict[str, Tensor], sparsity: float) -> Mask:
    """The top ``round(α·N)`` elements by |Δθ| (ties to the lower flat index)."""
    flat = index.flatten({name: delta[name].abs().float() for name in index.names})
    count = max(1, round(sparsity * flat.numel()))
    order = torch.sort(flat, descending=True, stable=True).indices[:count]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order] = True
    return {name: t.clone() for name, t in index.unflatten(chosen).items()}


def split_fit_heldout(person_ids: list[int], fraction: float, seed: int) -> tuple[set[int], set[int]]:
    people = sorted(set(person_ids))
    if len(people) < 2:
        raise ConfigError("grafting needs at least two QA-ID people (one to fit, one held out)")
    heldout = set(random.Random(f"graft-{seed}").sample(people, max(1, round(fraction * len(people)))))
    return set(people) - heldout, heldout


@dataclass
class GraftResult:
    mask: Mask
    size: int
    best_step: int
    score: float
    history: list[dict[str, float]]


def learn_graft(
    model: HookedTransformer,
    index: ParameterIndex,
    base: dict[str, Tensor],
    tuned: dict[str, Tensor],
    fit: Encoded,
    heldout: Encoded,
    config: GraftConfig,
    progress: bool = False,
) -> GraftResult:
    """Learn γ; leaves ``model`` holding the best rounded graft."""
    config.validate()
    device = model.cfg.device or "cpu"
    names = index.names
    delta = {n: (tuned[n].float() - base[n].float()).to(device) for n in names}
    start = {n: b.bool().to(device) for n, b in base_mask(index, delta, config.sparsity).items()}
    generator = torch.Generator().manual_seed(config.seed)
    logits = {n: torch.rand(start[n].shape, generator=generator).to(device) for n in names}
    parameters = dict(model.named_parameters())
    pad = pad_id(model.tokenizer)
    stream = ExampleStream(len(fit), config.seed, "qa")

    def relaxed() -> dict[str, Tensor]:
        return {n: start[n].float() + (1 - 2 * start[n].float()) * torch.sigmoid(logits[n] - config.sigmoid_bias) for n in names}

    def score(mask: Mask) -> float:
        set_weights(model, base, tuned, mask)
        return float(exact_match(model, fit, pad).float().mean() + exact_match(model, heldout, pad).float().mean())

    best = GraftResult(mask={n: m.cpu() for n, m in start.items()}, size=0, best_step=0, score=score(start), history=[])
    best.history.append({"step": 0, "score": best.score, "size": int(sum(m.sum() for m in start.values()))})
    for step in track(range(1, config.steps + 1), description="graft", disable=not progress):
        gamma = relaxed()
        with torch.no_grad():
            for n in names:
                parameters[n].copy_(base[n].to(device) + gamma[n] * delta[n])
        batch = fit.select(stream.take((step - 1) * config.batch_size, config.batch_size))
        tokens, target_mask = collate(batch, pad, device)
        model.zero_grad(set_to_none=True)
        per_example_loss(model(tokens), tokens, target_mask).mean().backward()
        with torch.no_grad():
            updates = {}
            for n in names:
                s = torch.sigmoid(logits[n] - config.sigmoid_bias)
                updates[n] = (1 - 2 * start[n].float()) * parameters[n].grad.float() * delta[n] * s * (1 - s)
            largest = max(float(u.abs().max()) for u in updates.values())
            if largest > 0:
                for n in names:
                    logits[n] -= config.lr * updates[n] / largest
        if step % config.eval_every == 0 or step == config.steps:
            rounded = {n: torch.round(g).bool() for n, g in relaxed().items()}
            value = score(rounded)
            size = int(sum(m.sum() for m in rounded.values()))
            best.history.append({"step": step, "score": value, "size": size})
            if value > best.score:
                best.mask, best.score, best.best_step = {n: m.cpu() for n, m in rounded.items()}, value, step
    model.zero_grad(set_to_none=True)
    best.size = int(sum(int(m.sum()) for m in best.mask.values()))
    set_weights(model, base, tuned, best.mask)
    return best


def graft_examples(world, tokenizer, fraction: float, seed: int) -> tuple[Encoded, Encoded]:
    """The QA-ID rows of the fitting people and of the held-out people."""
    rows = world.dataset["qa_id"]
    fit_people, heldout_people = split_fit_heldout(list(rows["person_id"]), fraction, seed)
    def encode(people: set[int]) -> Encoded:
        chosen = rows.filter(lambda row: row["person_id"] in people)
        return encode_pairs(tokenizer, list(chosen["prompt"]), list(chosen["answer"]))
    return encode(fit_people), encode(heldout_people)


def summarize_graft(index: ParameterIndex, mask: Mask) -> dict[str, Any]:
    flat = index.flatten(mask)
    by_head = index.count_by_head(flat)
    return {
        "by_head": {component: counts.tolist() for component, counts in by_head.items()},
        "head_total": index.head_totals(by_head).tolist(),
        "by_neuron": index.count_by_neuron(flat).tolist(),
    }


# ---- run level ---------------------------------------------------------------------------------

GRAFT = "graft.safetensors"


def graft_run(
    path, config: GraftConfig, target: float | None = None, device: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Graft a run (one α, or with ``target`` the smallest α of ``SPARSITY_GRID`` whose graft
    recovers that share of θ_task's QA-ID accuracy); writes ``graft.safetensors`` and ``graft.json``."""
    from mechrecall.evaluation import evaluate
    from mechrecall.masks import from_stored, mask_size, overlap, to_stored
    from mechrecall.runs import BASE, TUNED, resolve_device, open_run
    from mechrecall.trace import trace_metadata
    from mechrecall.tracing import SHARED_MASK

    config.validate()
    if target is not None and not 0.0 < target <= 1.0:
        raise ConfigError(f"--target must lie in (0, 1], got {target}")
    run = open_run(path)
    device = resolve_device(device)
    model = run.load_model("tuned", device=device)
    index = ParameterIndex.from_spec(run.spec())
    base, tuned = run.directory.load_tensors(BASE, device=device), run.directory.load_tensors(TUNED, device=device)
    world = run.world()
    tuned_metrics = run.metrics()
    fit, heldout = graft_examples(world, model.tokenizer, config.heldout_fraction, config.seed)
    sparsities = [config.sparsity] if target is None else [a for a in SPARSITY_GRID]
    search = []
    for sparsity in sparsities:
        attempt = GraftConfig(**{**config.__dict__, "sparsity": sparsity})
        result = learn_graft(model, index, base, tuned, fit, heldout, attempt, progress=progress)
        metrics = evaluate(model, model.tokenizer, world.dataset)
        recovered = metrics["qa_id"]["accuracy"] / max(tuned_metrics["qa_id"]["accuracy"], 1e-12)
        search.append({"sparsity": sparsity, "size": result.size, "qa_id": metrics["qa_id"]["accuracy"], "recovered": recovered})
        if target is None or recovered >= target:
            break
    chosen_sparsity = search[-1]["sparsity"]
    base_model = run.load_model("base", device=device)
    base_metrics = evaluate(base_model, base_model.tokenizer, world.dataset)
    summary: dict[str, Any] = {
        "sparsity": chosen_sparsity,
        "target": target,
        "size": result.size,
        "fraction": result.size / index.numel,
        "parameters": index.numel,
        "best_step": result.best_step,
        "history": result.history,
        "search": search,
        "accuracy": {
            name: {m: values[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
            for name, values in (("grafted", metrics), ("tuned", tuned_metrics), ("base", base_metrics))
        },
        "recovered_qa_id": search[-1]["recovered"],
        "target_met": None if target is None else search[-1]["recovered"] >= target,
        **summarize_graft(index, result.mask),
    }
    if SHARED_MASK in run.directory.manifest["files"]:
        shared = from_stored(run.directory.load_tensors(SHARED_MASK), index)
        common = overlap(result.mask, shared)
        summary["shared_overlap"] = {
            "shared_size": mask_size(shared), "intersection": common, "share_of_graft": common / max(result.size, 1),
        }
    run.directory.save_tensors(
        GRAFT, to_stored(result.mask), metadata=trace_metadata(sparsity=chosen_sparsity, size=result.size, model_sha256=run.directory.manifest["files"][TUNED])
    )
    run.directory.write_json("graft.json", summary)
    return summary


def read_graft(run, index: ParameterIndex) -> Mask:
    from mechrecall.errors import ArtifactError
    from mechrecall.masks import from_stored

    if GRAFT not in run.directory.manifest["files"]:
        raise ArtifactError(f"{run.path} has no {GRAFT}: make it with `mechrecall graft` first")
    try:
        return from_stored(run.directory.load_tensors(GRAFT), index)
    except ValueError:
        raise ArtifactError(f"{run.path / GRAFT} is a mask of another model: graft the run again") from None
