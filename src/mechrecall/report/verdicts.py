"""Verdict rules: when a row of the report may say that our numbers agree with the study.

Every row compares a measured effect with its *control* (random sets of the same size, random
heads, a shuffled null, the chance level, or the other strategy) and states one of:

- ``agrees``: the study's effect is present (beyond its control) *and* goes the study's way by
  more than the combined spread over seeds (and draws), and more than the table's precision;
- ``does not agree``: the control explains the effect, the difference lies within the spread, or
  the direction is reversed (the reason says which);
- ``not measurable``: a precondition failed (a strategy at chance, the two-stage model lost its
  facts, the graft did not recover its target), so the row cannot tell;
- ``no claim``: the study states nothing to compare with (the row is context).

Spreads are population standard deviations over seeds of per-seed values; a per-seed value that
is itself a mean over random draws adds its draws' spread (``Estimate.of(values, within=...)``).
Differences are taken per seed (paired) where both sides come from the same seed. A difference
with no spread at all (one seed, no random draws) cannot be judged: it is ``not measurable``
until more seeds are run, however large it looks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

AGREES = "agrees"
DISAGREES = "does not agree"
NOT_MEASURABLE = "not measurable"
NO_CLAIM = "no claim"
VERDICTS = (AGREES, DISAGREES, NOT_MEASURABLE, NO_CLAIM)
# a precondition of the study (the checklist), judged on every seed: not a finding
HOLDS = "holds"
FAILS = "fails"


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and its spread (population standard deviation; 0 for one value)."""

    mean: float
    spread: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], within: Sequence[float] = ()) -> Estimate:
        """The mean of ``values`` with their spread over seeds, widened by ``within`` (the spread
        of each value over its own random draws, root-mean-square)."""
        if not values:
            raise ValueError("an estimate needs at least one value")
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        if within:
            spread = math.sqrt(spread**2 + statistics.fmean(w**2 for w in within))
        return cls(statistics.fmean(values), spread, len(values))

    def minus(self, other: Estimate) -> Estimate:
        """The difference of two independent estimates (spreads add in quadrature)."""
        return Estimate(self.mean - other.mean, math.hypot(self.spread, other.spread), min(self.n, other.n))


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of VERDICTS
    reason: str

    def __str__(self) -> str:
        return self.kind if not self.reason else f"{self.kind} ({self.reason})"


def no_claim(reason: str = "") -> Verdict:
    return Verdict(NO_CLAIM, reason)


def _failed(preconditions: Sequence[tuple[bool, str]]) -> Verdict | None:
    for holds, why in preconditions:
        if not holds:
            return Verdict(NOT_MEASURABLE, why)
    return None


def beyond(difference: Estimate, resolution: float) -> int:
    """+1 when ``difference`` is positive by more than its spread and ``resolution``, −1 when
    negative by as much, 0 when within."""
    margin = max(resolution, difference.spread)
    if difference.mean > margin:
        return 1
    if difference.mean < -margin:
        return -1
    return 0


def _unjudgeable(difference: Estimate) -> Verdict | None:
    if difference.n < 2 and difference.spread == 0.0:
        return Verdict(NOT_MEASURABLE, "one seed and no random draws: no spread to judge the difference by (run --seeds 3)")
    return None


def against_control(
    effect: Estimate, control: Estimate, resolution: float, larger: bool = True,
    preconditions: Sequence[tuple[bool, str]] = (), paired: Estimate | None = None,
) -> Verdict:
    """One strategy's effect against its control: ``agrees`` when the effect exceeds the control
    (or falls below it, ``larger=False``) by more than the combined spread. ``paired`` is the
    per-seed difference effect − control when both come from the same seeds (a tighter spread)."""
    failed = _failed(preconditions)
    if failed:
        return failed
    difference = paired if paired is not None else effect.minus(control)
    unjudgeable = _unjudgeable(difference)
    if unjudgeable:
        return unjudgeable
    sign = beyond(difference, resolution) * (1 if larger else -1)
    if sign > 0:
        return Verdict(AGREES, "beyond the control by more than the spread")
    if sign < 0:
        return Verdict(DISAGREES, "reversed: the control goes further")
    return Verdict(DISAGREES, "the control explains it: within the spread")


def compare_strategies(
    mixed_excess: Estimate, two_stage_excess: Estimate, resolution: float, larger: bool = True,
    preconditions: Sequence[tuple[bool, str]] = (), mixed_needs_effect: bool = True,
    paired: Estimate | None = None, minimum: float = 0.0,
) -> Verdict:
    """The study's comparison of strategies on a measure's excess over its control (or on the
    measure itself when it has none): ``agrees`` when mixed's excess is present (beyond zero by its
    spread, with ``mixed_needs_effect``) and larger than two-stage's (smaller with
    ``larger=False``) by more than the combined spread, and by at least ``minimum`` where the
    study's effect has a size (a consistent one-point gap is not "far above"). ``paired`` is the
    per-seed difference mixed − two-stage when available."""
    failed = _failed(preconditions)
    if failed:
        return failed
    difference = paired if paired is not None else mixed_excess.minus(two_stage_excess)
    unjudgeable = _unjudgeable(difference)
    if unjudgeable:
        return unjudgeable
    if mixed_needs_effect and beyond(mixed_excess, resolution) * (1 if larger else -1) <= 0:
        return Verdict(DISAGREES, "the control explains it: mixed is within the spread of its control")
    sign = beyond(difference, resolution) * (1 if larger else -1)
    if sign > 0 and abs(difference.mean) < minimum:
        return Verdict(DISAGREES, f"mixed beyond two-stage, but by less than the study's effect size ({minimum:g})")
    if sign > 0:
        return Verdict(AGREES, "mixed beyond two-stage by more than the spread")
    if sign < 0:
        return Verdict(DISAGREES, "reversed: two-stage goes further")
    return Verdict(DISAGREES, "mixed and two-stage within the spread")


def at_least(value: Estimate, threshold: float, resolution: float = 0.0, preconditions: Sequence[tuple[bool, str]] = ()) -> Verdict:
    """A threshold the study reports (e.g. 'over 60%'): ``agrees`` when the value's mean minus its
    spread clears it."""
    failed = _failed(preconditions)
    if failed:
        return failed
    if value.mean - value.spread > threshold + resolution:
        return Verdict(AGREES, f"above {threshold:g} by more than the spread")
    if value.mean + value.spread < threshold - resolution:
        return Verdict(DISAGREES, f"below {threshold:g}")
    return Verdict(DISAGREES, f"within the spread of {threshold:g}")


def combine(*verdicts: Verdict) -> Verdict:
    """Several conditions of one finding: the first that is not ``agrees`` decides."""
    for verdict in verdicts:
        if verdict.kind != AGREES:
            return verdict
    return verdicts[-1] if verdicts else no_claim()
