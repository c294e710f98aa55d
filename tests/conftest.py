"""Shared fixtures: small worlds and runs made once per test session, offline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import datasets  # noqa: E402

import mechrecall as mr  # noqa: E402

datasets.disable_progress_bars()

# a training config that memorizes part of a 24-person world in seconds on a CPU
FAST_TRAIN = dict(batch_size=16, warmup_steps=10, lr=3e-3, weight_decay=0.0, checkpoint_every=25)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("worlds") / "world"
    mr.save_world(mr.create_world(mr.WorldConfig(people=24, seed=3)), path)
    return path


@pytest.fixture(scope="session")
def mixed_run(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> mr.Run:
    """A micro run trained with the study's trace (6 QA-ID people) accumulated during training."""
    from mechrecall.influence import TraceConfig

    out = tmp_path_factory.mktemp("runs") / "mixed"
    config = mr.TrainConfig(strategy="mixed", steps=300, **FAST_TRAIN)
    return mr.train_run(world_dir, out, mr.ModelConfig("micro"), config, device="cpu", progress=False, trace=TraceConfig(individuals=6))


def run_analysis(name: str, path: Path, **options):
    """Run a registered analysis with its default config changed by ``options``."""
    from mechrecall.analysis import execute
    from mechrecall.registry import get

    analysis = get(name)
    return execute(analysis, path, analysis.config(**options), device="cpu")


def localized_copy(run: mr.Run, path: Path, fraction: float) -> mr.Run:
    """A copy of a trained run with its exported shared set S (from the training trace)."""
    import shutil

    shutil.copytree(run.path, path)
    run_analysis("shared", path, fraction=fraction, null_draws=1)
    return mr.open_run(path)
