"""Plotly figures: written as HTML beside a shared ``plotly.min.js`` (offline, no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechrecall.artifacts import atomic_path


def write_figure(figure: go.Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (.html) atomically; plotly.js goes once into the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.write_html(str(temporary), include_plotlyjs="directory", full_html=True, div_id=f"figure-{path.stem}")
    return path


def shared_curve_figure(curves: dict[str, Any], title: str = "Shared parameters: |S_k| / k") -> go.Figure:
    """|S_k|/k against k (log x), one line per run (``SharedResult``s by label), each with its
    per-tensor-shuffled null (dotted, mean over draws), and the random-set overlap k/N."""
    figure = go.Figure()
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for number, (label, result) in enumerate(curves.items()):
        colour = palette[number % len(palette)]
        ratio = [s / k for s, k in zip(result.shared, result.ks, strict=True)]
        null = [sum(d[i] for d in result.null_shared) / len(result.null_shared) / k for i, k in enumerate(result.ks)]
        figure.add_trace(go.Scatter(x=list(result.ks), y=ratio, mode="lines+markers", name=label, marker={"size": 4}, line={"color": colour}))
        figure.add_trace(go.Scatter(x=list(result.ks), y=null, mode="lines", name=f"{label}: shuffled null", line={"color": colour, "dash": "dot"}))
    first = next(iter(curves.values()))
    figure.add_trace(
        go.Scatter(x=list(first.ks), y=[k / first.n for k in first.ks], mode="lines", name="random sets (k/N)", line={"dash": "dash", "color": "grey"})
    )
    figure.update_layout(
        title=title, xaxis={"title": "k (top-k by BIO and by QA influence)", "type": "log"},
        yaxis={"title": "|S_k| / k", "range": [0, 1.02]}, template="plotly_white", legend={"x": 0.01, "y": 0.99},
    )
    return figure


def head_heatmaps(by_head: dict[str, list[list[int]]], head_total: list[list[float]], title: str) -> go.Figure:
    """Layers × heads heatmaps: each head's total and its q, k, v, o counts."""
    panels = [("total (q + o + apportioned k, v)", head_total)] + [(c, by_head[c]) for c in ("q", "k", "v", "o")]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels], horizontal_spacing=0.04)
    for column, (name, values) in enumerate(panels, start=1):
        figure.add_trace(
            go.Heatmap(
                z=values, colorscale="Viridis", showscale=column == 1, hovertemplate=f"{name}<br>layer %{{y}}, head %{{x}}: %{{z}}<extra></extra>"
            ),
            row=1, col=column,
        )
        figure.update_xaxes(title_text="head" if name in ("total (q + o + apportioned k, v)", "q", "o") else "kv head", row=1, col=column)
    figure.update_yaxes(title_text="layer", row=1, col=1)
    figure.update_layout(title=title, template="plotly_white", height=320 + 30 * len(head_total))
    return figure
