"""θ_pre made here: a model pre-trained on a population the studied world does not contain.

``pretrain`` samples the base's own world (population "b", seeded by the base's seed), trains a
model of the study's size on it with the base's recipe (``BaseConfig``: BIO texts alone, or BIO
texts with the QA of half of its people) and returns the run; its fine-tuned weights become θ_pre
of every seed and strategy of the study (``ModelConfig(name=<the base run>)``), as one released
checkpoint would. An interrupted pre-training resumes like any run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from mechrecall.config import StudyConfig
from mechrecall.data.store import create_world, save_world
from mechrecall.errors import ConfigError
from mechrecall.runs import Run, train_run


def base_configs(study: StudyConfig):
    """The base's world, model and training configs."""
    base = study.base
    if not base.pretrained:
        raise ConfigError("the base is a random initialisation: nothing to pre-train (set base=bio or base=mixed)")
    base.validate()
    return base.world(study.world.population_split), dataclasses.replace(study.model, seed=base.seed), base.train(study.train)


def pretrain(study: StudyConfig, out: Path | str, device: str | None = None, progress: bool = True) -> Run:
    """Pre-train the study's base into the run directory ``out`` (resumes an unfinished one)."""
    from mechrecall.artifacts import check_output_path

    world, model, training = base_configs(study)
    out = Path(out)
    check_output_path(out)  # before the base's world is written beside it
    world_dir = out.parent / f".{out.name}.world"  # the run keeps its own copy of the data
    if not (world_dir / "manifest.json").exists():
        save_world(create_world(world), world_dir, overwrite=world_dir.exists())
    run = train_run(world_dir, out, model, training, preset=study.name, device=device, progress=progress)
    shutil.rmtree(world_dir, ignore_errors=True)
    return run
