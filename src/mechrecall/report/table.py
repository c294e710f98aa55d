"""What a report is made of: the facts of each run, rows with their control and verdict, sections.

Runs are grouped by strategy (``Groups``: strategy → the runs of its seeds, in seed order). Each
analysis' ``section`` turns the groups into one :class:`Section`; a :class:`Row` holds the study's
number, ours per strategy, the control beside each, and a :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mechrecall.report.verdicts import FAILS, HOLDS, NOT_MEASURABLE, Estimate, Verdict, no_claim

METRICS = ("bio", "qa_id", "qa_ood")
METRIC_NAMES = {"bio": "BIO", "qa_id": "QA-ID", "qa_ood": "QA-OOD"}
# the two-stage model keeps its facts when its BIO accuracy at the end is at least this
KEEPS_FACTS = 0.90
# a strategy is at chance on a metric unless it beats the chance level by this much
ABOVE_CHANCE = 0.05


@dataclass(frozen=True)
class RunFacts:
    """One trained run as the report sees it."""

    path: str
    strategy: str
    seed: int
    accuracy: dict[str, float]  # metric → exact match of θ_task
    chance: dict[str, float]  # metric → majority-value chance level
    bio_after_stage1: float | None  # two-stage only
    results: dict[str, Any]  # analysis name → its typed result (the analyses that ran)
    qa_ood_after_stage1: float | None = None  # two-stage only: QA-OOD before any QA was trained

    def result(self, name: str) -> Any:
        return self.results.get(name)


Groups = dict[str, list[RunFacts]]

# kind → (scale, unit, digits) of a table cell
KINDS = {
    "pct": (100, "%", 1), "points": (100, "", 1), "pct3": (100, "%", 3), "ratio": (1, "", 3), "count": (1, "", 1),
    "score": (1, "", 2),
}


def resolution(kind: str) -> float:
    """Half the table's last digit, in the measure's own units: differences below it cannot show."""
    scale, _, digits = KINDS[kind]
    return 0.5 * 10.0**-digits / scale


def fmt(value: Estimate | None, kind: str) -> str:
    if value is None:
        return "·"
    scale, unit, digits = KINDS[kind]
    text = f"{scale * value.mean:.{digits}f}"
    if value.n > 1 or value.spread > 0:
        text += f" ± {scale * value.spread:.{digits}f}"
    return text + unit


@dataclass
class Row:
    measure: str
    study: str
    ours: dict[str, str]  # strategy → formatted estimate
    control: dict[str, str]  # strategy → formatted control (or "·")
    verdict: Verdict = field(default_factory=no_claim)


@dataclass
class Section:
    key: str
    title: str
    note: str
    rows: list[Row] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (file stem, plotly figure)
    finding: str | None = None  # the study's finding this section judges (for the summary at the top)


Extract = Callable[[RunFacts], float | None]


def every_run_has(groups: Groups, name: str) -> list[RunFacts] | None:
    """All runs of the groups when each holds analysis ``name``'s result, else None (no section)."""
    runs = [r for rs in groups.values() for r in rs]
    return runs if runs and all(r.result(name) is not None for r in runs) else None


def values(runs: Sequence[RunFacts], extract: Extract) -> list[float] | None:
    """Per-seed values, or None when any run lacks it."""
    found = [extract(r) for r in runs]
    return None if not found or any(v is None for v in found) else [float(v) for v in found]  # type: ignore[arg-type]


def estimate(runs: Sequence[RunFacts], extract: Extract, within: Extract | None = None) -> Estimate | None:
    found = values(runs, extract)
    if found is None:
        return None
    spreads = values(runs, within) if within is not None else None
    return Estimate.of(found, spreads or ())


def paired(runs: Sequence[RunFacts], first: Extract, second: Extract) -> Estimate | None:
    """Per-seed ``first − second`` within the same runs."""
    return estimate(runs, lambda r: None if first(r) is None or second(r) is None else first(r) - second(r))  # type: ignore[operator]


def across(groups: Groups, extract: Extract) -> Estimate | None:
    """Per-seed ``mixed − two-stage`` (paired by seed), when both strategies have the seeds."""
    mixed = {r.seed: r for r in groups.get("mixed", [])}
    two = {r.seed: r for r in groups.get("two-stage", [])}
    seeds = sorted(set(mixed) & set(two))
    differences = []
    for seed in seeds:
        a, b = extract(mixed[seed]), extract(two[seed])
        if a is None or b is None:
            return None
        differences.append(a - b)
    return Estimate.of(differences) if differences else None


def row(groups: Groups, measure: str, study: str, kind: str, extract: Extract, control: Extract | None = None,
        verdict: Verdict | None = None, within: Extract | None = None, control_within: Extract | None = None) -> Row | None:
    """A row of ``extract`` per strategy with ``control`` beside it; None when no run has it."""
    ours = {s: estimate(runs, extract, within) for s, runs in groups.items()}
    if all(v is None for v in ours.values()):
        return None
    controls = {s: estimate(runs, control, control_within) if control else None for s, runs in groups.items()}
    return Row(measure, study, {s: fmt(v, kind) for s, v in ours.items()}, {s: fmt(v, kind) for s, v in controls.items()},
               verdict or no_claim())


def accuracy(metric: str) -> Extract:
    return lambda r: r.accuracy.get(metric)


def chance(metric: str) -> Extract:
    return lambda r: r.chance.get(metric)


# ---- preconditions -------------------------------------------------------------------------------


def above_chance(groups: Groups, strategy: str, metric: str = "qa_ood") -> tuple[bool, str]:
    runs = groups.get(strategy, [])
    ok = bool(runs) and all(r.accuracy.get(metric, 0.0) >= r.chance.get(metric, 0.0) + ABOVE_CHANCE for r in runs)
    return ok, f"{strategy} {METRIC_NAMES[metric]} is at chance (within {100 * ABOVE_CHANCE:.0f} points of the majority-value level)"


def keeps_facts(groups: Groups) -> tuple[bool, str]:
    runs = groups.get("two-stage", [])
    ok = bool(runs) and all(r.accuracy.get("bio", 0.0) >= KEEPS_FACTS for r in runs)
    return ok, f"the two-stage model lost its facts (BIO accuracy below {100 * KEEPS_FACTS:.0f}%): the gap would measure forgetting"


def both_strategies(groups: Groups) -> tuple[bool, str]:
    return "mixed" in groups and "two-stage" in groups, "the study compares mixed with two-stage: both are needed"


def precondition(
    groups: Groups, measure: str, threshold: str, kind: str, extract: Extract, holds: Callable[[float], bool],
    judged: Sequence[str] = ("mixed", "two-stage"), control: Extract | None = None, control_within: Extract | None = None,
) -> Row:
    """A precondition's row: ``extract`` per strategy (``control`` beside it), and ``holds`` /
    ``fails`` when every seed of every strategy in ``judged`` meets ``holds`` (the reason names
    the first seed that does not). ``not measurable`` when a judged strategy has no run or a run
    lacks the value (the analysis did not run)."""
    ours = {s: estimate(runs, extract) for s, runs in groups.items()}
    controls = {s: estimate(runs, control, control_within) if control else None for s, runs in groups.items()}
    verdict = Verdict(HOLDS, f"every seed of {' and '.join(judged)}")
    for strategy in judged:
        runs = groups.get(strategy, [])
        found = [(r.seed, extract(r)) for r in runs]
        if not runs or any(value is None for _, value in found):
            verdict = Verdict(NOT_MEASURABLE, f"no {strategy} run holds it")
            break
        failing = [(seed, value) for seed, value in found if not holds(float(value))]  # type: ignore[arg-type]
        if failing:
            seed, value = failing[0]
            scale, unit, digits = KINDS[kind]
            verdict = Verdict(FAILS, f"{strategy} seed {seed}: {scale * value:.{digits}f}{unit}"
                              + (f", and {len(failing) - 1} more seed(s)" if len(failing) > 1 else ""))
            break
    return Row(measure, threshold, {s: fmt(v, kind) for s, v in ours.items()}, {s: fmt(v, kind) for s, v in controls.items()}, verdict)
