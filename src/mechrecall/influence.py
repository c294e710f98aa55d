"""Cross-task gradient trace: per-parameter BIO and QA influence, ranks, shared sets and curves.

*Influence* of a task on a parameter element, in fp32:

- ``lr-grad`` (the study's cross-task gradient trace, the default): during fine-tuning, the
  learning-rate-weighted sum of the loss gradients of the task's examples, signed,
  ``Δ_task,i = Σ_n lr(d_n) · ∂ℓ(d_n)/∂θ_i`` over every training step that holds the task's
  examples of the traced people (or of every training example); elements are ranked by
  ``|Δ_task,i|`` after the sum. In two-stage training BIO influence therefore comes from the BIO
  stage and QA influence from the QA stage.
- post-hoc variants on θ_task, one example at a time: ``grad`` ``Σ_e |∂ℓ_e/∂θ|``, ``grad-delta``
  ``Σ_e |∂ℓ_e/∂θ ⊙ Δθ|`` (Δθ = θ_task − θ_pre) and ``grad-theta`` ``Σ_e |∂ℓ_e/∂θ ⊙ θ|``.

*Shared* sets: rank every element by BIO influence and by QA influence (descending, ties broken
by the lower flat index). ``S_k`` = top-k(BIO) ∩ top-k(QA); an element is in ``S_k`` exactly when
the larger of its two ranks is below ``k``, so one sort per task gives ``|S_k|`` for every ``k``.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.data.store import World
from mechrecall.determinism import deterministic
from mechrecall.encoding import (
    Encoded,
    collate,
    encode_pairs,
    encode_texts,
    per_example_loss,
)
from mechrecall.errors import ConfigError
from mechrecall.params import ParameterIndex

TASKS = ("bio", "qa")
TRAINING_MEASURES = ("lr-grad",)
POSTHOC_MEASURES = ("grad", "grad-delta", "grad-theta")
MEASURES = TRAINING_MEASURES + POSTHOC_MEASURES
SIGNED_MEASURES = ("lr-grad",)  # accumulated with their sign; ranked by magnitude after the sum
TRACE_SPLITS = ("qa_id", "qa_ood")


@dataclass(frozen=True)
class TraceConfig:
    """Whose examples are traced and how. ``individuals=None`` traces every training example
    (during training only)."""

    individuals: int | None = 20
    split: str = "qa_id"  # whose people: QA-ID (QA trained on) or QA-OOD
    measure: str = "lr-grad"
    seed: int = 0

    def validate(self, mode: str = "training") -> None:
        allowed = TRAINING_MEASURES if mode == "training" else POSTHOC_MEASURES
        if self.measure not in allowed:
            raise ConfigError(f"unknown {mode} influence measure {self.measure!r}: choose one of {', '.join(allowed)}")
        if self.split not in TRACE_SPLITS:
            raise ConfigError(f"unknown split {self.split!r}: choose qa_id or qa_ood")
        if self.individuals is None and mode != "training":
            raise ConfigError("a post-hoc trace follows chosen people: give --individuals N")
        if self.individuals is not None and self.individuals < 1:
            raise ConfigError(f"--individuals must be at least 1, got {self.individuals}")


def choose_individuals(world: World, split: str, count: int, seed: int) -> list[int]:
    """A seeded choice of ``count`` people from a QA split (sorted person ids)."""
    people = sorted(set(world.dataset[split]["person_id"]))
    if count > len(people):
        raise ConfigError(f"--individuals {count} is larger than the {len(people)} people of {split}: choose at most {len(people)}")
    return sorted(random.Random(f"trace-{seed}").sample(people, count))


def traced_examples(world: World, tokenizer, person_ids: Sequence[int], split: str) -> dict[str, Encoded]:
    """Every BIO text and every QA pair (of ``split``) of the traced people."""
    chosen = set(person_ids)
    bio = world.dataset["bio"].filter(lambda row: row["person_id"] in chosen)
    qa = world.dataset[split].filter(lambda row: row["person_id"] in chosen)
    return {
        "bio": encode_texts(tokenizer, list(bio["text"])),
        "qa": encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"])),
    }


def weigh(gradient: Tensor, measure: str, theta: Tensor, base: Tensor | None, lr: float = 1.0) -> Tensor:
    """The per-element contribution of one gradient under a measure (fp32; non-negative except
    for the signed ``lr-grad``)."""
    gradient = gradient.float()
    if measure == "lr-grad":
        return lr * gradient
    if measure == "grad":
        return gradient.abs()
    if measure == "grad-theta":
        return (gradient * theta.float()).abs()
    if base is None:
        raise ValueError("grad-delta needs θ_pre")
    return (gradient * (theta.float() - base.float())).abs()


class InfluenceAccumulator:
    """fp32 accumulators of BIO and QA influence, one tensor per trainable parameter."""

    def __init__(self, model: HookedTransformer, measure: str, base: dict[str, Tensor] | None = None) -> None:
        self.measure = measure
        self.base = base
        self.parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.totals = {
            task: {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in self.parameters.items()}
            for task in TASKS
        }
        self.examples = {task: 0 for task in TASKS}

    def add(self, task: str, gradients: Sequence[Tensor], examples: int, lr: float = 1.0) -> None:
        """Add the summed gradient of ``examples`` examples of ``task`` (at learning rate ``lr``)."""
        with torch.no_grad():
            for (name, parameter), gradient in zip(self.parameters.items(), gradients, strict=True):
                base = self.base[name] if self.base is not None else None
                self.totals[task][name] += weigh(gradient, self.measure, parameter.detach(), base, lr)
        self.examples[task] += examples

    def tensors(self) -> dict[str, Tensor]:
        """``{"bio/<name>": ..., "qa/<name>": ...}``, the layout of ``trace.safetensors``."""
        return {f"{task}/{name}": tensor.cpu() for task in TASKS for name, tensor in self.totals[task].items()}

    def load(self, tensors: dict[str, Tensor], examples: dict[str, int]) -> None:
        for task in TASKS:
            for name in self.totals[task]:
                self.totals[task][name].copy_(tensors[f"{task}/{name}"])
        self.examples = dict(examples)


@deterministic()
def posthoc_influence(
    model: HookedTransformer, examples: dict[str, Encoded], measure: str, pad: int, base: dict[str, Tensor] | None = None,
    progress: bool = False,
) -> InfluenceAccumulator:
    """Influence on the given (fine-tuned) weights: one backward pass per example."""
    from rich.progress import track

    device = model.cfg.device or "cpu"
    accumulator = InfluenceAccumulator(model, measure, base)
    parameters = list(accumulator.parameters.values())
    model.eval()
    work = [(task, i) for task in TASKS for i in range(len(examples[task]))]
    for task, i in track(work, description="trace", disable=not progress):
        tokens, target_mask = collate(examples[task].select([i]), pad, device)
        loss = per_example_loss(model(tokens), tokens, target_mask).sum()
        gradients = torch.autograd.grad(loss, parameters)
        accumulator.add(task, gradients, 1)
    return accumulator


# ---- shared sets ---------------------------------------------------------------------------------

_CHUNK = 1 << 18  # elements per block of the chunked passes (bounds their temporaries)


def _descending_keys(values: Float[Tensor, " n"]) -> np.ndarray:
    """One int64 key per element whose ascending order is: value descending, then flat index
    ascending. Non-negative float32 values order like their bit patterns, so the high 32 bits
    hold ``0x7FFFFFFF - bits(value)`` and the low 32 bits the index: keys are unique, and an
    unstable in-place sort of them is the stable descending sort of the values."""
    source = values.detach().to(torch.float32).contiguous().numpy()
    bits = source.view(np.int32)
    keys = np.empty(source.size, dtype=np.int64)
    # little-endian int64 = (low int32, high int32): write both halves through an int32 view
    halves = keys.view(np.int32).reshape(-1, 2)
    offsets = np.arange(_CHUNK, dtype=np.int32)
    for start in range(0, source.size, _CHUNK):
        stop = min(start + _CHUNK, source.size)
        high = halves[start:stop, 1]
        np.subtract(np.int32(0x7FFFFFFF), bits[start:stop], out=high)
        # +0.0 .. +inf map to 0x7FFFFFFF .. 0x7FFFFF; NaN lies below, a set sign bit wraps negative
        if high.min() < 0x7FFFFF:
            raise ValueError("influence must be non-negative (not -0.0) and not NaN")
        np.add(offsets[: stop - start], np.int32(start), out=halves[start:stop, 0])
    return keys


def _ranks_into(values: Float[Tensor, " n"], out: Int[Tensor, " n"], previous: Int[Tensor, " n"] | None) -> None:
    """Write into ``out`` each element's rank by descending value (ties: lower index first), or
    its maximum with ``previous``. ``out`` may share memory with ``values`` (read into keys first)
    or with ``previous`` (each element is read before it is written)."""
    keys = _descending_keys(values)
    keys.sort()  # in place: no copy, no index array beside the keys
    positions_by_rank = keys.view(np.int32).reshape(-1, 2)[:, 0]  # the low halves: flat indices
    ranks = out.numpy()
    earlier = previous.numpy() if previous is not None else None
    offsets = np.arange(_CHUNK, dtype=ranks.dtype)
    chunk_ranks = np.empty(_CHUNK, dtype=ranks.dtype)
    positions = np.empty(_CHUNK, dtype=np.intp)  # contiguous native indices: the fast fancy-index path
    for start in range(0, keys.size, _CHUNK):
        width = min(_CHUNK, keys.size - start)
        where, current = positions[:width], chunk_ranks[:width]
        where[:] = positions_by_rank[start : start + width]
        np.add(offsets[:width], start, out=current)
        if earlier is not None:
            np.maximum(current, earlier[where], out=current)
        ranks[where] = current
    del keys


def max_ranks(bio: Float[Tensor, " n"], qa: Float[Tensor, " n"], consume: bool = False) -> Int[Tensor, " n"]:
    """``max(rank_bio, rank_qa)`` per element (int32): element ``i`` is in ``S_k`` iff
    ``max_ranks[i] < k``. Each task costs one in-place sort of 8-byte keys. Peak memory beyond the
    influence tensors: 12 bytes per element (keys and result); with ``consume`` (float32,
    contiguous inputs the caller gives up) 8, as the ranks are written over the inputs and the
    result is ``qa``'s memory."""
    if bio.shape != qa.shape or bio.ndim != 1:
        raise ValueError("bio and qa influence must be flat tensors of one length")
    if sys.byteorder != "little" or bio.numel() >= 2**31:
        raise ValueError("max_ranks needs a little-endian machine and fewer than 2^31 elements")
    reusable = consume and all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu" for t in (bio, qa))
    if reusable:
        bio_ranks, result = bio.view(torch.int32), qa.view(torch.int32)
    else:
        bio_ranks = result = torch.empty(bio.numel(), dtype=torch.int32)
    _ranks_into(bio, bio_ranks, previous=None)
    _ranks_into(qa, result, previous=bio_ranks)
    return result


def shared_counts(ranks: Int[Tensor, " n"], ks: Sequence[int], chunk: int = _CHUNK) -> list[int]:
    """``|S_k|`` for every ``k``: the number of elements whose larger rank is below ``k``."""
    grid = torch.tensor(sorted(set(ks)), dtype=torch.long)
    counts = torch.zeros(len(grid), dtype=torch.long)
    for start in range(0, ranks.numel(), chunk):
        block = ranks[start : start + chunk].to(torch.long)
        # for each element, how many grid values exceed its rank = how many S_k contain it
        counts += torch.bincount(torch.searchsorted(grid, block, right=True), minlength=len(grid) + 1)[: len(grid)]
    totals = torch.cumsum(counts, 0).tolist()
    by_k = dict(zip(grid.tolist(), totals, strict=True))
    return [by_k[k] for k in ks]


def log_grid(n: int, points: int = 40, start: int = 10) -> list[int]:
    """About ``points`` integers from ``start`` to ``n``, evenly spaced in log scale, ``n`` included."""
    if n <= start:
        return list(range(1, n + 1))
    values = {round(math.exp(math.log(start) + (math.log(n) - math.log(start)) * i / (points - 1))) for i in range(points)}
    return sorted(v for v in values if 1 <= v <= n)


def report_ks(n: int) -> list[int]:
    """The k the study reports: 10^3, 10^4, 10^5, 10^6 and 1% of the elements (those <= n)."""
    return sorted({k for k in (10**3, 10**4, 10**5, 10**6, max(1, round(0.01 * n))) if 0 < k <= n})


def validate_k(k: int, n: int) -> int:
    if not 0 < k <= n:
        raise ConfigError(f"k must lie in [1, {n:,}] (the number of traced parameter elements), got {k:,}")
    return k


def resolve_k(n: int, k: int | None = None, fraction: float | None = None) -> int:
    """A set size from a count or a fraction of all elements."""
    if (k is None) == (fraction is None):
        raise ConfigError("give exactly one of --k and --fraction")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"--fraction must lie in (0, 1], got {fraction}")
        k = max(1, round(fraction * n))
    return validate_k(int(k), n)  # type: ignore[arg-type]


@dataclass
class SharedCurve:
    n: int
    ks: list[int]
    shared: list[int]

    @property
    def ratio(self) -> list[float]:
        return [s / k for s, k in zip(self.shared, self.ks, strict=True)]

    @property
    def random_ratio(self) -> list[float]:
        """The overlap expected of two independent random top-k sets: |S_k|/k = k/N."""
        return [k / self.n for k in self.ks]

    def to_json(self) -> dict[str, object]:
        return {"n": self.n, "k": self.ks, "shared": self.shared, "ratio": self.ratio, "random_ratio": self.random_ratio}


def shared_curve(bio: Tensor, qa: Tensor, ks: Sequence[int] | None = None, consume: bool = False) -> tuple[SharedCurve, Tensor]:
    """The curve ``|S_k|`` over ``ks`` (default: a 40-point log grid from 10 to N, plus the
    study's k) and the max ranks; ``consume`` lets it overwrite the inputs (see ``max_ranks``)."""
    n = bio.numel()
    ks = list(ks) if ks is not None else sorted(set(log_grid(n)) | set(report_ks(n)))
    for k in ks:
        validate_k(k, n)
    ranks = max_ranks(bio, qa, consume=consume)
    return SharedCurve(n=n, ks=ks, shared=shared_counts(ranks, ks)), ranks


def trace_metadata(**values: object) -> dict[str, str]:
    """safetensors metadata (string to string): every value JSON-encoded; see ``read_metadata``."""
    return {key: json.dumps(value) for key, value in values.items()}


def read_metadata(raw: dict[str, str] | None) -> dict[str, object]:
    return {key: json.loads(value) for key, value in (raw or {}).items()}


def flat_influence(index: ParameterIndex, tensors: dict[str, Tensor], task: str, measure: str = "grad") -> Float[Tensor, " n"]:
    """A task's influence in flat order, as the magnitude that ranks elements (``|Δ|`` for a
    signed measure)."""
    flat = index.flatten({name: tensors[f"{task}/{name}"] for name in index.names}).float()
    return flat.abs_() if measure in SIGNED_MEASURES else flat
