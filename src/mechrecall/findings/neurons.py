"""MLP neurons ranked by their shared elements, ablated against random neurons.

Not a finding of the study: an example of how small an analysis is (this module, one line in
``mechrecall.registry`` and its test). A neuron (layer, i) owns column i of ``W_in`` (and
``W_gate``), ``b_in[i]`` and row i of ``W_out``; resetting it puts those slices back to θ_pre.
The control resets as many neurons drawn at random.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from mechrecall.analysis import Analysis, option
from mechrecall.errors import ConfigError
from mechrecall.evaluation import accuracy_evaluator
from mechrecall.params import ParameterIndex
from mechrecall.report.table import Groups, Section, every_run_has, row
from mechrecall.results import Result
from mechrecall.runs import BASE, TUNED, Run

Neuron = tuple[int, int]


@dataclass(frozen=True)
class NeuronsConfig:
    top: float = option(1.0, "percentage of all MLP neurons reset (the top ones by shared elements)")
    draws: int = option(5, "random neuron sets of the same size (the control)")
    seed: int = option(0, "seed of the random sets")

    def validate(self) -> None:
        if not 0 < self.top <= 100:
            raise ConfigError(f"--top must be a percentage in (0, 100], got {self.top}")
        if self.draws < 1:
            raise ConfigError(f"--draws must be at least 1, got {self.draws}")


@dataclass(frozen=True)
class NeuronsResult(Result):
    SCHEMA = 1
    neurons: tuple[tuple[int, int], ...]  # the top neurons by shared elements
    before: dict[str, float]
    after: dict[str, float]
    random: tuple[dict[str, float], ...]

    def drop(self, metric: str) -> float:
        return self.before[metric] - self.after[metric]

    def random_drops(self, metric: str) -> list[float]:
        return [self.before[metric] - r[metric] for r in self.random]


@torch.no_grad()
def reset_neurons(model: HookedTransformer, base: dict[str, Tensor], neurons: list[Neuron]) -> None:
    """Each neuron's input column, bias and output row back to θ_pre."""
    parameters = dict(model.named_parameters())
    for layer, i in neurons:
        for leaf, dim in (("W_in", 1), ("W_gate", 1), ("b_in", 0), ("W_out", 0)):
            name = f"blocks.{layer}.mlp.{leaf}"
            if name in parameters:
                parameters[name].select(dim, i).copy_(base[name].select(dim, i))


def run(run: Run, config: NeuronsConfig, device: str, progress: bool) -> NeuronsResult:
    from mechrecall.findings.shared import read_shared_mask
    from mechrecall.masks import set_weights

    index = ParameterIndex.from_spec(run.spec())
    counts = index.count_by_neuron(index.flatten(read_shared_mask(run, index)))
    everyone = [(layer, i) for layer in range(counts.shape[0]) for i in range(counts.shape[1])]
    count = max(1, round(config.top / 100 * len(everyone)))
    top = sorted(everyone, key=lambda n: (-int(counts[n]), n))[:count]
    model = run.load_model("tuned", device=device)
    base, tuned = run.directory.load_tensors(BASE, device=device), run.directory.load_tensors(TUNED, device=device)
    evaluate = accuracy_evaluator(model.tokenizer, run.world().dataset)

    def accuracy_without(neurons: list[Neuron]) -> dict[str, float]:
        reset_neurons(model, base, neurons)
        accuracy = evaluate(model)
        set_weights(model, base, tuned, {})  # back to θ_task
        return accuracy

    before = evaluate(model)
    draws = tuple(accuracy_without(random.Random(f"neurons-{config.seed}-{d}").sample(everyone, count)) for d in range(config.draws))
    return NeuronsResult(tuple(top), before, accuracy_without(top), draws)


def section(groups: Groups) -> Section | None:
    runs = every_run_has(groups, "neurons")
    if runs is None:
        return None
    result = lambda r: r.result("neurons")  # noqa: E731
    section = Section("neurons", "MLP neurons (not in the study)",
                      "QA-OOD drop (points) when the MLP neurons holding the most shared elements are reset to θ_pre; control: as many random neurons.")
    section.rows.append(row(groups, "QA-OOD drop (points), top neurons by shared (control: random neurons)", "·", "points",
                            lambda r: result(r).drop("qa_ood"), lambda r: statistics.fmean(result(r).random_drops("qa_ood")),
                            control_within=lambda r: statistics.pstdev(result(r).random_drops("qa_ood"))))
    return section


def describe(result: NeuronsResult) -> list[str]:
    drops = result.random_drops("qa_ood")
    return [f"{len(result.neurons)} top neurons by shared: QA-OOD drop {100 * result.drop('qa_ood'):.1f} points; "
            f"random neurons: {100 * statistics.fmean(drops):.1f} ± {100 * statistics.pstdev(drops):.1f}"]


ANALYSIS = Analysis(
    name="neurons",
    summary="MLP neurons ranked by shared elements, reset against random neurons (an example analysis, not the study's).",
    config=NeuronsConfig,
    result=NeuronsResult,
    reads=lambda config: (BASE, TUNED, "shared_mask.safetensors"),
    run=run,
    section=section,
    from_study=lambda study: NeuronsConfig(draws=study.analysis.control_draws),
    describe=describe,
    example="mechrecall neurons runs/mix --top 1",
)
