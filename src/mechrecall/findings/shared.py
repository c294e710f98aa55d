"""Shared parameters: |S_k| over k, against its nulls, and the exported shared set S.

``S_k`` = top-k by BIO influence ∩ top-k by QA influence (see ``mechrecall.influence``). Two nulls
stand beside the curve: the overlap of two independent random top-k sets, ``k/N``, and the
*per-tensor-shuffled* null: QA influence shuffled within each parameter tensor (seeded draws), so
that a tensor whose gradients are large for every task (a bias, a small matrix) still fills S as
much as it did, and only the element-level agreement of BIO and QA is destroyed. The excess of
|S_k|/k over that null is what the study's finding can rest on.

The shared set at ``k = fraction · N`` is exported as ``shared_mask.safetensors`` (uint8 per
parameter) with its counts per head component and MLP neuron; ablations, grafting overlap and
head rankings read it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mechrecall.analysis import Analysis, option
from mechrecall.errors import ConfigError
from mechrecall.findings.trace import MODES, TRACE_FILES, read_trace
from mechrecall.influence import (
    log_grid,
    max_ranks,
    report_ks,
    resolve_k,
    shared_counts,
)
from mechrecall.params import ParameterIndex
from mechrecall.report.table import (
    Groups,
    Section,
    across,
    estimate,
    every_run_has,
    row,
)
from mechrecall.report.verdicts import compare_strategies, no_claim
from mechrecall.results import Result
from mechrecall.runs import Run

SHARED_MASK = "shared_mask.safetensors"
STUDY = "mixed |S_k| up to 1.2× two-stage's; |S_k|/k > 0.6 for k < 10⁵ (mixed)"


@dataclass(frozen=True)
class SharedConfig:
    trace: str = option("training", "which trace: training (the study's, made during fine-tuning) | posthoc", choices=MODES)
    fraction: float = option(0.01, "export S_k with k = this fraction of all elements")
    null_draws: int = option(3, "draws of the per-tensor-shuffled null")
    seed: int = option(0, "seed of the null's shuffles")

    def validate(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"--fraction must lie in (0, 1], got {self.fraction}")
        if self.null_draws < 1:
            raise ConfigError(f"--null-draws must be at least 1, got {self.null_draws}")


@dataclass(frozen=True)
class SharedResult(Result):
    SCHEMA = 2
    trace: str
    measure: str
    n: int
    ks: tuple[int, ...]
    shared: tuple[int, ...]  # |S_k| at each k
    null_shared: tuple[tuple[int, ...], ...]  # per shuffle draw, |S_k| at each k
    k: int  # the exported S
    size: int
    by_head: dict[str, list[list[int]]]  # component → [layer][head or kv head]
    head_total: list[list[float]]  # [layer][query head], k/v apportioned under GQA
    kv_heads: int
    neurons: list[list[int]]  # [layer][neuron]

    def ratio_at(self, k: int) -> float | None:
        return self.shared[self.ks.index(k)] / k if k in self.ks else None

    def null_at(self, k: int) -> float | None:
        return statistics.fmean(draw[self.ks.index(k)] for draw in self.null_shared) / k if k in self.ks else None

    def null_spread_at(self, k: int) -> float | None:
        if k not in self.ks:
            return None
        draws = [draw[self.ks.index(k)] / k for draw in self.null_shared]
        return statistics.pstdev(draws) if len(draws) > 1 else 0.0


def shuffle_within_tensors(values: Float[Tensor, " n"], index: ParameterIndex, seed: int) -> Float[Tensor, " n"]:
    """``values`` with each parameter tensor's elements permuted (seeded): per-tensor totals and
    distributions kept, element identity destroyed."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.empty_like(values)
    for slot in index.slots:
        block = values[slot.offset : slot.offset + slot.numel]
        shuffled[slot.offset : slot.offset + slot.numel] = block[torch.randperm(slot.numel, generator=generator)]
    return shuffled


def shared_sets(
    bio: Float[Tensor, " n"], qa: Float[Tensor, " n"], index: ParameterIndex, k: int, ks: list[int], null_draws: int, seed: int,
) -> tuple[list[int], list[list[int]], Tensor]:
    """|S_k| at ``ks``, the per-tensor-shuffled null's |S_k| per draw, and the mask of S_k at ``k``
    (pure; the inputs are not modified)."""
    nulls = []
    for draw in range(null_draws):
        null_ranks = max_ranks(bio.clone(), shuffle_within_tensors(qa, index, seed * 1_000 + draw), consume=True)
        nulls.append(shared_counts(null_ranks, ks))
        del null_ranks
    ranks = max_ranks(bio.clone(), qa.clone(), consume=True)
    return shared_counts(ranks, ks), nulls, ranks < k


def run(run: Run, config: SharedConfig, device: str, progress: bool) -> SharedResult:
    trace = read_trace(run, config.trace)
    n = trace.bio.numel()
    k = resolve_k(n, fraction=config.fraction)
    ks = sorted(set(log_grid(n)) | set(report_ks(n)) | {k})
    shared, nulls, mask = shared_sets(trace.bio, trace.qa, trace.index, k, ks, config.null_draws, config.seed)
    from mechrecall.influence import trace_metadata

    run.directory.save_tensors(
        SHARED_MASK,
        {name: tensor.to(torch.uint8) for name, tensor in trace.index.unflatten(mask).items()},
        metadata=trace_metadata(k=k, trace=config.trace),
    )
    counts = trace.index.unit_counts(mask)
    return SharedResult(
        trace=config.trace, measure=str(trace.metadata.get("measure")), n=n, ks=tuple(ks), shared=tuple(shared),
        null_shared=tuple(tuple(d) for d in nulls), k=k, size=int(mask.sum()), kv_heads=trace.index.n_kv_heads, **counts,
    )


def read_shared_mask(run: Run, index: ParameterIndex) -> dict[str, Tensor]:
    from mechrecall.masks import read_run_mask

    return read_run_mask(run, index, SHARED_MASK, "shared")


def _result(r) -> SharedResult | None:
    return r.result("shared")


def section(groups: Groups) -> Section | None:
    runs = every_run_has(groups, "shared")
    if runs is None:
        return None
    from mechrecall.figures import shared_curve_figure

    first = _result(runs[0])
    section = Section(
        "shared", "Shared parameters",
        "|S_k|/k: the share of the top-k elements by BIO influence that are also top-k by QA influence. Control: the same "
        "with QA influence shuffled within each parameter tensor (keeps which tensors are large for every task; k/N is the "
        "overlap of independent random sets). The verdict compares each strategy's excess over that control.",
        finding="mixed training makes more shared parameters",
    )
    ks = report_ks(first.n)
    if first.k not in ks:
        ks = sorted(set(ks) | {first.k})
    for k in ks:
        ratio = lambda r, k=k: _result(r).ratio_at(k)  # noqa: E731
        null = lambda r, k=k: _result(r).null_at(k)  # noqa: E731
        excess = lambda r, k=k: None if ratio(r) is None else ratio(r) - null(r)  # noqa: E731
        verdict = no_claim()
        mixed, two = groups.get("mixed"), groups.get("two-stage")
        if mixed and two:
            m, t = estimate(mixed, excess), estimate(two, excess)
            if m is not None and t is not None:
                verdict = compare_strategies(m, t, resolution=5e-4, paired=across(groups, excess))
        section.rows.append(row(groups, f"|S_k|/k at k = {k:,} (k/N = {k / first.n:.4f})", STUDY, "ratio", ratio, null, verdict,
                                control_within=lambda r, k=k: _result(r).null_spread_at(k)))
    section.rows = [r for r in section.rows if r is not None]
    curves = {f"{r.strategy} s{r.seed}": _result(r) for r in runs}
    section.figures.append(("shared_curve", shared_curve_figure(curves)))
    return section


def describe(result: SharedResult) -> list[str]:
    lines = [f"|S_k|/k ({result.trace} trace, {result.measure}); null: QA shuffled within tensors; k/N: independent random sets"]
    for k in report_ks(result.n):
        lines.append(f"  k = {k:>10,}: {result.ratio_at(k):.4f}   null {result.null_at(k):.4f}   k/N {k / result.n:.4f}")
    lines.append(f"exported S_k: k = {result.k:,}, |S_k| = {result.size:,}")
    return lines


ANALYSIS = Analysis(
    name="shared",
    summary="Shared parameters: |S_k|/k over k beside the per-tensor-shuffled null and k/N; exports S_k.",
    config=SharedConfig,
    result=SharedResult,
    reads=lambda config: (TRACE_FILES[config.trace],),
    writes=lambda config: (SHARED_MASK,),
    run=run,
    section=section,
    from_study=lambda study: SharedConfig(trace=study.analysis.trace, fraction=study.analysis.shared_fraction,
                                          null_draws=study.analysis.null_draws),
    describe=describe,
    example="mechrecall shared runs/mix --fraction 0.01",
)
