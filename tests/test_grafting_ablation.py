"""Grafting and parameter ablation: exact weight selection, controls, and the run-level steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import mechrecall as mr
from conftest import localized_copy
from mechrecall.ablation import ablate_run
from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.grafting import GraftConfig, base_mask, graft_run, learn_graft, graft_examples
from mechrecall.masks import empty_mask, full_mask, mask_size, random_like, set_weights
from mechrecall.params import ParameterIndex


@pytest.fixture(scope="module")
def weights(mixed_run: mr.Run):
    index = ParameterIndex.from_spec(mixed_run.spec())
    return index, mixed_run.directory.load_tensors("base.safetensors"), mixed_run.directory.load_tensors("model.safetensors")


def test_ablating_nothing_gives_the_tuned_model_and_everything_the_base(mixed_run: mr.Run, weights) -> None:
    index, base, tuned = weights
    model = mixed_run.load_model()
    set_weights(model, base, tuned, full_mask(index))  # take θ_task everywhere = ablate the empty set
    assert all(torch.equal(p, tuned[n]) for n, p in model.named_parameters())
    set_weights(model, base, tuned, empty_mask(index))  # ablate every element
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())


def test_random_control_has_exactly_the_requested_counts(weights) -> None:
    index, base, tuned = weights
    shape = base_mask(index, {n: tuned[n] - base[n] for n in index.names}, 0.01)
    control = random_like(shape, seed=4)
    assert mask_size(control) == mask_size(shape) == round(0.01 * index.numel)
    assert all(int(control[n].sum()) == int(shape[n].sum()) for n in shape)
    assert any(not torch.equal(control[n], shape[n]) for n in shape)
    assert all(torch.equal(random_like(shape, 4)[n], control[n]) for n in shape)


def test_base_mask_holds_the_largest_moves(weights) -> None:
    index, base, tuned = weights
    delta = {n: tuned[n] - base[n] for n in index.names}
    mask = base_mask(index, delta, 0.05)
    flat_delta = index.flatten({n: d.abs() for n, d in delta.items()})
    flat_mask = index.flatten(mask)
    assert flat_delta[flat_mask].min() >= flat_delta[~flat_mask].max()


def test_graft_of_almost_everything_recovers_the_tuned_accuracy(mixed_run: mr.Run, weights) -> None:
    index, base, tuned = weights
    model = mixed_run.load_model()
    world = mixed_run.world()
    fit, heldout = graft_examples(world, model.tokenizer, 0.25, 0)
    config = GraftConfig(sparsity=0.999, steps=2, eval_every=1, batch_size=8)
    result = learn_graft(model, index, base, tuned, fit, heldout, config)
    assert result.size >= round(0.999 * index.numel) - 5
    assert mr.evaluate(model, model.tokenizer, world.dataset)["qa_id"]["accuracy"] >= 0.9 * mixed_run.metrics()["qa_id"]["accuracy"]


@pytest.fixture(scope="module")
def localized_run(mixed_run: mr.Run, tmp_path_factory: pytest.TempPathFactory) -> mr.Run:
    return localized_copy(mixed_run, tmp_path_factory.mktemp("localized") / "run", fraction=0.02)


def test_graft_run_reports_accuracies_overlap_and_head_counts(localized_run: mr.Run) -> None:
    summary = graft_run(localized_run.path, GraftConfig(sparsity=0.05, steps=10, eval_every=5, batch_size=16), device="cpu", progress=False)
    assert summary["size"] > 0 and summary["fraction"] == summary["size"] / summary["parameters"]
    assert set(summary["accuracy"]) == {"grafted", "tuned", "base"}
    assert summary["accuracy"]["tuned"] == {m: localized_run.metrics()[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    overlap = summary["shared_overlap"]
    assert 0 <= overlap["intersection"] <= min(summary["size"], overlap["shared_size"])
    assert sum(map(sum, summary["by_head"]["q"])) <= summary["size"]
    stored = localized_run.directory.load_tensors("graft.safetensors")
    assert sum(int(t.sum()) for t in stored.values()) == summary["size"]


def test_ablations_and_their_controls(localized_run: mr.Run) -> None:
    shared = ablate_run(localized_run.path, "shared", device="cpu")
    random = ablate_run(localized_run.path, "random", seeds=2, device="cpu")
    exported = localized_run.directory.read_json("shared.json")["mask"]
    assert exported["k"] == round(0.02 * ParameterIndex.from_spec(localized_run.spec()).numel)
    assert shared["size"] == random["size"] == exported["size"] > 0
    for result in (shared, random):
        for metric, values in result["ablated"].items():
            assert values["drop"] == pytest.approx(result["tuned"][metric] - values["accuracy"])
    assert len(random["per_seed"]) == 2
    if "graft.json" not in localized_run.directory.manifest["files"]:
        graft_run(localized_run.path, GraftConfig(sparsity=0.05, steps=2, eval_every=1, batch_size=16), device="cpu", progress=False)
    trimmed = ablate_run(localized_run.path, "graft-minus-shared", device="cpu")
    assert 0 <= trimmed["removed"] <= trimmed["shared_size"]
    assert set(localized_run.directory.read_json("ablation.json")) == {"shared", "random", "graft-minus-shared"}


def test_bad_grafting_and_ablation_requests(mixed_run: mr.Run, localized_run: mr.Run, tmp_path: Path) -> None:
    for sparsity in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="--sparsity must lie strictly between 0 and 1"):
            graft_run(localized_run.path, GraftConfig(sparsity=sparsity), device="cpu", progress=False)
    bare = tmp_path / "bare"
    shutil.copytree(mixed_run.path, bare, ignore=shutil.ignore_patterns("trace*", "shared*", "graft*", "ablation*"))
    with pytest.raises(ArtifactError, match="no trace.safetensors"):
        ablate_run(bare, "shared", k=100, device="cpu")
    with pytest.raises(ConfigError, match="unknown --what"):
        ablate_run(localized_run.path, "everything", device="cpu")
    # a graft of another model: same files, other shapes
    other_world = tmp_path / "w"
    mr.save_world(mr.create_world(mr.WorldConfig(people=6, seed=2)), other_world)
    other = mr.train_run(other_world, tmp_path / "other", mr.ModelConfig("tiny"), mr.TrainConfig(steps=1, batch_size=2), device="cpu", progress=False)
    shutil.copy(localized_run.path / "graft.safetensors", other.path / "graft.safetensors")
    other.directory.record("graft.safetensors")
    shutil.copy(localized_run.path / "trace.safetensors", other.path / "trace.safetensors")
    with pytest.raises(ArtifactError, match="mask of another model"):
        from mechrecall.grafting import read_graft

        read_graft(other, ParameterIndex.from_spec(other.spec()))


def test_mask_learning_finds_elements_the_base_mask_missed(mixed_run: mr.Run, weights) -> None:
    """θ_pre = θ_task with strong noise on 2% of the elements: the top-0.5% base mask undoes only
    part of it, and the learned graft must add elements that restore accuracy."""
    from mechrecall.masks import random_global

    index, _, tuned = weights
    damaged = random_global(index, round(0.02 * index.numel), seed=0)
    generator = torch.Generator().manual_seed(1)
    pre = {n: torch.where(damaged[n], t + 3 * t.std() * torch.randn(t.shape, generator=generator), t) for n, t in tuned.items()}
    model = mixed_run.load_model()
    fit, heldout = graft_examples(mixed_run.world(), model.tokenizer, 0.25, 0)
    result = learn_graft(model, index, pre, tuned, fit, heldout, GraftConfig(sparsity=0.005, steps=30, eval_every=5, batch_size=32))
    start = result.history[0]
    assert result.score > start["score"] and result.best_step > 0
    assert result.size > start["size"]  # it grew the mask, by far less than the damage
    assert result.size < round(0.02 * index.numel)
