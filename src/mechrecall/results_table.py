"""A study's numbers as one long table: ``results.csv`` beside the report.

One row per seed, strategy and measure (``seed,strategy,source,measure,value``): the accuracies
of ``metrics.json`` (overall and per attribute), the training record (relative update, two-stage
BIO after stage 1) and every numeric scalar of each analysis' result (``shared.json`` …), named
by its path in the result's JSON. ``pandas.read_csv("runs/tiny/results.csv")`` reads it; a pivot
gives any table of the report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COLUMNS = ("seed", "strategy", "source", "measure", "value")


def _scalars(value: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        yield prefix, float(value)
    elif isinstance(value, (int, float)):
        if math.isfinite(value):
            yield prefix, float(value)
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key in ("schema", "result"):
                continue
            yield from _scalars(inner, f"{prefix}.{key}" if prefix else str(key))


def run_rows(run: Path) -> Iterator[tuple[str, str, float]]:
    """(source, measure, value) of one run directory."""
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = run / "metrics.json"
    if metrics.is_file():
        for split, entry in json.loads(metrics.read_text()).items():
            yield "metrics", f"{split}.accuracy", float(entry["accuracy"])
            for attribute, accuracy in entry.get("by_attribute", {}).items():
                yield "metrics", f"{split}.{attribute}", float(accuracy)
    training = manifest.get("training") or {}
    if training.get("relative_update") is not None:
        yield "training", "relative_update", float(training["relative_update"])
    for record in training.get("evals") or []:
        if record.get("phase") == "bio" and record.get("step") in training.get("phase_ends", []):
            yield "training", "bio_after_stage1", float(record["bio"])
            yield "training", "qa_ood_after_stage1", float(record["qa_ood"])
    for name in sorted(manifest.get("files", {})):
        if name.endswith(".json") and name not in ("metrics.json", "train_log.json", "model.json", "manifest.json") and "/" not in name:
            try:
                result = json.loads((run / name).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(result, dict) and "schema" in result:
                for measure, value in _scalars(result, ""):
                    yield name.removesuffix(".json"), measure, value


def write_results_table(runs: list[tuple[int, str, Path]], path: Path) -> Path:
    """Write ``results.csv`` for ``(seed, strategy, run directory)`` triples (atomically)."""
    from mechrecall.artifacts import atomic_path

    with atomic_path(Path(path)) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for seed, strategy, run in runs:
            if (run / "manifest.json").is_file():
                for source, measure, value in run_rows(run):
                    writer.writerow((seed, strategy, source, measure, repr(value)))
    return Path(path)
