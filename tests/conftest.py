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
    out = tmp_path_factory.mktemp("runs") / "mixed"
    config = mr.TrainConfig(strategy="mixed", steps=300, **FAST_TRAIN)
    return mr.train_run(world_dir, out, mr.ModelConfig("micro"), config, device="cpu", progress=False)


def localized_copy(run: mr.Run, path: Path, fraction: float) -> mr.Run:
    """A copy of a trained run with a post-hoc trace (6 people) and an exported shared mask."""
    import shutil

    from mechrecall.trace import TraceConfig
    from mechrecall.tracing import shared_run, trace_run

    shutil.copytree(run.path, path)
    trace_run(path, TraceConfig(individuals=6), device="cpu", progress=False)
    shared_run(path, fraction=fraction)
    return mr.open_run(path)
