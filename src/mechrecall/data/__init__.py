"""The synthetic biography world: people, templates, rendering, tokenizer, storage."""

from mechrecall.data.render import SPLITS, build_world, dataset_fingerprint
from mechrecall.data.store import World, create_world, load_world, save_world
from mechrecall.data.templates import ATTRIBUTES
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.data.world import Person, sample_world

__all__ = [
    "ATTRIBUTES", "SPLITS", "Person", "World", "build_world", "build_world_tokenizer", "create_world",
    "dataset_fingerprint", "load_world", "sample_world", "save_world",
]
