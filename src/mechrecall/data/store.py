"""World directories: ``mechrecall data`` writes one, training reads it.

Layout: ``manifest.json`` and ``data/`` (the ``DatasetDict`` saved with ``save_to_disk``, plus
``tokenizer.json``, the word-level tokenizer for models built here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict, load_from_disk
from transformers import PreTrainedTokenizerFast

from mechrecall.artifacts import ArtifactDir, check_output, staging_folder, swap_into_place
from mechrecall.config import WorldConfig, from_dict, key_dict
from mechrecall.data.render import SPLITS, build_world, dataset_fingerprint
from mechrecall.data.tokenizer import (
    build_world_tokenizer,
    load_world_tokenizer,
    save_world_tokenizer,
)
from mechrecall.errors import ArtifactError

DATA_DIR = "data"
TOKENIZER_FILE = "data/tokenizer.json"


@dataclass
class World:
    """A rendered world: its config, its splits and the word-level tokenizer."""

    config: WorldConfig
    dataset: DatasetDict
    tokenizer: PreTrainedTokenizerFast

    @property
    def fingerprint(self) -> str:
        return dataset_fingerprint(self.dataset)


def create_world(config: WorldConfig) -> World:
    """Build a world in memory (no files)."""
    config.validate()
    return World(config=config, dataset=build_world(config), tokenizer=build_world_tokenizer())


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars from library code (a notebook shows them as widgets)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def write_world_data(world: World, directory: ArtifactDir) -> None:
    """Save the dataset and tokenizer under ``directory/data`` and record them."""
    with directory.write_folder(DATA_DIR) as folder, quiet_datasets():
        world.dataset.save_to_disk(str(folder))
        save_world_tokenizer(world.tokenizer, folder)


def save_world(world: World, out: Path, overwrite: bool = False) -> ArtifactDir:
    """Write a world directory atomically: built in a temporary sibling, renamed when complete."""
    out = Path(out)
    check_output(out, overwrite, "world")
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(out, kind="world") as staging:
        directory = ArtifactDir.create(staging, "world", {"world": key_dict(world.config)}, {"world": world.config.seed})
        write_world_data(world, directory)
        directory.mark("complete", fingerprint=world.fingerprint, rows={k: len(v) for k, v in world.dataset.items()})
        os.chmod(staging, 0o755)
        swap_into_place(staging, out, "world")
    return ArtifactDir.open(out, kind="world")


def read_world(directory: ArtifactDir) -> World:
    """Load the world stored in a world or run directory, checking every file's hash."""
    directory.verify(DATA_DIR)
    dataset = load_from_disk(str(directory.path / DATA_DIR))
    if not isinstance(dataset, DatasetDict) or set(dataset) != set(SPLITS):
        raise ArtifactError(f"{directory.path / DATA_DIR} does not hold the splits {', '.join(SPLITS)}: make the world again")
    config = from_dict(WorldConfig, directory.config["world"])
    return World(config=config, dataset=dataset, tokenizer=load_world_tokenizer(directory.path / TOKENIZER_FILE))


def load_world(path: Path) -> World:
    """Open a world directory (``mechrecall data``) or a run directory and return its world."""
    directory = ArtifactDir.open(Path(path))
    if not directory.complete and directory.kind == "world":
        raise ArtifactError(f"{path} is an incomplete world: make it again with `mechrecall data --overwrite`")
    return read_world(directory)
