"""The study's findings for a set of runs, each beside its control and the study's number.

Runs are grouped by strategy (several runs of one strategy are seeds: values are mean ± spread).
The first section is the study's preconditions (the model learned its task, the two-stage model
kept its facts, the gap is there to explain, θ_pre survives a random reset, grafting works), each
``holds`` or ``fails`` on every seed; the next is the strategy gap (accuracy beside the chance level, with the precondition
that the two-stage model kept its facts); every analysis of ``mechrecall.registry`` adds its own
section. Each row carries a verdict from ``mechrecall.report.verdicts`` (``agrees``, ``does not
agree``, ``not measurable``, ``no claim``), and the report opens with a summary of which findings
the runs reproduce and which they do not.

``write_report`` writes ``report.md`` (tables; PNG figures where a static exporter is available,
else links to the interactive ones) and ``report.html`` (one self-contained file: every table,
every figure interactive).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from mechrecall.artifacts import atomic_path
from mechrecall.config import STRATEGIES
from mechrecall.report.table import (
    KEEPS_FACTS,
    METRIC_NAMES,
    METRICS,
    Groups,
    Row,
    RunFacts,
    Section,
    accuracy,
    across,
    chance,
    estimate,
    keeps_facts,
    precondition,
    row,
)
from mechrecall.report.verdicts import (
    AGREES,
    DISAGREES,
    FAILS,
    HOLDS,
    NO_CLAIM,
    NOT_MEASURABLE,
    Verdict,
    compare_strategies,
    no_claim,
)
from mechrecall.runs import Run, open_run

__all__ = ["Groups", "Row", "RunFacts", "Section", "gather", "group_runs", "sections", "summary", "write_report"]

STUDY_GAP = "mixed far above two-stage: up to 38 points (Allen-Zhu & Li, from scratch: 86.6% vs 9.7%)"
# the study's gap is tens of points: a smaller one, however consistent, is not that finding
GAP_MINIMUM = 0.10
# the premise the mechanism findings are read against (issue 12's thresholds)
QA_ID_MINIMUM = 0.95
GAP_PRECONDITION = 0.30


def gather(run: Run) -> RunFacts:
    """What a run holds that the report uses: accuracies, chance levels, each analysis' result."""
    from mechrecall.analysis import load_result
    from mechrecall.evaluation import chance_level
    from mechrecall.registry import ANALYSES

    metrics = run.metrics()
    training = run.directory.manifest.get("training", {})
    chance_levels = training.get("chance") or chance_level(run.world().dataset)
    stage_one = [e for e in training.get("evals", []) if e.get("phase") == "bio"]
    strategy = run.train_config.strategy
    results = {}
    for analysis in ANALYSES:
        result = load_result(run, analysis)
        if result is not None:
            results[analysis.name] = result
    return RunFacts(
        path=str(run.path), strategy=strategy, seed=run.train_config.seed,
        accuracy={m: metrics[m]["accuracy"] for m in METRICS if m in metrics}, chance=dict(chance_levels),
        bio_after_stage1=stage_one[-1]["bio"] if strategy == "two-stage" and stage_one else None, results=results,
        qa_ood_after_stage1=stage_one[-1]["qa_ood"] if strategy == "two-stage" and stage_one else None,
    )


def group_runs(paths: Sequence[Path | str]) -> Groups:
    """Runs grouped by strategy, mixed first; within a strategy, by seed."""
    groups: Groups = {}
    for path in paths:
        facts = gather(open_run(path))
        groups.setdefault(facts.strategy, []).append(facts)
    order = [s for s in STRATEGIES if s in groups] + [s for s in groups if s not in STRATEGIES]
    return {strategy: sorted(groups[strategy], key=lambda r: r.seed) for strategy in order}


def gap_section(groups: Groups) -> Section:
    section = Section(
        "gap", "The strategy gap",
        "Greedy exact-match accuracy: BIO completion, QA of the people trained on (ID) and of the held-out people (OOD). "
        "Control: the chance level (always the attribute's most frequent value). The gap is measurable only when the "
        "two-stage model kept its facts (BIO ≥ 90%): otherwise it measures forgetting, not extraction. At the end of the "
        "BIO stage no QA has been trained, so its QA-OOD is what θ_pre's own skill extracts from the newly stored facts: "
        "a two-stage model far above chance there did not need the QA stage to learn extraction.",
        finding="mixed training extracts facts of unseen people; two-stage training does not",
    )
    for metric in ("bio", "qa_id"):
        section.rows.append(row(groups, f"{METRIC_NAMES[metric]} accuracy", "·", "pct", accuracy(metric), chance(metric)))
    section.rows.append(row(groups, "BIO accuracy at the end of the BIO stage", "·", "pct", lambda r: r.bio_after_stage1))
    # before any QA is trained, QA-OOD = QA-ID: what θ_pre's own skill extracts from the new BIOs
    section.rows.append(row(groups, "QA-OOD at the end of the BIO stage (no QA trained yet)", "·", "pct",
                            lambda r: r.qa_ood_after_stage1,
                            lambda r: r.chance.get("qa_ood") if r.qa_ood_after_stage1 is not None else None))
    excess = lambda r: r.accuracy["qa_ood"] - r.chance["qa_ood"]  # noqa: E731
    verdict = no_claim()
    if "mixed" in groups and "two-stage" in groups:
        verdict = compare_strategies(estimate(groups["mixed"], excess), estimate(groups["two-stage"], excess), 5e-4,
                                     preconditions=[keeps_facts(groups)], paired=across(groups, excess), minimum=GAP_MINIMUM)
    section.rows.append(row(groups, "QA-OOD accuracy (control: chance)", STUDY_GAP, "pct", accuracy("qa_ood"), chance("qa_ood"), verdict))
    section.rows = [r for r in section.rows if r is not None]
    from mechrecall.report.figures import bars

    section.figures.append(("accuracy", bars(groups, {METRIC_NAMES[m]: accuracy(m) for m in METRICS} | {"QA-OOD chance": chance("qa_ood")},
                                             "Exact-match accuracy by strategy", "%")))
    return section


def preconditions_section(groups: Groups) -> Section:
    """The premise the findings are read against, each judged on every seed: both strategies
    learned their task, the two-stage model kept its facts, the gap the mechanism should explain
    is there, and each analysis' own (θ_pre survives a random reset, the graft recovers the skill)."""
    from mechrecall.registry import ANALYSES

    section = Section(
        "preconditions", "Preconditions",
        "What the findings below rest on, each judged on every seed ('holds' or 'fails', with the first seed that fails): the "
        "model learned its task, the two-stage model kept its facts (else the gap measures forgetting), the gap the mechanism "
        "should explain is there (mixed − two-stage QA-OOD per seed, the chance level beside it), θ_pre is a model one can "
        "reset elements to, and grafting recovers the skill. A failed one does not hide a finding; it says how to read it.",
    )
    section.rows.append(precondition(groups, "QA-ID accuracy", f"≥ {100 * QA_ID_MINIMUM:.0f}%", "pct", accuracy("qa_id"),
                                     lambda v: v >= QA_ID_MINIMUM))
    section.rows.append(precondition(groups, "BIO accuracy at the end of training (two-stage: kept its facts)",
                                     f"≥ {100 * KEEPS_FACTS:.0f}% (two-stage)", "pct", accuracy("bio"),
                                     lambda v: v >= KEEPS_FACTS, judged=("two-stage",)))
    two_stage = {r.seed: r for r in groups.get("two-stage", [])}

    def gap(r: RunFacts) -> float | None:
        twin = two_stage.get(r.seed)
        if r.strategy != "mixed" or twin is None or "qa_ood" not in r.accuracy or "qa_ood" not in twin.accuracy:
            return None
        return r.accuracy["qa_ood"] - twin.accuracy["qa_ood"]

    section.rows.append(precondition(groups, "mixed − two-stage QA-OOD (points, paired by seed; control: QA-OOD chance)",
                                     f"≥ {100 * GAP_PRECONDITION:.0f} points", "points", gap,
                                     lambda v: v >= GAP_PRECONDITION, judged=("mixed",), control=chance("qa_ood")))
    for analysis in ANALYSES:
        if analysis.preconditions is not None:
            section.rows += analysis.preconditions(groups)
    return section


def precondition_summary(section: Section) -> str:
    """One line: how many preconditions hold, and which do not."""
    judged = [r for r in section.rows if r.verdict.kind in (HOLDS, FAILS)]
    failed = [r for r in section.rows if r.verdict.kind != HOLDS]
    text = f"{len(judged) - sum(r.verdict.kind == FAILS for r in judged)} of {len(section.rows)} hold"
    if failed:
        text += "; " + "; ".join(f"{r.verdict.kind}: {r.measure} {r.study} ({r.verdict.reason})" for r in failed)
    return text


def sections(groups: Groups) -> list[Section]:
    from mechrecall.registry import ANALYSES

    found = [preconditions_section(groups), gap_section(groups)]
    for analysis in ANALYSES:
        if analysis.section is not None:
            made = analysis.section(groups)
            if made is not None:
                found.append(made)
    return found


def finding_verdict(section: Section) -> Verdict | None:
    """A section's verdict on its finding: every claimed row must agree; a failed precondition
    anywhere makes it not measurable unless a row already disagrees."""
    claimed = [r.verdict for r in section.rows if r.verdict.kind != NO_CLAIM]
    if section.finding is None or not claimed:
        return None
    disagree = [v for v in claimed if v.kind == DISAGREES]
    if disagree:
        return Verdict(DISAGREES, f"{len(disagree)} of {len(claimed)} rows do not agree")
    unmeasured = [v for v in claimed if v.kind == NOT_MEASURABLE]
    if unmeasured:
        return Verdict(NOT_MEASURABLE, unmeasured[0].reason)
    return Verdict(AGREES, f"all {len(claimed)} rows agree")


def summary(found: list[Section]) -> list[tuple[str, Verdict]]:
    return [(s.finding, v) for s in found if s.finding and (v := finding_verdict(s)) is not None]


# ---- writing -----------------------------------------------------------------------------------


def static_exporter() -> bool:
    """Whether plotly can write PNGs here (kaleido and a browser it can drive)."""
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return False
    try:
        import plotly.graph_objects as go

        go.Figure(go.Bar(x=[1], y=[1])).to_image(format="png", width=50, height=50)
    except Exception:  # noqa: BLE001 - any failure means: no static export here
        return False
    return True


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal bar inside a markdown table cell


def _columns(strategies: list[str]) -> list[str]:
    columns = ["measure", "study"]
    for strategy in strategies:
        columns += [strategy, f"{strategy} control"]
    return columns + ["verdict"]


def _cells(row: Row, strategies: list[str]) -> list[str]:
    cells = [row.measure, row.study]
    for strategy in strategies:
        cells += [row.ours.get(strategy, "·"), row.control.get(strategy, "·")]
    return cells + [str(row.verdict)]


VERDICT_CSS = {AGREES: "yes", DISAGREES: "no", NOT_MEASURABLE: "na", HOLDS: "yes", FAILS: "no"}


def write_report(
    groups: Groups | Sequence[Path | str], out: Path | str, title: str = "mechrecall report", preamble: Sequence[str] = (),
    png: bool | None = None,
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in ``out`` (figures also as HTML, and PNG when possible,
    under ``out/figures``). ``groups`` is :func:`group_runs`'s result or a list of run paths."""
    from mechrecall.figures import write_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        from mechrecall.errors import ConfigError

        raise ConfigError(f"--out {out} is a file: give a folder for report.md and report.html")
    if not isinstance(groups, dict):
        groups = group_runs(list(groups))
    found = sections(groups)
    strategies = list(groups)
    seeds = {s: [r.seed for r in runs] for s, runs in groups.items()}
    header = _columns(strategies)
    png = static_exporter() if png is None else png
    out.mkdir(parents=True, exist_ok=True)
    runs_line = ("Runs: " + "; ".join(f"{s} seeds {', '.join(map(str, v))}" for s, v in seeds.items()) + ". Values are mean ± "
                 "spread (population standard deviation) over seeds, and over random draws where a control has them.")
    rules = ("Verdicts: 'agrees' only when the study's effect is present beyond its control and goes the study's way by more "
             "than the combined spread; 'does not agree' when the control explains it, it lies within the spread, or it is "
             "reversed; 'not measurable' when a precondition failed; 'no claim' where the study states nothing. A precondition "
             "'holds' or 'fails' on every seed.")
    md = [f"# {title}", ""] + [f"{line}  " for line in preamble] + ["", runs_line, "", rules, "", "## What these runs reproduce", ""]
    page = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(line)}</p>" for line in preamble]
    page += [f"<p>{html.escape(runs_line)}</p>", f"<p>{html.escape(rules)}</p>", "<h2>What these runs reproduce</h2>"]
    premise = next((s for s in found if s.key == "preconditions"), None)
    if premise is not None:
        line = f"(the first section): {precondition_summary(premise)}."
        md += [f"**Preconditions** {line}", ""]
        page.append(f"<p><b>Preconditions</b> {html.escape(line)}</p>")
    page.append("<ul>")
    for finding, verdict in summary(found):
        md.append(f"- **{verdict.kind}**: {finding} ({verdict.reason})")
        page.append(f"<li><b class='{VERDICT_CSS.get(verdict.kind, '')}'>{html.escape(verdict.kind)}</b>: {html.escape(finding)} ({html.escape(verdict.reason)})</li>")
    md.append("")
    page.append("</ul>")
    first_plot = True
    for section in found:
        md += [f"## {section.title}", "", section.note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        page += [f"<h2>{html.escape(section.title)}</h2>", f"<p>{html.escape(section.note)}</p>",
                 "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
        for entry in section.rows:
            cells = _cells(entry, strategies)
            md.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            css = VERDICT_CSS.get(entry.verdict.kind, "")
            page.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1]) + f"<td class='{css}'>{html.escape(cells[-1])}</td></tr>")
        page.append("</table>")
        md.append("")
        for stem, figure in section.figures:
            interactive = write_figure(figure, out / "figures" / f"{stem}.html")
            if png:
                figure.write_image(str(out / "figures" / f"{stem}.png"), width=1100, height=500)
                md.append(f"![{stem}](figures/{stem}.png)")
            else:
                md.append(f"- figure: [{stem}](figures/{interactive.name})")
            # a fixed element id (plotly draws a random one): the same study writes the same page
            page.append(figure.to_html(full_html=False, include_plotlyjs="inline" if first_plot else False, div_id=f"figure-{stem}"))
            first_plot = False
        md.append("")
    with atomic_path(out / "report.md") as temporary:
        temporary.write_text("\n".join(md) + "\n")
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.yes{background:#e6f4ea}.no{background:#fce8e6}"
        ".na{background:#fff4e0}</style>"
        "</head><body>" + "\n".join(page) + "</body></html>"
    )
    with atomic_path(out / "report.html") as temporary:
        temporary.write_text(document)
    return out / "report.md", out / "report.html"


def findings_table(groups: Groups) -> list[tuple[str, Row]]:
    """Every row of every section, with its section's title (for a terminal table)."""
    return [(section.title, entry) for section in sections(groups) for entry in section.rows]
