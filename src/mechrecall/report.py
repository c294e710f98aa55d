"""The study's findings for a set of runs, beside the paper's numbers: tables and figures.

Runs are grouped by strategy (several runs of one strategy are seeds: each value is then the mean
± the population spread over them). ``sections`` turns what the runs hold (metrics, shared curve,
graft, ablations, head rankings and curves, attention, patching) into one :class:`Section` per
finding, each with rows ``(measure, the study's number, ours per strategy, agrees in direction?)``
and its figures. ``write_report`` writes ``report.md`` (tables; PNG figures where a static exporter
is available, else links to the interactive ones) and ``report.html`` (one self-contained file:
every table, every figure interactive).
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mechrecall.artifacts import atomic_path
from mechrecall.config import STRATEGIES
from mechrecall.runs import Run, open_run

METRICS = ("bio", "qa_id", "qa_ood")
METRIC_NAMES = {"bio": "BIO", "qa_id": "QA-ID", "qa_ood": "QA-OOD"}

# What the study (arXiv 2505.16178, Pythia-2.8B and Llama-3.2-3B fine-tuned on 10,000 people)
# reports, as "mixed … / two-stage …" where it gives both.
STUDY = {
    "qa_ood": "mixed far above two-stage: up to 38 points (Allen-Zhu & Li, from scratch: 86.6% vs 9.7%)",
    "shared_ratio": "mixed |S_k| up to 1.2x two-stage's",
    "graft_fraction": "0.10-0.13% vs 0.18-0.50% of parameters",
    "shared_in_graft": "11.0% vs 3.9%",
    "shared_ablation": "66.0% vs 6.7%",
    "shared_vs_random": "shared reset far worse than random",
    "graft_minus_shared": "58-60 vs 28 points",
    "concentration": "over 60% of shared elements in the top 10% heads (mixed)",
    "head_ablation": "ablating the top shared heads destroys QA-OOD; random heads do not",
    "attention": "critical heads share patterns across BIO and QA (mixed)",
}


def _get(run: Run, name: str) -> Any:
    return run.directory.read_json(name) if name in run.directory.manifest["files"] else None


def gather(run: Run) -> dict[str, Any]:
    """Everything a run holds that the report uses (absent analyses are ``None``)."""
    metrics = _get(run, "metrics.json") or {}
    return {
        "label": f"{run.train_config.strategy} ({run.path.name})",
        "path": str(run.path),
        "strategy": run.train_config.strategy,
        "seed": run.train_config.seed,
        "accuracy": {m: v["accuracy"] for m, v in metrics.items()},
        "shared": _get(run, "shared.json"),
        "graft": _get(run, "graft.json"),
        "ablation": _get(run, "ablation.json") or {},
        "heads": _get(run, "heads.json"),
        "attention": _get(run, "attention.json"),
        "patching": _get(run, "patching.json"),
    }


def group_runs(paths: Sequence[Path | str]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by strategy, mixed first; within a strategy, in the order given (seeds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        facts = gather(open_run(path))
        groups.setdefault(facts["strategy"], []).append(facts)
    order = [s for s in STRATEGIES if s in groups] + [s for s in groups if s not in STRATEGIES]
    return {strategy: groups[strategy] for strategy in order}


# ---- rows and sections -------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    study: str
    ours: dict[str, str]  # strategy → "mean ± spread" (or the single value)
    agrees: str  # "yes" | "no" | "·" (no direction to compare)


@dataclass
class Section:
    key: str
    title: str
    note: str
    rows: list[Row] = field(default_factory=list)
    figures: list[tuple[str, go.Figure]] = field(default_factory=list)  # (file stem, figure)


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


# kind -> (scale, unit, digits) of a table cell
KINDS = {"pct": (100, "%", 1), "points": (100, "", 1), "pct3": (100, "%", 3), "ratio": (1, "", 3), "count": (1, "", 1), "score": (1, "", 2)}


def _fmt(values: Sequence[float] | None, kind: str) -> str:
    if not values:
        return "·"
    mean, spread = mean_spread(values)
    scale, unit, digits = KINDS[kind]
    text = f"{scale * mean:.{digits}f}"
    if len(values) > 1:
        text += f" ± {scale * spread:.{digits}f}"
    return text + unit


Extract = Callable[[dict[str, Any]], float | None]


def _values(runs: list[dict[str, Any]], extract: Extract) -> list[float] | None:
    values = [extract(r) for r in runs]
    return None if any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]


def direction(mixed: Sequence[float], two_stage: Sequence[float], kind: str, mixed_larger: bool) -> str:
    """``yes`` / ``no``: whether mixed's mean is above two-stage's as the study found; ``tie`` when
    the difference is within either strategy's spread over seeds or below the table's precision."""
    (a, spread_a), (b, spread_b) = mean_spread(mixed), mean_spread(two_stage)
    scale, _, digits = KINDS[kind]
    resolution = 0.5 * 10.0**-digits / scale
    if abs(a - b) <= max(resolution, spread_a, spread_b):
        return "tie"
    return "yes" if (a > b) == mixed_larger else "no"


def _row(groups: dict[str, list[dict[str, Any]]], measure: str, study: str, extract: Extract, kind: str,
         mixed_larger: bool | None = True) -> Row | None:
    """A row of ``extract`` per strategy; ``agrees`` compares the means of mixed and two-stage
    (``mixed_larger``: the study's direction; ``None``: no direction)."""
    values = {strategy: _values(runs, extract) for strategy, runs in groups.items()}
    if all(v is None for v in values.values()):
        return None
    agrees = "·"
    mixed, two = values.get("mixed"), values.get("two-stage")
    if mixed_larger is not None and mixed and two:
        agrees = direction(mixed, two, kind, mixed_larger)
    return Row(measure, study, {s: _fmt(v, kind) for s, v in values.items()}, agrees)


def _add(section: Section, row: Row | None) -> None:
    if row is not None:
        section.rows.append(row)


def _bars(groups: dict[str, list[dict[str, Any]]], series: dict[str, Extract], title: str, yaxis: str, scale: float = 100) -> go.Figure:
    """Grouped bars: one group per strategy, one bar per series, error bars = spread over seeds."""
    figure = go.Figure()
    for name, extract in series.items():
        xs, ys, errors = [], [], []
        for strategy, runs in groups.items():
            values = _values(runs, extract)
            if values:
                mean, spread = mean_spread(values)
                xs.append(strategy)
                ys.append(scale * mean)
                errors.append(scale * spread)
        figure.add_trace(go.Bar(name=name, x=xs, y=ys, error_y={"type": "data", "array": errors, "visible": len(next(iter(groups.values()))) > 1}))
    figure.update_layout(barmode="group", title=title, yaxis_title=yaxis, template="plotly_white")
    return figure


def _accuracy(metric: str) -> Extract:
    return lambda r: r["accuracy"].get(metric)


def gap_section(groups: dict[str, list[dict[str, Any]]]) -> Section:
    section = Section("gap", "The strategy gap", "Greedy exact-match accuracy: BIO completion, QA of the people trained on (ID) and of the held-out people (OOD).")
    for metric in METRICS:
        study = STUDY["qa_ood"] if metric == "qa_ood" else "·"
        _add(section, _row(groups, f"{METRIC_NAMES[metric]} accuracy", study, _accuracy(metric), "pct", True if metric == "qa_ood" else None))
    section.figures.append(("accuracy", _bars(groups, {METRIC_NAMES[m]: _accuracy(m) for m in METRICS}, "Exact-match accuracy by strategy", "%")))
    return section


def _curve_at(k: int) -> Extract:
    def extract(r: dict[str, Any]) -> float | None:
        if not r["shared"]:
            return None
        curve = dict(zip(r["shared"]["curve"]["k"], r["shared"]["curve"]["shared"]))
        return curve[k] / k if k in curve else None

    return extract


def shared_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    runs = [r for rs in groups.values() for r in rs]
    if not all(r["shared"] for r in runs):
        return None
    from mechrecall.figures import shared_curve_figure
    from mechrecall.trace import SharedCurve, report_ks

    section = Section("shared", "Shared parameters", "|S_k|/k: the share of the top-k elements by BIO influence that are also top-k by QA influence (random overlap: k/N).")
    n = runs[0]["shared"]["curve"]["n"]
    for k in report_ks(n):
        _add(section, _row(groups, f"|S_k|/k at k={k:,} (k/N = {k / n:.4f})", STUDY["shared_ratio"], _curve_at(k), "ratio"))
    curves = {
        f"{r['strategy']} s{r['seed']}": SharedCurve(r["shared"]["curve"]["n"], r["shared"]["curve"]["k"], r["shared"]["curve"]["shared"]) for r in runs
    }
    section.figures.append(("shared_curve", shared_curve_figure(curves)))
    return section


def graft_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    if not any(r["graft"] for rs in groups.values() for r in rs):
        return None
    section = Section("graft", "Grafting", "A sparse mask γ (θ_pre + γ ⊙ (θ_task − θ_pre)) learned to recover θ_task's QA; its size and its overlap with the shared set S.")

    def graft(key: str) -> Extract:
        return lambda r: r["graft"][key] if r["graft"] else None

    _add(section, _row(groups, "|γ|₀ share of parameters", STUDY["graft_fraction"], graft("fraction"), "pct3", False))
    _add(section, _row(groups, "QA-ID accuracy recovered by the graft (share of θ_task's)", "·", graft("recovered_qa_id"), "pct", None))
    _add(section, _row(groups, "|S ∩ γ|₀ / |γ|₀", STUDY["shared_in_graft"],
                       lambda r: r["graft"]["shared_overlap"]["share_of_graft"] if r["graft"] and "shared_overlap" in r["graft"] else None, "pct"))
    return section


def _ablation(what: str, metric: str, key: str) -> Extract:
    return lambda r: r["ablation"][what]["ablated"][metric][key] if what in r["ablation"] else None


def ablation_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    if not any(r["ablation"] for rs in groups.values() for r in rs):
        return None
    section = Section("ablation", "Shared ablation against random", "Elements reset to θ_pre: the shared set S, random elements with the same count per tensor (mean over control seeds), and the graft without S.")
    _add(section, _row(groups, "QA-OOD relative drop, S reset", STUDY["shared_ablation"], _ablation("shared", "qa_ood", "relative_drop"), "pct"))
    _add(section, _row(groups, "QA-OOD relative drop, random reset", "small for both", _ablation("random", "qa_ood", "relative_drop"), "pct", None))

    def excess(r: dict[str, Any]) -> float | None:
        shared, random = _ablation("shared", "qa_ood", "relative_drop")(r), _ablation("random", "qa_ood", "relative_drop")(r)
        return None if shared is None or random is None else shared - random

    _add(section, _row(groups, "QA-OOD relative drop, S minus random", STUDY["shared_vs_random"], excess, "pct"))
    _add(section, _row(groups, "BIO relative drop, S reset", "·", _ablation("shared", "bio", "relative_drop"), "pct", None))
    _add(section, _row(groups, "QA-ID drop (points), graft without S", STUDY["graft_minus_shared"], _ablation("graft-minus-shared", "qa_id", "drop"), "points"))
    section.figures.append(("ablation", _bars(
        groups, {"S reset": _ablation("shared", "qa_ood", "relative_drop"), "random reset": _ablation("random", "qa_ood", "relative_drop")},
        "QA-OOD relative drop when elements are reset to θ_pre", "relative drop (%)",
    )))
    return section


def heads_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    runs = [r for rs in groups.values() for r in rs]
    if not all(r["heads"] for r in runs):
        return None
    from mechrecall.heads import concentration_figure

    section = Section("concentration", "Head concentration", "How much of the shared attention elements (q, k, v, o) the top heads hold.")

    def held(ranking: str) -> Extract:
        def extract(r: dict[str, Any]) -> float | None:
            info = r["heads"]["rankings"].get(ranking)
            return info["concentration"]["held_by_top"] if info and info["concentration"] else None

        return extract

    top = runs[0]["heads"]["rankings"]["shared"]["concentration"]
    share = f"{100 * top['top_share']:.0f}%" if top else "10%"
    _add(section, _row(groups, f"shared elements held by the top {share} heads", STUDY["concentration"], held("shared"), "pct"))
    _add(section, _row(groups, f"graft elements held by the top {share} heads", "·", held("grafted"), "pct", None))
    for strategy, rs in groups.items():
        section.figures.append((f"concentration_{strategy}", concentration_figure(rs[0]["heads"]["rankings"], f"{strategy} (seed {rs[0]['seed']}): concentration over heads")))
    return section


def head_curve_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    runs = [r for rs in groups.values() for r in rs]
    if not all(r["heads"] and "curve" in r["heads"] for r in runs):
        return None
    from mechrecall.heads import curve_figure

    heads = runs[0]["heads"]
    section = Section("head_ablation", "Head ablation curves", f"QA-OOD accuracy drop (points) when the top heads of each ranking are ablated ({heads['method']}).")

    def drop(ranking: str, share: float) -> Extract:
        def extract(r: dict[str, Any]) -> float | None:
            points = {p["share"]: p for p in r["heads"]["curve"].get(ranking, [])}
            return r["heads"]["before"]["qa_ood"] - points[share]["qa_ood"] if share in points else None

        return extract

    shares = [p["share"] for p in heads["curve"]["shared"]]
    for share in shares:
        count = next(p["count"] for p in heads["curve"]["shared"] if p["share"] == share)
        for ranking in heads["curve"]:
            study = STUDY["head_ablation"] if ranking == "shared" else "·"
            _add(section, _row(groups, f"QA-OOD drop (points), top {share:g}% ({count}) heads by {ranking}", study, drop(ranking, share), "points", True if ranking == "shared" else None))
    for strategy, rs in groups.items():
        r = rs[0]
        section.figures.append((f"head_curve_{strategy}", curve_figure(r["heads"]["curve"], r["heads"]["before"], f"{strategy} (seed {r['seed']}): ablating top heads ({r['heads']['method']})")))
    return section


def attention_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    runs = [r for rs in groups.values() for r in rs]
    if not all(r["attention"] for r in runs):
        return None
    from mechrecall.attention import attention_figures

    section = Section("attention", "Attention patterns", "Mean attention from the answer position to the subject's name (subject linking) and to the relation's words, over people; the top heads by shared size.")

    def both(score: str) -> Extract:
        return lambda r: float(len(r["attention"]["shared_patterns"].get(score, [])))

    def top_head(key: str) -> Extract:
        return lambda r: next(iter(r["attention"]["head_scores"].values()))[key]

    _add(section, _row(groups, "heads with subject linking on both BIO and QA (≥ 0.3)", STUDY["attention"], both("subject"), "count"))
    _add(section, _row(groups, "heads with relation focusing on both BIO and QA (≥ 0.3)", STUDY["attention"], both("relation"), "count"))
    for key, name in (("bio_subject", "BIO subject"), ("qa_subject", "QA subject"), ("bio_relation", "BIO relation"), ("qa_relation", "QA relation")):
        _add(section, _row(groups, f"top shared head: {name} attention", "·", top_head(key), "score", None))
    for strategy, rs in groups.items():
        if "case" in rs[0]["attention"]:
            pattern, scores = attention_figures(rs[0]["attention"])
            section.figures += [(f"attention_case_{strategy}", pattern), (f"attention_scores_{strategy}", scores)]
    return section


def patching_section(groups: dict[str, list[dict[str, Any]]]) -> Section | None:
    runs = [r for rs in groups.values() for r in rs]
    if not all(r["patching"] for r in runs):
        return None
    import torch

    from mechrecall.patching import patching_figure

    section = Section("patching", "Activation patching", "Share of the clean answer's log-probability restored by patching one head's output from a clean run into a corrupted-name run.")
    for kind in ("qa", "bio"):
        _add(section, _row(groups, f"{kind.upper()}: largest restoration by one head", "·", lambda r, kind=kind: max(max(row) for row in r["patching"]["restored"][kind]), "score", None))
    for strategy, rs in groups.items():
        maps = {kind: torch.tensor(values) for kind, values in rs[0]["patching"]["restored"].items()}
        section.figures.append((f"patching_{strategy}", patching_figure(maps, f"{strategy} (seed {rs[0]['seed']}): restored answer log-probability by patched head")))
    return section


SECTIONS = (gap_section, shared_section, graft_section, ablation_section, heads_section, head_curve_section, attention_section, patching_section)


def sections(groups: dict[str, list[dict[str, Any]]]) -> list[Section]:
    return [s for s in (make(groups) for make in SECTIONS) if s is not None]


# ---- writing -----------------------------------------------------------------------------------


def static_exporter() -> bool:
    """Whether plotly can write PNGs here (kaleido and a browser it can drive)."""
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return False
    try:
        go.Figure(go.Bar(x=[1], y=[1])).to_image(format="png", width=50, height=50)
    except Exception:  # noqa: BLE001 - any failure means: no static export here
        return False
    return True


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal bar inside a markdown table cell


def write_report(
    groups: dict[str, list[dict[str, Any]]] | Sequence[Path | str], out: Path, title: str = "mechrecall report",
    preamble: Sequence[str] = (), png: bool | None = None,
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in ``out`` (figures also as HTML, and PNG when possible,
    under ``out/figures``). ``groups`` is :func:`group_runs`'s result or a list of run paths."""
    from mechrecall.figures import write_figure

    if not isinstance(groups, dict):
        groups = group_runs(list(groups))
    found = sections(groups)
    strategies = list(groups)
    seeds = {s: [r["seed"] for r in runs] for s, runs in groups.items()}
    header = ["measure", "study", *strategies, "agrees in direction"]
    png = static_exporter() if png is None else png
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""] + [f"{line}  " for line in preamble]
    md += ["", "Runs: " + "; ".join(f"{s} seeds {', '.join(map(str, v))}" for s, v in seeds.items()) + ". Values are mean ± spread over seeds; 'tie': the strategies differ by less than either's spread over seeds or than the table's precision.", ""]
    page = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(line)}</p>" for line in preamble]
    page.append(f"<p>{html.escape(md[-2])}</p>")
    first_plot = True
    for section in found:
        md += [f"## {section.title}", "", section.note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        page += [f"<h2>{html.escape(section.title)}</h2>", f"<p>{html.escape(section.note)}</p>", "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
        for row in section.rows:
            cells = [row.measure, row.study, *(row.ours.get(s, "·") for s in strategies), row.agrees]
            md.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            css = {"yes": " class='yes'", "no": " class='no'"}.get(row.agrees, "")
            page.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1]) + f"<td{css}>{html.escape(cells[-1])}</td></tr>")
        page.append("</table>")
        md.append("")
        for stem, figure in section.figures:
            interactive = write_figure(figure, out / "figures" / f"{stem}.html")
            if png:
                figure.write_image(str(out / "figures" / f"{stem}.png"), width=1100, height=500)
                md.append(f"![{stem}](figures/{stem}.png)")
            else:
                md.append(f"- figure: [{stem}](figures/{interactive.name})")
            page.append(figure.to_html(full_html=False, include_plotlyjs="inline" if first_plot else False))
            first_plot = False
        md.append("")
    with atomic_path(out / "report.md") as temporary:
        temporary.write_text("\n".join(md) + "\n")
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.yes{background:#e6f4ea}.no{background:#fce8e6}</style>"
        "</head><body>" + "\n".join(page) + "</body></html>"
    )
    with atomic_path(out / "report.html") as temporary:
        temporary.write_text(document)
    return out / "report.md", out / "report.html"


def findings_table(groups: dict[str, list[dict[str, Any]]]) -> list[tuple[str, Row]]:
    """Every row of every section, with its section's title (for a terminal table)."""
    return [(section.title, row) for section in sections(groups) for row in section.rows]
