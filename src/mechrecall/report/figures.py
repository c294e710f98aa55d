"""Figure helpers shared by the report sections."""

from __future__ import annotations

import plotly.graph_objects as go

from mechrecall.report.table import Extract, Groups, values
from mechrecall.report.verdicts import Estimate


def bars(groups: Groups, series: dict[str, Extract], title: str, yaxis: str, scale: float = 100) -> go.Figure:
    """Grouped bars: one group per strategy, one bar per series; error bars show the spread over
    seeds (drawn only when there are several seeds)."""
    figure = go.Figure()
    several = any(len(runs) > 1 for runs in groups.values())
    for name, extract in series.items():
        xs, ys, errors = [], [], []
        for strategy, runs in groups.items():
            found = values(runs, extract)
            if found:
                estimate = Estimate.of(found)
                xs.append(strategy)
                ys.append(scale * estimate.mean)
                errors.append(scale * estimate.spread)
        figure.add_trace(go.Bar(name=name, x=xs, y=ys, error_y={"type": "data", "array": errors, "visible": several}))
    figure.update_layout(barmode="group", title=title, yaxis_title=yaxis, template="plotly_white")
    return figure
