"""mechrecall: mechanistic interpretability of fact recall.

Usable from a notebook; the ``mechrecall`` CLI is a thin layer over these functions::

    import mechrecall as mr
    world = mr.create_world(mr.WorldConfig(people=1000))
    mr.save_world(world, "runs/world")
    run = mr.train_run("runs/world", "runs/mix", mr.ModelConfig("tiny"), mr.TrainConfig(strategy="mixed"),
                       trace=mr.TraceConfig(individuals=20))   # the study's trace, during training
    model = mr.load_model("runs/mix")          # a HookedTransformer (θ_task)
    mr.evaluate_run("runs/mix")
    shared = mr.analyze("runs/mix", "shared", fraction=0.01)   # any analysis of mr.ANALYSES, typed result
"""

from __future__ import annotations

from pathlib import Path

from transformer_lens import HookedTransformer

from mechrecall.config import (
    MODEL_SIZES,
    PRESETS,
    STRATEGIES,
    ModelConfig,
    StudyConfig,
    TrainConfig,
    WorldConfig,
    get_preset,
)
from mechrecall.data import ATTRIBUTES, World, create_world, load_world, save_world
from mechrecall.errors import MechrecallError
from mechrecall.evaluation import evaluate
from mechrecall.influence import TraceConfig
from mechrecall.models import build_model, load_checkpoint, load_hf_checkpoint
from mechrecall.runs import Run, evaluate_run, open_run, train_run

__version__ = "0.1.0"


def load_model(name_or_path: str | Path, which: str = "tuned", device: str = "cpu", dtype: str = "float32") -> HookedTransformer:
    """A ``HookedTransformer`` from a run directory (θ_task, or θ_pre with ``which="base"``), a
    local Hugging Face checkpoint directory, or a hub id already in the local HF cache."""
    path = Path(name_or_path)
    if (path / "manifest.json").is_file():
        return open_run(path).load_model(which, device=device)
    return load_checkpoint(str(name_or_path), dtype=dtype, device=device)


def analyze(run: str | Path | Run, name: str, device: str | None = None, **options):
    """Run the registered analysis ``name`` on a run, its config's defaults changed by ``options``;
    returns its typed result (also written into the run as ``<name>.json``)."""
    import dataclasses

    from mechrecall.analysis import execute
    from mechrecall.errors import ConfigError
    from mechrecall.registry import get

    analysis = get(name)
    known = {f.name for f in dataclasses.fields(analysis.config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{name} has no option {unknown[0]!r}: its options are {', '.join(sorted(known))}")
    path = run.path if isinstance(run, Run) else run
    return execute(analysis, path, analysis.config(**options), device=device)


def __getattr__(name: str):
    if name == "ANALYSES":  # lazily: the registry imports every analysis module
        from mechrecall.registry import ANALYSES

        return ANALYSES
    raise AttributeError(name)


__all__ = [
    "ATTRIBUTES", "ANALYSES", "MODEL_SIZES", "TraceConfig", "analyze", "PRESETS", "STRATEGIES", "MechrecallError", "ModelConfig", "Run", "StudyConfig",
    "TrainConfig", "World", "WorldConfig", "build_model", "create_world", "evaluate", "evaluate_run", "get_preset",
    "load_checkpoint", "load_hf_checkpoint", "load_model", "load_world", "open_run", "save_world", "train_run",
]
