"""Cross-task gradient trace: per-parameter BIO and QA influence, ranks, shared sets and curves.

*Influence* of a task on a parameter element is the accumulated magnitude of the loss gradient
over that task's examples of the traced people, ``Σ_e |∂ℓ_e/∂θ|`` (``measure="grad"``), or
``Σ_e |∂ℓ_e/∂θ ⊙ Δθ|`` (``"grad-delta"``, Δθ = θ_task − θ_pre) or ``Σ_e |∂ℓ_e/∂θ ⊙ θ|``
(``"grad-theta"``), in fp32. Post-hoc, ``e`` runs over single examples on θ_task; during
training, over each step's traced sub-batch of a task, at the weights of that step.

*Shared* sets: rank every element by BIO influence and by QA influence (descending, ties broken
by the lower flat index). ``S_k`` = top-k(BIO) ∩ top-k(QA); an element is in ``S_k`` exactly when
the larger of its two ranks is below ``k``, so one sort per task gives ``|S_k|`` for every ``k``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.data.store import World
from mechrecall.encoding import Encoded, collate, encode_pairs, encode_texts, per_example_loss
from mechrecall.errors import ConfigError
from mechrecall.params import ParameterIndex

TASKS = ("bio", "qa")
MEASURES = ("grad", "grad-delta", "grad-theta")
TRACE_SPLITS = ("qa_id", "qa_ood")


@dataclass(frozen=True)
class TraceConfig:
    individuals: int = 20
    split: str = "qa_id"  # whose people: QA-ID (QA trained on) or QA-OOD
    measure: str = "grad"
    seed: int = 0

    def validate(self) -> None:
        if self.measure not in MEASURES:
            raise ConfigError(f"unknown influence measure {self.measure!r}: choose one of {', '.join(MEASURES)}")
        if self.split not in TRACE_SPLITS:
            raise ConfigError(f"unknown split {self.split!r}: choose qa_id or qa_ood")
        if self.individuals < 1:
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


def weigh(gradient: Tensor, measure: str, theta: Tensor, base: Tensor | None) -> Tensor:
    """The per-element contribution of one gradient under a measure (fp32, non-negative)."""
    gradient = gradient.float()
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

    def add(self, task: str, gradients: Sequence[Tensor], examples: int) -> None:
        with torch.no_grad():
            for (name, parameter), gradient in zip(self.parameters.items(), gradients, strict=True):
                base = self.base[name] if self.base is not None else None
                self.totals[task][name] += weigh(gradient, self.measure, parameter.detach(), base)
        self.examples[task] += examples

    def tensors(self) -> dict[str, Tensor]:
        """``{"bio/<name>": ..., "qa/<name>": ...}``, the layout of ``trace.safetensors``."""
        return {f"{task}/{name}": tensor.cpu() for task in TASKS for name, tensor in self.totals[task].items()}

    def load(self, tensors: dict[str, Tensor], examples: dict[str, int]) -> None:
        for task in TASKS:
            for name in self.totals[task]:
                self.totals[task][name].copy_(tensors[f"{task}/{name}"])
        self.examples = dict(examples)


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

def _ranks_into(values: Float[Tensor, " n"], out: Int[Tensor, " n"], combine_max: bool, chunk: int = 1 << 22) -> None:
    """Write (or max into) ``out`` each element's descending rank; sorts ``values`` in place."""
    order = torch.empty(values.numel(), dtype=torch.long)
    torch.sort(values, descending=True, stable=True, out=(values, order))
    for start in range(0, values.numel(), chunk):
        positions = order[start : start + chunk]
        ranks = torch.arange(start, start + positions.numel(), dtype=out.dtype)
        if combine_max:
            ranks = torch.maximum(ranks, out[positions])
        out[positions] = ranks
    del order


def max_ranks(bio: Float[Tensor, " n"], qa: Float[Tensor, " n"], consume: bool = False) -> Int[Tensor, " n"]:
    """``max(rank_bio, rank_qa)`` per element (int32 below 2^31 elements, else int64): element
    ``i`` is in ``S_k`` iff ``max_ranks[i] < k``. With ``consume`` the inputs are sorted in place
    (no copies: peak memory beyond them is the result plus one int64 index per element)."""
    if bio.shape != qa.shape or bio.ndim != 1:
        raise ValueError("bio and qa influence must be flat tensors of one length")
    if not consume:
        bio, qa = bio.clone(), qa.clone()
    dtype = torch.int32 if bio.numel() < 2**31 else torch.int64
    ranks = torch.empty(bio.numel(), dtype=dtype)
    _ranks_into(bio.float() if bio.dtype != torch.float32 else bio, ranks, combine_max=False)
    _ranks_into(qa.float() if qa.dtype != torch.float32 else qa, ranks, combine_max=True)
    return ranks


def shared_counts(ranks: Int[Tensor, " n"], ks: Sequence[int], chunk: int = 1 << 22) -> list[int]:
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
    """The curve ``|S_k|`` over ``ks`` (default: a 40-point log grid from 10 to N) and the ranks."""
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


def flat_influence(index: ParameterIndex, tensors: dict[str, Tensor], task: str) -> Float[Tensor, " n"]:
    return index.flatten({name: tensors[f"{task}/{name}"] for name in index.names}).float()
