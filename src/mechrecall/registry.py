"""The analyses of the study, in the order they run (each reads what the earlier ones wrote).

``mechrecall reproduce`` plans a step for each analysis whose ``from_study`` gives a config, the
report builds one section per analysis that has one, and the CLI has a command per analysis.
Adding an analysis is one module in ``mechrecall.findings`` and one line here.
"""

from __future__ import annotations

from mechrecall.analysis import Analysis
from mechrecall.errors import ConfigError
from mechrecall.findings import (
    ablate,
    attention,
    graft,
    heads,
    neurons,
    patching,
    shared,
    trace,
)

ANALYSES: tuple[Analysis, ...] = (
    trace.ANALYSIS,
    shared.ANALYSIS,
    graft.ANALYSIS,
    ablate.ANALYSIS,
    heads.ANALYSIS,
    neurons.ANALYSIS,
    attention.ANALYSIS,
    patching.ANALYSIS,
)


def get(name: str) -> Analysis:
    for analysis in ANALYSES:
        if analysis.name == name:
            return analysis
    raise ConfigError(f"unknown analysis {name!r}: choose one of {', '.join(a.name for a in ANALYSES)}")
