"""Verdict rules on constructed numbers: each can say agrees, does not agree, not measurable."""

from __future__ import annotations

import math

import pytest

from mechrecall.report import Section, finding_verdict, gap_section
from mechrecall.report.table import Row, RunFacts
from mechrecall.report.verdicts import (
    AGREES,
    DISAGREES,
    NO_CLAIM,
    NOT_MEASURABLE,
    Estimate,
    Verdict,
    against_control,
    at_least,
    compare_strategies,
)


def E(*values: float, within: tuple[float, ...] = ()) -> Estimate:
    return Estimate.of(list(values), within)


def test_estimates_pool_seed_and_draw_spreads() -> None:
    e = E(0.5, 0.7)
    assert e.mean == pytest.approx(0.6) and e.spread == pytest.approx(0.1) and e.n == 2
    assert E(0.5, within=(0.3,)).spread == pytest.approx(0.3)  # one seed, its draws' spread
    both = E(0.5, 0.7, within=(0.1, 0.1))
    assert both.spread == pytest.approx(math.sqrt(0.1**2 + 0.1**2))
    difference = E(0.5, 0.7).minus(E(0.1, 0.3))
    assert difference.mean == pytest.approx(0.4) and difference.spread == pytest.approx(math.hypot(0.1, 0.1))


def test_compare_strategies_agrees_only_beyond_the_combined_spread() -> None:
    assert compare_strategies(E(0.50, 0.54, 0.52), E(0.10, 0.12, 0.08), 5e-4).kind == AGREES
    # the same means with seed noise as large as the gap: within the spread
    within = compare_strategies(E(0.2, 0.6, 0.4), E(0.0, 0.6, 0.3), 5e-4)
    assert within.kind == DISAGREES and "within the spread" in within.reason
    reversed_ = compare_strategies(E(0.30, 0.32, 0.31), E(0.50, 0.52, 0.51), 5e-4)
    assert reversed_.kind == DISAGREES and "reversed" in reversed_.reason
    # the study's direction can be "smaller" (a sparser graft)
    assert compare_strategies(E(0.001, 0.0011, 0.0012), E(0.004, 0.0041, 0.0039), 5e-6, larger=False, mixed_needs_effect=False).kind == AGREES


def test_the_control_can_explain_an_effect_away() -> None:
    # mixed's excess over its control is nothing: "agrees in direction" is not enough
    verdict = compare_strategies(E(0.001, -0.002, 0.0005), E(-0.3, -0.31, -0.29), 5e-4)
    assert verdict.kind == DISAGREES and "control explains it" in verdict.reason
    # a random reset hurts as much as resetting S: does not agree
    verdict = against_control(E(0.934, 0.93, 0.94), E(0.879, 0.90, 0.87, within=(0.05, 0.05, 0.05)), 5e-4)
    assert verdict.kind == DISAGREES and "within the spread" in verdict.reason
    assert against_control(E(0.9, 0.92, 0.91), E(0.1, 0.12, 0.11), 5e-4).kind == AGREES
    assert against_control(E(0.1, 0.12), E(0.9, 0.91), 5e-4).kind == DISAGREES


def test_a_failed_precondition_makes_a_row_not_measurable() -> None:
    verdict = compare_strategies(E(0.5, 0.52), E(0.1, 0.11), 5e-4, preconditions=[(True, "fine"), (False, "the graft failed")])
    assert verdict == Verdict(NOT_MEASURABLE, "the graft failed")
    assert against_control(E(0.9, 0.9), E(0.1, 0.1), 5e-4, preconditions=[(False, "at chance")]).kind == NOT_MEASURABLE


def test_one_seed_without_draws_cannot_be_judged_however_large() -> None:
    verdict = compare_strategies(E(0.55), E(0.02), 5e-4)
    assert verdict.kind == NOT_MEASURABLE and "--seeds" in verdict.reason
    # one seed whose control has random draws has a spread: judged
    assert against_control(E(0.9), E(0.1, within=(0.02,)), 5e-4).kind == AGREES


def test_thresholds_use_the_spread() -> None:
    assert at_least(E(0.7, 0.72), 0.6).kind == AGREES
    assert at_least(E(0.5, 0.52), 0.6).kind == DISAGREES
    assert at_least(E(0.55, 0.65), 0.6).kind == DISAGREES  # straddles it


def facts(strategy: str, seed: int, bio: float, qa_ood: float, chance: float = 0.03) -> RunFacts:
    return RunFacts(f"s{seed}/{strategy}", strategy, seed, {"bio": bio, "qa_id": 1.0, "qa_ood": qa_ood},
                    {"bio": chance, "qa_id": chance, "qa_ood": chance}, None, {})


def test_the_gap_is_not_measurable_when_the_two_stage_model_forgot_its_facts() -> None:
    forgot = {"mixed": [facts("mixed", s, 0.99, 0.55 + s / 100) for s in range(3)],
              "two-stage": [facts("two-stage", s, 0.03, 0.02) for s in range(3)]}
    row = next(r for r in gap_section(forgot).rows if r.measure.startswith("QA-OOD"))
    assert row.verdict.kind == NOT_MEASURABLE and "forgetting" in row.verdict.reason
    kept = {"mixed": forgot["mixed"], "two-stage": [facts("two-stage", s, 0.95, 0.20 + s / 100) for s in range(3)]}
    row = next(r for r in gap_section(kept).rows if r.measure.startswith("QA-OOD"))
    assert row.verdict.kind == AGREES
    assert row.control["mixed"] == "3.0 ± 0.0%"  # the chance level stands beside it
    small = {"mixed": [facts("mixed", s, 0.99, 0.21 + s / 100) for s in range(3)], "two-stage": kept["two-stage"]}
    row = next(r for r in gap_section(small).rows if r.measure.startswith("QA-OOD"))
    assert row.verdict.kind == DISAGREES


def test_a_finding_agrees_only_when_every_claimed_row_does() -> None:
    def section(*kinds: str) -> Section:
        return Section("x", "x", "", [Row(f"r{i}", "", {}, {}, Verdict(k, "")) for i, k in enumerate(kinds)], finding="f")

    assert finding_verdict(section(AGREES, AGREES, NO_CLAIM)).kind == AGREES
    assert finding_verdict(section(AGREES, DISAGREES)).kind == DISAGREES
    assert finding_verdict(section(AGREES, NOT_MEASURABLE)).kind == NOT_MEASURABLE
    assert finding_verdict(section(NOT_MEASURABLE, DISAGREES)).kind == DISAGREES
    assert finding_verdict(section(NO_CLAIM)) is None


def test_a_small_consistent_s_reset_effect_is_not_destroying_recall() -> None:
    """The S-reset row compares mixed and two-stage on their drops beyond random sets: a drop of a
    few percent beyond its control (seed 7 of the tiny preset: 7.9% against 0.7 ± 2.1%, two-stage
    3.2%) is an effect, not the study's "destroys" (66.0% vs 6.7%); a drop of that size agrees."""
    from mechrecall.findings.ablate import AblateResult, section
    from mechrecall.report.table import RunFacts

    def run(strategy: str, seed: int, tuned: float, shared: float, random: tuple[float, ...]) -> RunFacts:
        accuracy = {"bio": 1.0, "qa_id": 1.0, "qa_ood": tuned}
        result = AblateResult(size=100, seeds=tuple(range(len(random))), tuned=accuracy, shared={**accuracy, "qa_ood": shared},
                              random=tuple({**accuracy, "qa_ood": r} for r in random))
        return RunFacts(f"s{seed}/{strategy}", strategy, seed, accuracy, {"bio": 0.03, "qa_id": 0.03, "qa_ood": 0.03}, None, {"ablate": result})

    def verdict(mixed_shared: float) -> Verdict:
        groups = {"mixed": [run("mixed", s, 0.25, mixed_shared + 0.001 * s, (0.25, 0.249, 0.251, 0.248, 0.252)) for s in range(3)],
                  "two-stage": [run("two-stage", s, 0.62, 0.60 + 0.001 * s, (0.62, 0.619, 0.621, 0.618, 0.622)) for s in range(3)]}
        found = section(groups)
        return next(r.verdict for r in found.rows if r.measure.startswith("QA-OOD relative drop"))

    small = verdict(0.23)  # mixed loses 8%, two-stage 3%: consistent, but small
    assert small.kind == DISAGREES and "effect size" in small.reason
    assert verdict(0.08).kind == AGREES  # mixed loses 68% beyond its random sets


def test_graft_overlap_is_judged_over_its_chance_level_not_on_the_raw_share() -> None:
    """|S ∩ γ|/|γ| grows with |S| alone. A mixed S twice two-stage's, with γ drawing from S at the
    same 3× chance in both, doubles mixed's share and its excess over chance (the old rule said
    "agrees"); judged on the ratio to chance the strategies are alike. Only a real difference in
    enrichment agrees, and an overlap at chance can never agree."""
    from mechrecall.findings.graft import GraftResult, section

    parameters, size = 1_000_000, 40_000

    def run(strategy: str, seed: int, shared: int, enrichment: float) -> RunFacts:
        intersection = round(enrichment * shared / parameters * size)
        accuracy = {"bio": 1.0, "qa_id": 1.0, "qa_ood": 0.3}
        grafted = {**accuracy, "qa_id": 0.9}
        result = GraftResult(
            sparsity=1e-4, target=0.9, target_met=True, size=size, fraction=size / parameters, parameters=parameters,
            best_step=100, history=(), search=(), accuracy={"grafted": grafted, "tuned": accuracy, "base": accuracy},
            recovered_qa_id=0.9, by_head={}, head_total=[], neurons=[], shared_size=shared, intersection=intersection,
            without_shared={**grafted, "qa_id": 0.89}, random_removed=({**grafted, "qa_id": 0.895},),
        )
        return RunFacts(f"s{seed}/{strategy}", strategy, seed, accuracy, {"bio": 0.03, "qa_id": 0.03, "qa_ood": 0.03}, 0.95,
                        {"graft": result})

    def rows(mixed: tuple[float, ...], two_stage: tuple[float, ...], mixed_shared: int = 2000, two_stage_shared: int = 1000):
        groups = {"mixed": [run("mixed", s, mixed_shared, e) for s, e in enumerate(mixed)],
                  "two-stage": [run("two-stage", s, two_stage_shared, e) for s, e in enumerate(two_stage)]}
        found = section(groups)
        raw = next(r for r in found.rows if r.measure.startswith("|S ∩ γ|₀ / |γ|₀ (control"))
        ratio = next(r for r in found.rows if "over chance" in r.measure)
        return raw, ratio

    raw, ratio = rows((3.0, 3.05, 2.95), (3.0, 2.95, 3.05))
    assert raw.verdict.kind == NO_CLAIM  # shown beside chance, not judged: it follows |S|
    assert raw.ours == {"mixed": "0.6 ± 0.0%", "two-stage": "0.3 ± 0.0%"}
    assert ratio.ours["mixed"].startswith("3.000") and ratio.control["mixed"] == "1.000 ± 0.000"
    assert ratio.verdict.kind == DISAGREES
    # the old rule, mixed's excess share over chance against two-stage's, is fooled by the larger S
    excess = {"mixed": [0.006 * e / 3 - 0.002 for e in (3.0, 3.05, 2.95)], "two-stage": [0.003 * e / 3 - 0.001 for e in (3.0, 2.95, 3.05)]}
    assert compare_strategies(E(*excess["mixed"]), E(*excess["two-stage"]), 5e-4).kind == AGREES
    assert rows((3.0, 3.2, 3.1), (2.2, 2.4, 2.3))[1].verdict.kind == AGREES  # enriched more, beyond the spread
    assert rows((1.0, 1.0, 1.0), (0.5, 0.5, 0.5))[1].verdict.kind == DISAGREES  # at chance: the control explains it
    assert rows((2.0, 3.0, 4.0), (3.5, 2.5, 1.5))[1].verdict.kind == DISAGREES  # per seed, within the spread
    assert rows((3.0,), (2.0,))[1].verdict.kind == NOT_MEASURABLE  # one seed: no spread


def test_preconditions_hold_or_fail_on_every_seed_and_name_the_first_that_fails() -> None:
    """The report's first section: QA-ID ≥ 95% (both), two-stage BIO ≥ 90%, the per-seed gap ≥ 30
    points, θ_pre survives a 1% random reset (≤ 25% of mixed QA-OOD), and the graft recovers ≥ 90%
    within 5% of the parameters; one seed below a threshold fails it, whatever the mean."""
    from mechrecall.findings.ablate import AblateResult
    from mechrecall.findings.graft import GraftResult
    from mechrecall.report import preconditions_section, precondition_summary
    from mechrecall.report.verdicts import FAILS, HOLDS

    def run(strategy: str, seed: int, qa_ood: float, bio: float = 1.0, qa_id: float = 1.0, survival_ood: float = 0.5,
            recovered: float = 0.9, fraction: float = 0.04) -> RunFacts:
        accuracy = {"bio": bio, "qa_id": qa_id, "qa_ood": qa_ood}
        ablate = AblateResult(size=10, seeds=(0, 1), tuned=accuracy, shared=accuracy, random=(accuracy, accuracy), parameters=10_000,
                              survival_size=100, survival=({**accuracy, "qa_ood": survival_ood}, {**accuracy, "qa_ood": survival_ood}))
        graft = GraftResult(
            sparsity=1e-4, target=0.9, target_met=recovered >= 0.9, size=round(fraction * 10_000), fraction=fraction, parameters=10_000,
            best_step=1, history=(), search=(), accuracy={"grafted": accuracy, "tuned": accuracy, "base": accuracy},
            recovered_qa_id=recovered, by_head={}, head_total=[], neurons=[], shared_size=None, intersection=None,
            without_shared=None, random_removed=(),
        )
        return RunFacts(f"s{seed}/{strategy}", strategy, seed, accuracy, {"bio": 0.03, "qa_id": 0.03, "qa_ood": 0.03}, 1.0,
                        {"ablate": ablate, "graft": graft})

    def verdicts(mixed: list[RunFacts], two_stage: list[RunFacts]) -> dict[str, str]:
        found = preconditions_section({"mixed": mixed, "two-stage": two_stage})
        return {r.measure.split(" (")[0].split(",")[0]: f"{r.verdict.kind}: {r.verdict.reason}" for r in found.rows}

    good = verdicts([run("mixed", s, 0.8, survival_ood=0.7) for s in range(3)], [run("two-stage", s, 0.3, bio=0.95) for s in range(3)])
    assert set(good) == {"QA-ID accuracy", "BIO accuracy at the end of training", "mixed − two-stage QA-OOD",
                         "QA-OOD relative drop", "QA-ID recovered by γ", "|γ|₀ share of parameters"}
    assert all(v.startswith(HOLDS) for v in good.values()), good
    # mixed QA-OOD 0.8 → 0.7 is a relative drop of 12.5%: it holds; 0.5 (37.5%) would not
    bad = verdicts(
        [run("mixed", 0, 0.8), run("mixed", 1, 0.8, survival_ood=0.7), run("mixed", 2, 0.8, qa_id=0.94, survival_ood=0.7)],
        [run("two-stage", 0, 0.3, bio=0.95), run("two-stage", 1, 0.55, bio=0.89), run("two-stage", 2, 0.3, bio=0.95, fraction=0.051)],
    )
    assert bad["QA-ID accuracy"] == f"{FAILS}: mixed seed 2: 94.0%"
    assert bad["BIO accuracy at the end of training"] == f"{FAILS}: two-stage seed 1: 89.0%"
    assert bad["mixed − two-stage QA-OOD"] == f"{FAILS}: mixed seed 1: 25.0"  # 80% − 55%: the mean (41.7) would pass
    assert bad["QA-OOD relative drop"] == f"{FAILS}: mixed seed 0: 37.5%"
    assert bad["|γ|₀ share of parameters"] == f"{FAILS}: two-stage seed 2: 5.100%"
    assert bad["QA-ID recovered by γ"].startswith(HOLDS)
    # a strategy whose runs lack the value (no two-stage twin for the gap): not measurable, not "holds"
    lonely = preconditions_section({"mixed": [run("mixed", 0, 0.8)]})
    gap = next(r for r in lonely.rows if r.measure.startswith("mixed − two-stage"))
    assert gap.verdict.kind == NOT_MEASURABLE
    summary = precondition_summary(lonely)  # each is about both strategies, or needs the two-stage twin
    assert summary.startswith("0 of 6 hold; not measurable: QA-ID accuracy ≥ 95% (no two-stage run holds it)")
    assert summary.endswith("(mixed seed 0: 37.5%)")
