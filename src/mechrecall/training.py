"""Fine-tuning through the hooked model: the two strategies, the loop, checkpoints and resume.

A strategy is a list of *phases*. ``mixed`` is one phase whose batches hold a fixed number of
QA-ID examples and BIO examples of every person; ``two-stage`` is a BIO phase then a QA phase,
each with a fresh AdamW and its own warmup + cosine schedule.

Determinism: the examples of step ``t`` are a pure function of the seed and of how many examples
of each pool were consumed before (a stream of seeded per-epoch permutations), and the learning
rate a pure function of the step. A checkpoint therefore needs only the weights, the optimizer
state and a few counters, and a run resumed from one equals the uninterrupted run bit for bit
(on CPU), with the CPU thread count it began with whatever the resuming process asks for.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformer_lens import HookedTransformer

from mechrecall.artifacts import atomic_path
from mechrecall.config import TrainConfig
from mechrecall.determinism import deterministic, threads
from mechrecall.encoding import Encoded, collate, per_example_loss
from mechrecall.influence import InfluenceAccumulator

POOLS = ("bio", "qa")
RECENT_BIO_LOSSES = 50


@dataclass(frozen=True)
class Phase:
    name: str  # "mixed", "bio" or "qa"
    steps: int  # planned length (the schedule's length)
    per_batch: dict[str, int]  # examples of each pool in one batch
    bio_loss_target: float | None = None  # end the phase early once the recent BIO loss is below
    lr: float = 1e-3  # peak learning rate of the phase's schedule
    weight_decay: float = 0.1


def plan_phases(config: TrainConfig) -> list[Phase]:
    if config.strategy == "mixed":
        qa = min(max(round(config.qa_share * config.batch_size), 1), config.batch_size - 1)
        return [Phase("mixed", config.steps, {"bio": config.batch_size - qa, "qa": qa}, None, config.lr, config.weight_decay)]
    if config.strategy == "bio":
        return [Phase("bio", config.steps, {"bio": config.batch_size, "qa": 0}, config.bio_loss, config.lr, config.weight_decay)]
    qa_lr = config.lr if config.qa_lr is None else config.qa_lr
    qa_decay = config.weight_decay if config.qa_weight_decay is None else config.qa_weight_decay
    return [
        Phase("bio", config.bio_steps, {"bio": config.batch_size, "qa": 0}, config.bio_loss, config.lr, config.weight_decay),
        Phase("qa", config.qa_steps, {"bio": 0, "qa": config.batch_size}, None, qa_lr, qa_decay),
    ]


def learning_rate(config: TrainConfig, step_in_phase: int, phase_steps: int, peak: float | None = None) -> float:
    """Linear warmup to ``peak`` (default ``config.lr``), then cosine decay to ``peak *
    min_lr_ratio`` at the phase's end."""
    peak = config.lr if peak is None else peak
    warmup = min(config.warmup_steps, max(phase_steps - 1, 0))
    if step_in_phase < warmup:
        return peak * (step_in_phase + 1) / warmup
    progress = min((step_in_phase - warmup) / max(phase_steps - warmup, 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


class ExampleStream:
    """An endless stream over a pool: epoch ``e`` is a permutation seeded by (seed, pool, e)."""

    def __init__(self, size: int, seed: int, pool: str) -> None:
        self.size, self.seed, self.pool = size, seed, pool
        self._epoch, self._permutation = -1, torch.empty(0, dtype=torch.long)

    def _permutation_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + POOLS.index(self.pool) * 7919 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.size, generator=generator)
        return self._permutation

    def take(self, consumed: int, count: int) -> list[int]:
        indices = []
        for position in range(consumed, consumed + count):
            epoch, offset = divmod(position, self.size)
            indices.append(int(self._permutation_of(epoch)[offset]))
        return indices


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs."""

    step: int = 0  # optimizer steps done, over all phases
    phase: int = 0
    phase_start: int = 0  # global step at which the current phase began
    consumed: dict[str, int] = field(default_factory=lambda: {pool: 0 for pool in POOLS})
    recent_bio_losses: list[float] = field(default_factory=list)
    phase_ends: list[int] = field(default_factory=list)
    log: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)  # exact match along training
    seconds: float = 0.0
    threads: int | None = None  # torch CPU threads it trains with (results depend on the count)


def decayed_parameters(model: HookedTransformer) -> list[torch.nn.Parameter]:
    """The parameters weight decay applies to: matrices and embeddings (ndim >= 2)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def make_optimizer(model: HookedTransformer, phase: Phase, decay_to: str = "zero") -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings (ndim >= 2), not on biases and norm gains.
    With ``decay_to="base"`` AdamW's own decay is off: the loop pulls toward θ_pre instead."""
    decayed = decayed_parameters(model)
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decayed, "weight_decay": phase.weight_decay if decay_to == "zero" else 0.0}, {"params": plain, "weight_decay": 0.0}],
        lr=phase.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )


@dataclass
class TrainingTracer:
    """During-training trace: per-task gradients of the traced examples at every step, weighted
    by that step's learning rate.

    ``traced[pool]`` holds the indices (into the training examples of that pool) belonging to the
    traced people; ``None`` traces every example. Traced people's rows are forwarded as their own
    sub-batch; their summed gradient is accumulated into the trace and added to the step's
    gradient, so the trajectory is the untraced one (up to floating-point summation order). With
    every example traced, each pool's gradient is taken from its own backward pass.
    """

    accumulator: InfluenceAccumulator
    traced: dict[str, set[int]] | None


def save_checkpoint(
    path: Path, model: HookedTransformer, optimizer: torch.optim.Optimizer, state: TrainState, tracer: TrainingTracer | None = None
) -> None:
    """Weights, optimizer state and trace as safetensors; the counters and the optimizer's
    hyperparameters as JSON in its header. Nothing in it is executable (no pickle): a checkpoint
    received from someone else can be resumed safely."""
    from mechrecall.artifacts import write_safetensors

    tensors = {f"model/{name}": p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    saved = optimizer.state_dict()
    for index, values in saved["state"].items():
        for key, value in values.items():
            tensors[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {"format": "mechrecall-checkpoint-1", "state": json.dumps(asdict(state)), "param_groups": json.dumps(saved["param_groups"])}
    if tracer is not None:
        tensors.update({f"trace/{key}": t.contiguous() for key, t in tracer.accumulator.tensors().items()})
        metadata["trace_examples"] = json.dumps(tracer.accumulator.examples)
    with atomic_path(path) as temporary:
        write_safetensors(temporary, tensors, metadata)


def load_checkpoint(path: Path, device: str) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (safetensors and JSON only), or one clear
    error when the file is not one."""
    from safetensors import SafetensorError, safe_open

    from mechrecall.errors import ArtifactError

    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if metadata.get("format") != "mechrecall-checkpoint-1":
            raise ValueError("not a mechrecall checkpoint")
        state = json.loads(metadata["state"])
        groups = json.loads(metadata["param_groups"])
        optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                optimizer_state.setdefault(int(index), {})[name] = tensor
        trace = None
        if "trace_examples" in metadata:
            trace = {"tensors": {k[len("trace/"):]: t for k, t in tensors.items() if k.startswith("trace/")},
                     "examples": json.loads(metadata["trace_examples"])}
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise ArtifactError(
            f"{path} is not a readable training checkpoint ({str(error).splitlines()[0] if str(error) else type(error).__name__}): "
            "delete it to train the run from its start, or pass --overwrite"
        ) from None
    return {
        "state": state,
        "model": {k[len("model/"):]: t for k, t in tensors.items() if k.startswith("model/")},
        "optimizer": {"state": optimizer_state, "param_groups": groups},
        "trace": trace,
    }


StepCallback = Callable[[TrainState], None]
Evaluator = Callable[[HookedTransformer], dict[str, float]]  # accuracies by metric (bio, qa_id, qa_ood)


def progress_line(strategy: str, state: TrainState, total: int, scores: dict[str, object]) -> str:
    """One line of a run trained without its progress bar: where it is and what it knows."""
    known = ", ".join(f"{key.replace('_', '-').upper()} {100 * float(value):.1f}%" for key, value in scores.items()
                      if key in ("bio", "qa_id", "qa_ood"))
    return f"train {strategy}: step {state.step:,}/{total:,} ({scores.get('phase')}), {known}, {state.seconds:.0f} s"


@deterministic()
def train(
    model: HookedTransformer,
    examples: dict[str, Encoded],
    config: TrainConfig,
    pad: int,
    checkpoint_path: Path | None = None,
    progress: bool | Literal["lines"] = True,
    on_step: StepCallback | None = None,
    tracer: TrainingTracer | None = None,
    evaluator: Evaluator | None = None,
) -> TrainState:
    """Train ``model`` in place; resume from ``checkpoint_path`` if it exists; return the state.

    ``progress``: True draws a bar; ``"lines"`` (a run in the background, whose log is a file)
    prints one line to stderr per evaluation instead; False shows nothing (a caller that shows
    progress itself, as ``reproduce`` does from its workers' steps).

    ``examples`` maps ``"bio"`` and ``"qa"`` to encoded training examples. ``on_step`` is called
    after every step (tests use it to interrupt a run). ``evaluator`` is called at the end of
    every phase and every ``config.eval_every`` steps; its accuracies go to ``state.evals``.
    """
    config.validate()
    device = model.cfg.device or "cpu"
    phases = plan_phases(config)
    streams = {pool: ExampleStream(len(examples[pool]), config.seed, pool) for pool in POOLS if len(examples[pool])}
    state = TrainState()
    # decoupled decay toward the starting weights (θ_pre), taken before any checkpoint is loaded
    anchors = [p.detach().clone() for p in decayed_parameters(model)] if config.decay_to == "base" else None
    l1_anchors = (
        [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad] if config.l1_to_base > 0 else None
    )
    optimizer = make_optimizer(model, phases[0], config.decay_to)
    if checkpoint_path is not None and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path, device)
        state = TrainState(**saved["state"])
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in saved["model"].items():
                parameters[name].copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        if tracer is not None:
            tracer.accumulator.load(saved["trace"]["tensors"], saved["trace"]["examples"])
    total = config.total_steps
    model.train()
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    window: dict[str, list[float]] = {pool: [] for pool in POOLS}
    if state.threads is None:  # a fresh run, or a checkpoint from before threads were kept
        state.threads = torch.get_num_threads()
    # a run resumed under another --jobs or --threads would drift from the uninterrupted one in its
    # last bits, and then by whole points of accuracy: it finishes with the count it began with
    with threads(state.threads), Progress(*columns, disable=progress is not True) as bar:
        task = bar.add_task(f"train {config.strategy}", total=total, completed=state.step, losses="")
        while state.step < total and state.phase < len(phases):
            started = time.perf_counter()
            phase = phases[state.phase]
            step_in_phase = state.step - state.phase_start
            lr = learning_rate(config, step_in_phase, phase.steps, phase.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses: dict[str, torch.Tensor] = {}
            batch_losses = []
            traced_gradients: list[list[torch.Tensor]] = []
            batch_size = sum(phase.per_batch.values())
            optimizer.zero_grad(set_to_none=True)
            for pool, count in phase.per_batch.items():
                if count == 0:
                    continue
                indices = streams[pool].take(state.consumed[pool], count)
                state.consumed[pool] += count
                pool_losses = []
                if tracer is not None and tracer.traced is None:  # every example: this pool's own backward
                    tokens, target_mask = collate(examples[pool].select(indices), pad, device)
                    loss = per_example_loss(model(tokens), tokens, target_mask)
                    parameters = list(tracer.accumulator.parameters.values())
                    gradients = torch.autograd.grad(loss.sum(), parameters)
                    tracer.accumulator.add(pool, gradients, len(indices), lr)
                    traced_gradients.append(list(gradients))
                    losses[pool] = loss.detach().mean()
                    continue
                if tracer is not None:
                    traced = [i for i in indices if i in tracer.traced[pool]]
                    indices = [i for i in indices if i not in tracer.traced[pool]]
                    if traced:
                        tokens, target_mask = collate(examples[pool].select(traced), pad, device)
                        traced_loss = per_example_loss(model(tokens), tokens, target_mask)
                        parameters = list(tracer.accumulator.parameters.values())
                        gradients = torch.autograd.grad(traced_loss.sum(), parameters)
                        tracer.accumulator.add(pool, gradients, len(traced), lr)
                        traced_gradients.append(list(gradients))
                        pool_losses.append(traced_loss.detach())
                if indices:
                    tokens, target_mask = collate(examples[pool].select(indices), pad, device)
                    loss = per_example_loss(model(tokens), tokens, target_mask)
                    batch_losses.append(loss)
                    pool_losses.append(loss.detach())
                losses[pool] = torch.cat(pool_losses).mean()
            if batch_losses:
                (torch.cat(batch_losses).sum() / batch_size).backward()
            if traced_gradients:
                with torch.no_grad():
                    for gradients in traced_gradients:
                        for parameter, gradient in zip(tracer.accumulator.parameters.values(), gradients, strict=True):  # type: ignore[union-attr]
                            if parameter.grad is None:
                                parameter.grad = gradient / batch_size
                            else:
                                parameter.grad += gradient / batch_size
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
            optimizer.step()
            if anchors is not None and phase.weight_decay > 0:
                with torch.no_grad():  # θ ← θ − lr·λ·(θ − θ_pre), as AdamW decays toward 0
                    for parameter, anchor in zip(decayed_parameters(model), anchors, strict=True):
                        parameter.sub_(parameter - anchor, alpha=lr * phase.weight_decay)
            if l1_anchors is not None:
                with torch.no_grad():  # θ ← θ_pre + sign(Δ)·max(|Δ| − lr·λ₁, 0): the proximal step of λ₁‖θ − θ_pre‖₁
                    for parameter, anchor in l1_anchors:
                        change = parameter - anchor
                        parameter.copy_(anchor + change.sign() * (change.abs() - lr * config.l1_to_base).clamp_min(0))
            state.step += 1
            for pool, value in losses.items():
                window[pool].append(float(value))
            if "bio" in losses:
                state.recent_bio_losses = (state.recent_bio_losses + [float(losses["bio"])])[-RECENT_BIO_LOSSES:]
            if state.step % 10 == 0 or state.step == total:
                entry = {"step": state.step, "phase": phase.name, "lr": lr}
                entry.update({f"loss_{pool}": sum(v) / len(v) for pool, v in window.items() if v})
                state.log.append(entry)
                window = {pool: [] for pool in POOLS}
                bar.update(task, losses="  ".join(f"{k}={v:.3f}" for k, v in entry.items() if k.startswith("loss")))
            phase_over = state.step - state.phase_start >= phase.steps or (
                phase.bio_loss_target is not None
                and len(state.recent_bio_losses) == RECENT_BIO_LOSSES
                and sum(state.recent_bio_losses) / RECENT_BIO_LOSSES < phase.bio_loss_target
            )
            if evaluator is not None and (phase_over or (config.eval_every and state.step % config.eval_every == 0)):
                state.evals.append({"step": state.step, "phase": phase.name, **evaluator(model)})
                if progress == "lines":
                    print(progress_line(config.strategy, state, total, state.evals[-1]), file=sys.stderr, flush=True)
            if phase_over:
                state.phase_ends.append(state.step)
                state.phase, state.phase_start = state.phase + 1, state.step
                state.recent_bio_losses = []
                if state.phase < len(phases):
                    optimizer = make_optimizer(model, phases[state.phase], config.decay_to)  # each phase its own AdamW
            state.seconds += time.perf_counter() - started
            bar.update(task, completed=state.step)
            if checkpoint_path is not None and (state.step % config.checkpoint_every == 0 or phase_over):
                save_checkpoint(checkpoint_path, model, optimizer, state, tracer)
            if on_step is not None:
                on_step(state)
    model.eval()
    return state
