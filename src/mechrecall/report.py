"""Comparison of runs (mixed against two-stage) beside the study's numbers: tables and figures.

``compare_runs`` gathers what each run holds (metrics, shared curve, graft, ablations) into
rows ``(finding, measure, study value, ours per run, agrees in direction?)``; ``write_report``
writes ``report.md`` and ``report.html`` (plotly figures inline in one self-contained file).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mechrecall.artifacts import atomic_path
from mechrecall.runs import Run, open_run

# The study's (arXiv 2505.16178) reported values, by measure: (mixed, two-stage) in percent or ratio.
STUDY = {
    "qa_ood": ("mixed far above two-stage", "up to 38 points below mixed"),
    "shared_ratio": ("up to 1.2x the two-stage |S_k|", "1x"),
    "graft_fraction": ("0.10-0.13% of parameters", "0.18-0.50% of parameters"),
    "shared_in_graft": ("11.0%", "3.9%"),
    "shared_ablation": ("-66.0% (relative)", "-6.7% (relative)"),
    "graft_minus_shared": ("-58 to -60 points", "-28 points"),
}


def _get(run: Run, name: str) -> Any:
    return run.directory.read_json(name) if name in run.directory.manifest["files"] else None


def gather(run: Run) -> dict[str, Any]:
    metrics = _get(run, "metrics.json") or {}
    shared = _get(run, "shared.json")
    graft = _get(run, "graft.json")
    ablation = _get(run, "ablation.json") or {}
    return {
        "label": f"{run.train_config.strategy} ({run.path.name})",
        "strategy": run.train_config.strategy,
        "accuracy": {m: v["accuracy"] for m, v in metrics.items()},
        "shared": shared,
        "graft": graft,
        "ablation": ablation,
    }


def _pct(value: float | None) -> str:
    return "·" if value is None else f"{100 * value:.1f}%"


def compare_runs(paths: list[Path | str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-run facts and the findings table comparing them (mixed first when present)."""
    runs = [gather(open_run(p)) for p in paths]
    runs.sort(key=lambda r: r["strategy"] != "mixed")
    rows: list[dict[str, Any]] = []

    def row(finding: str, measure: str, study: str, values: list[str], agrees: str) -> None:
        rows.append({"finding": finding, "measure": measure, "study": study, "ours": values, "agrees": agrees})

    mixed = next((r for r in runs if r["strategy"] == "mixed"), None)
    two = next((r for r in runs if r["strategy"] == "two-stage"), None)

    def direction(a: float | None, b: float | None, larger_is: str = "mixed") -> str:
        if a is None or b is None:
            return "·"
        return "yes" if (a > b if larger_is == "mixed" else a < b) else "no"

    for metric in ("bio", "qa_id", "qa_ood"):
        values = [_pct(r["accuracy"].get(metric)) for r in runs]
        agrees = direction(mixed["accuracy"].get("qa_ood"), two["accuracy"].get("qa_ood")) if metric == "qa_ood" and mixed and two else "·"
        row("strategy gap", f"{metric} accuracy", STUDY["qa_ood"][0] + "; two-stage " + STUDY["qa_ood"][1] if metric == "qa_ood" else "·", values, agrees)
    if all(r["shared"] for r in runs):
        curves = [dict(zip(r["shared"]["curve"]["k"], r["shared"]["curve"]["shared"])) for r in runs]
        for k in sorted(set.intersection(*(set(c) for c in curves))):
            if k in (10**3, 10**4, 10**5) or k == round(0.01 * runs[0]["shared"]["curve"]["n"]):
                values = [f"{c[k] / k:.4f}" for c in curves]
                agrees = direction(curves[0][k], curves[1][k]) if mixed and two and len(curves) == 2 else "·"
                row("shared parameters", f"|S_k|/k at k={k:,}", STUDY["shared_ratio"][0], values, agrees)
    if all(r["graft"] for r in runs):
        row("grafting", "|γ|₀ share of parameters", f"{STUDY['graft_fraction'][0]} vs {STUDY['graft_fraction'][1]}",
            [f"{100 * r['graft']['fraction']:.3f}%" for r in runs], direction(two["graft"]["fraction"], mixed["graft"]["fraction"]) if mixed and two else "·")
        row("grafting", "QA-ID recovered by the graft", "·", [_pct(r["graft"]["recovered_qa_id"]) for r in runs], "·")
        if all("shared_overlap" in r["graft"] for r in runs):
            shares = [r["graft"]["shared_overlap"]["share_of_graft"] for r in runs]
            row("grafting", "|S ∩ γ|₀ / |γ|₀", f"{STUDY['shared_in_graft'][0]} vs {STUDY['shared_in_graft'][1]}", [_pct(s) for s in shares],
                direction(shares[0], shares[1]) if mixed and two and len(shares) == 2 else "·")
    for what, key, measure in (("shared", "shared_ablation", "QA-OOD relative drop, shared reset"), ("random", None, "QA-OOD relative drop, random control"),
                               ("graft-minus-shared", "graft_minus_shared", "QA-ID drop, graft without shared")):
        if all(what in r["ablation"] for r in runs):
            metric = "qa_id" if what == "graft-minus-shared" else "qa_ood"
            field = "drop" if what == "graft-minus-shared" else "relative_drop"
            values = [r["ablation"][what]["ablated"][metric][field] for r in runs]
            study = f"{STUDY[key][0]} vs {STUDY[key][1]}" if key else "small for both"
            row("ablation", measure, study, [_pct(v) for v in values], direction(values[0], values[1]) if key and mixed and two and len(values) == 2 else "·")
    return runs, rows


def figures(runs: list[dict[str, Any]]) -> list[go.Figure]:
    result = []
    accuracy = go.Figure()
    for metric in ("bio", "qa_id", "qa_ood"):
        accuracy.add_trace(go.Bar(name=metric, x=[r["label"] for r in runs], y=[100 * r["accuracy"].get(metric, 0) for r in runs]))
    accuracy.update_layout(barmode="group", title="Exact-match accuracy by strategy", yaxis_title="%", template="plotly_white")
    result.append(accuracy)
    if all(r["shared"] for r in runs):
        from mechrecall.figures import shared_curve_figure
        from mechrecall.trace import SharedCurve

        curves = {r["label"]: SharedCurve(r["shared"]["curve"]["n"], r["shared"]["curve"]["k"], r["shared"]["curve"]["shared"]) for r in runs}
        result.append(shared_curve_figure(curves))
    drops = go.Figure()
    for what in ("shared", "random", "graft-minus-shared"):
        present = [r for r in runs if what in r["ablation"]]
        if present:
            metric = "qa_id" if what == "graft-minus-shared" else "qa_ood"
            drops.add_trace(go.Bar(name=f"{what} ({metric})", x=[r["label"] for r in present],
                                   y=[100 * r["ablation"][what]["ablated"][metric]["drop"] for r in present]))
    if drops.data:
        drops.update_layout(barmode="group", title="Accuracy drop when parameters are reset to θ_pre (points)", template="plotly_white")
        result.append(drops)
    return result


def write_report(paths: list[Path | str], out: Path) -> tuple[Path, Path]:
    runs, rows = compare_runs(paths)
    labels = [r["label"] for r in runs]
    out.mkdir(parents=True, exist_ok=True)
    header = ["finding", "measure", "study", *labels, "agrees in direction"]
    md = ["# mechrecall report", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a literal bar inside a markdown table cell

    md += ["| " + " | ".join(cell(c) for c in [r["finding"], r["measure"], r["study"], *r["ours"], r["agrees"]]) + " |" for r in rows]
    with atomic_path(out / "report.md") as temporary:
        temporary.write_text("\n".join(md) + "\n")
    table = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [r["finding"], r["measure"], r["study"], *r["ours"], r["agrees"]]) + "</tr>" for r in rows
    )
    plots = "".join(figure.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False) for i, figure in enumerate(figures(runs)))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mechrecall report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>mechrecall report</h1><table><tr>{table}</tr>{body}</table>{plots}</body></html>"
    )
    with atomic_path(out / "report.html") as temporary:
        temporary.write_text(page)
    return out / "report.md", out / "report.html"
