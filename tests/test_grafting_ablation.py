"""Grafting and parameter ablation against slow references: exact weight selection, the mask
update against autograd, resets against element-by-element copies, and their controls."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import localized_copy, run_analysis

import mechrecall as mr
from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.findings.graft import (
    GraftConfig,
    add_best,
    base_mask,
    first_order_gain,
    describe,
    fit_gradient,
    graft_examples,
    learn_graft,
    mask_gradient,
    random_subset,
    read_graft,
)
from mechrecall.findings.shared import read_shared_mask
from mechrecall.masks import (
    counts_like,
    difference,
    empty_mask,
    full_mask,
    mask_size,
    random_like,
    random_scaled,
    set_weights,
)
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
    config = GraftConfig(sparsity=0.999, max_sparsity=0.9999, steps=2, eval_every=1, batch_size=8)
    result = learn_graft(model, index, base, tuned, fit, heldout, config)
    assert result.size >= round(0.999 * index.numel) - 5
    assert mr.evaluate(model, model.tokenizer, world.dataset)["qa_id"]["accuracy"] >= 0.9 * mixed_run.metrics()["qa_id"]["accuracy"]


def test_mask_update_is_the_autograd_gradient_of_the_relaxed_graft(mixed_run: mr.Run, weights) -> None:
    """∂loss/∂S through θ = θ_pre + γ(S) ⊙ Δθ, by autograd on S itself, against the update rule."""
    from mechrecall.encoding import collate, pad_id, per_example_loss

    index, base, tuned = weights
    model = mixed_run.load_model()
    fit, _ = graft_examples(mixed_run.world(), model.tokenizer, 0.25, 0)
    tokens, target = collate(fit.select(list(range(8))), pad_id(model.tokenizer))
    delta = {n: tuned[n] - base[n] for n in index.names}
    start = base_mask(index, delta, 0.05)
    generator = torch.Generator().manual_seed(3)
    bias = 2.0  # a small bias so that σ' is not ~0 and the check has teeth
    logits = {n: torch.rand(start[n].shape, generator=generator) for n in index.names}
    # the rule: the loss gradient at θ(S), through mask_gradient
    gamma = {n: start[n].float() + (1 - 2 * start[n].float()) * torch.sigmoid(logits[n] - bias) for n in index.names}
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for n in index.names:
            parameters[n].copy_(base[n] + gamma[n] * delta[n])
    model.zero_grad()
    per_example_loss(model(tokens), tokens, target).mean().backward()
    rule = {n: mask_gradient(start[n], logits[n], parameters[n].grad, delta[n], bias) for n in index.names}
    # the reference: S as leaves, θ(S) built differentiably, autograd all the way
    leaves = {n: logits[n].clone().requires_grad_(True) for n in index.names}
    theta = {n: base[n] + (start[n].float() + (1 - 2 * start[n].float()) * torch.sigmoid(leaves[n] - bias)) * delta[n] for n in index.names}
    loss = per_example_loss(torch.func.functional_call(model, theta, (tokens,)), tokens, target).mean()
    reference = dict(zip(index.names, torch.autograd.grad(loss, [leaves[n] for n in index.names]), strict=True))
    for n in index.names:
        assert torch.allclose(rule[n], reference[n], rtol=1e-3, atol=1e-9), n
    assert sum(float(r.abs().sum()) for r in rule.values()) > 0


@pytest.fixture(scope="module")
def localized_run(mixed_run: mr.Run, tmp_path_factory: pytest.TempPathFactory) -> mr.Run:
    return localized_copy(mixed_run, tmp_path_factory.mktemp("localized") / "run", fraction=0.02)


def test_greedy_gain_is_the_autograd_derivative_along_the_graft(mixed_run: mr.Run, weights) -> None:
    """The greedy round's gain, from the gradient accumulated a few examples at a time at θ_pre + γ ⊙ Δθ,
    against −∂loss/∂γ by autograd on a continuous γ with the mean loss over every example in one batch."""
    from mechrecall.encoding import collate, pad_id, per_example_loss
    from mechrecall.masks import set_weights

    index, base, tuned = weights
    model = mixed_run.load_model()
    fit, _ = graft_examples(mixed_run.world(), model.tokenizer, 0.25, 0)
    fit = fit.select(list(range(11)))
    pad = pad_id(model.tokenizer)
    delta = {n: tuned[n] - base[n] for n in index.names}
    mask = base_mask(index, delta, 0.3)
    set_weights(model, base, tuned, mask)
    gain = first_order_gain(index, fit_gradient(model, fit, pad, batch_size=3), delta)  # 4 uneven chunks
    leaves = {n: mask[n].float().clone().requires_grad_(True) for n in index.names}
    theta = {n: base[n] + leaves[n] * delta[n] for n in index.names}
    tokens, target = collate(fit, pad)
    loss = per_example_loss(torch.func.functional_call(model, theta, (tokens,)), tokens, target).mean()
    reference = index.flatten(dict(zip(index.names, torch.autograd.grad(loss, [leaves[n] for n in index.names]), strict=True)))
    assert torch.allclose(gain, -reference, rtol=1e-3, atol=1e-8)
    assert float(gain.abs().sum()) > 0 and bool((gain > 0).any()) and bool((gain < 0).any())


def test_add_best_adds_the_largest_positive_gains_outside_the_mask(weights) -> None:
    index = weights[0]
    generator = torch.Generator().manual_seed(5)
    gain = torch.randint(-20, 20, (index.numel,), generator=generator).float()  # many ties and negatives
    flat = torch.rand(index.numel, generator=generator) < 0.3
    mask = {n: t.clone() for n, t in index.unflatten(flat).items()}
    for count in (1, 17, index.numel):
        grown = index.flatten(add_best(index, mask, gain, count))
        ranked = sorted((i for i in range(index.numel) if not flat[i] and gain[i] > 0), key=lambda i: (-float(gain[i]), i))
        expected = flat.clone()
        expected[ranked[:count]] = True
        assert torch.equal(grown, expected), count


def test_greedy_graft_grows_by_rounds_to_the_target(localized_run: mr.Run) -> None:
    tuned = mr.open_run(localized_run.path).metrics()["qa_id"]["accuracy"]
    result = run_analysis("graft", localized_run.path, method="greedy", sparsity=1e-4, grow=0.002, target=0.5, max_sparsity=0.5,
                          steps=200, batch_size=64, with_shared=False)
    steps, sizes, accuracies = ([h[k] for h in result.history] for k in ("step", "size", "qa_id"))
    count = round(0.002 * result.parameters)
    assert steps == list(range(len(steps)))  # every round is scored
    assert all(0 < b - a <= count for a, b in zip(sizes, sizes[1:], strict=False))  # each round adds at most grow·N
    assert result.target_met is True and steps[-1] < 200
    assert accuracies[-1] >= 0.5 * tuned - 1e-9 and all(a < 0.5 * tuned for a in accuracies[:-1])
    assert result.size == sizes[-1] and result.best_step == steps[-1]


def test_graft_run_reports_accuracies_overlap_and_its_controls(localized_run: mr.Run) -> None:
    result = run_analysis("graft", localized_run.path, sparsity=0.05, target=None, steps=10, eval_every=5, batch_size=16, control_draws=3)
    run = mr.open_run(localized_run.path)
    index = ParameterIndex.from_spec(run.spec())
    assert result.size > 0 and result.fraction == result.size / result.parameters == result.size / index.numel
    assert set(result.accuracy) == {"grafted", "tuned", "base"} and result.target_met is None
    for metric in ("bio", "qa_id", "qa_ood"):
        assert result.accuracy["tuned"][metric] == pytest.approx(run.metrics()[metric]["accuracy"])
    graft = read_graft(run, index)
    shared = read_shared_mask(run, index)
    assert mask_size(graft) == result.size and result.shared_size == mask_size(shared)
    assert result.intersection == sum(int((graft[n] & shared[n]).sum()) for n in graft)
    assert result.chance_share == mask_size(shared) / index.numel
    # γ ∖ S, by hand: θ_pre where not (γ and not S)
    model = run.load_model()
    base, tuned = run.directory.load_tensors("base.safetensors"), run.directory.load_tensors("model.safetensors")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name not in graft:  # a frozen parameter (b_U of a model without one): never masked, θ_task = θ_pre
                continue
            keep = graft[name] & ~shared[name]
            parameter.copy_(base[name])
            parameter[keep] = tuned[name][keep]
    by_hand = mr.evaluate(model, model.tokenizer, run.world().dataset)
    assert result.without_shared == {m: by_hand[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}
    assert len(result.random_removed) == (3 if result.intersection else 0)
    # the control removes exactly |S ∩ γ| elements of γ
    removed = random_subset(graft, result.intersection, 0)
    assert mask_size(removed) == result.intersection and mask_size(difference(removed, graft)) == 0
    again = type(result).from_json(result.to_json())
    assert again == result


def test_graft_stops_growing_at_the_first_mask_that_recovers_the_target(localized_run: mr.Run) -> None:
    """With a target, the learning stops at the first scored mask whose QA-ID accuracy reaches the
    target share of θ_task's (every earlier one was below it), keeps that mask, and reports it met."""
    tuned = mr.open_run(localized_run.path).metrics()["qa_id"]["accuracy"]
    result = run_analysis("graft", localized_run.path, sparsity=1e-4, target=0.5, max_sparsity=0.5, steps=300, eval_every=2,
                          batch_size=16, lr=100.0, with_shared=False)
    accuracies = [h["qa_id"] for h in result.history]
    assert len(result.search) == 1 and result.search[0]["size"] == result.size and result.sparsity == 1e-4
    assert result.target_met is True and result.history[-1]["step"] < 300  # it stopped early (300 steps grow past the target here)
    assert accuracies[-1] >= 0.5 * tuned - 1e-9 and all(a < 0.5 * tuned for a in accuracies[:-1])
    assert result.best_step == result.history[-1]["step"] and result.size == result.history[-1]["size"]
    assert result.recovered_qa_id == pytest.approx(accuracies[-1] / tuned) and result.accuracy["grafted"]["qa_id"] == pytest.approx(accuracies[-1])
    for scored in result.history:  # the pooled QA-ID lies between its two parts, and the score is their sum
        assert scored["score"] == pytest.approx(scored["fit"] + scored["heldout"])
        assert min(scored["fit"], scored["heldout"]) - 1e-6 <= scored["qa_id"] <= max(scored["fit"], scored["heldout"]) + 1e-6
    assert any("the held-out QA-ID people" in line for line in describe(result))
    unbounded = run_analysis("graft", localized_run.path, sparsity=1e-4, target=None, max_sparsity=0.5, steps=40, eval_every=2,
                             batch_size=16, lr=100.0, with_shared=False)
    assert unbounded.history[-1]["step"] == 40 and unbounded.target_met is None  # no target: every step


def test_a_graft_never_keeps_a_mask_beyond_its_budget(localized_run: mr.Run) -> None:
    """A mask that outgrows max_sparsity ends the learning; the kept mask is the best within it."""
    result = run_analysis("graft", localized_run.path, sparsity=1e-4, target=1.0, max_sparsity=2e-4, steps=200, eval_every=1,
                          batch_size=16, lr=1000.0, with_shared=False)
    budget = round(2e-4 * result.parameters)
    assert result.size <= budget and result.fraction <= 2e-4
    sizes = [h["size"] for h in result.history]
    assert all(size <= budget for size in sizes[:-1]) and (sizes[-1] > budget or result.history[-1]["step"] == 200)
    if result.recovered_qa_id < 1.0:
        assert result.target_met is False


def test_shared_ablation_equals_element_by_element_resets(localized_run: mr.Run) -> None:
    result = run_analysis("ablate", localized_run.path, draws=2, seed=5)
    run = mr.open_run(localized_run.path)
    index = ParameterIndex.from_spec(run.spec())
    shared = read_shared_mask(run, index)
    assert result.size == mask_size(shared) > 0 and result.seeds == (5, 6) and len(result.random) == 2
    base, tuned = run.directory.load_tensors("base.safetensors"), run.directory.load_tensors("model.safetensors")
    model = run.load_model()
    world = run.world()

    def reset_by_hand(chosen) -> dict[str, float]:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name not in chosen:  # a frozen parameter: never in a mask
                    continue
                values = tuned[name].clone().reshape(-1)
                for flat in chosen[name].reshape(-1).nonzero().flatten().tolist():  # one element at a time
                    values[flat] = base[name].reshape(-1)[flat]
                parameter.copy_(values.reshape(parameter.shape))
        metrics = mr.evaluate(model, model.tokenizer, world.dataset)
        return {m: metrics[m]["accuracy"] for m in ("bio", "qa_id", "qa_ood")}

    assert result.shared == reset_by_hand(shared)
    control = random_like(shared, 6)
    assert all(int(control[n].sum()) == int(shared[n].sum()) for n in shared)  # S's count in every tensor
    assert result.random[1] == reset_by_hand(control)
    for metric in ("bio", "qa_id", "qa_ood"):
        if result.tuned[metric] > 0:
            assert result.relative_drop(metric) == pytest.approx((result.tuned[metric] - result.shared[metric]) / result.tuned[metric])
    # the precondition's reset: 1% of all elements, where S lies, the same seeds as the control
    assert result.parameters == index.numel and result.survival_size == round(0.01 * index.numel)
    survival = random_scaled(shared, result.survival_size, 6)
    assert mask_size(survival) == result.survival_size and set(n for n in shared if survival[n].any()) <= set(n for n in shared if shared[n].any())
    assert result.survival[1] == reset_by_hand(survival)
    drops = [(result.tuned["qa_ood"] - d["qa_ood"]) / result.tuned["qa_ood"] for d in result.survival] if result.tuned["qa_ood"] else []
    assert result.survival_relative_drops("qa_ood") == pytest.approx(drops)
    skipped = run_analysis("ablate", localized_run.path, draws=1, survival=0.0)
    assert skipped.survival == () and skipped.survival_size == 0 and skipped.survival_relative_drop("qa_ood") is None


def test_counts_like_shares_a_total_in_proportion_and_never_overfills_a_tensor() -> None:
    def mask(**counts_and_sizes: tuple[int, int]):
        return {n: torch.arange(size) < count for n, (count, size) in counts_and_sizes.items()}

    assert counts_like(mask(a=(10, 50), b=(30, 50)), 8) == {"a": 2, "b": 6}  # exact proportions
    assert counts_like(mask(a=(1, 50), b=(1, 50), c=(1, 50)), 2) == {"a": 1, "b": 1, "c": 0}  # ties: mask order
    assert counts_like(mask(a=(2, 50), b=(1, 50)), 10) == {"a": 7, "b": 3}  # 6.67 / 3.33: largest remainder
    # a holds 4 elements: 15 of 20 would overfill it; b takes the rest
    assert counts_like(mask(a=(3, 4), b=(1, 100)), 20) == {"a": 4, "b": 16}
    assert counts_like(mask(a=(0, 100), b=(5, 10)), 10) == {"a": 0, "b": 10}  # an empty tensor of the mask gets none
    with pytest.raises(ValueError, match="cannot place 11"):
        counts_like(mask(a=(0, 100), b=(5, 10)), 11)
    # against a slow reference: every total up to the room, the counts sum to it and follow the weights
    weights = mask(a=(7, 9), b=(2, 40), c=(1, 3), d=(0, 5))
    for total in range(0, 53):
        counts = counts_like(weights, total)
        assert sum(counts.values()) == total and all(counts[n] <= weights[n].numel() for n in counts) and counts["d"] == 0
        uncapped = {n: total * int(w.sum()) / 10 for n, w in weights.items()}
        assert all(counts[n] >= min(math.floor(uncapped[n]), weights[n].numel()) for n in counts)
    scaled = random_scaled(weights, 30, seed=3)
    assert {n: int(m.sum()) for n, m in scaled.items()} == counts_like(weights, 30)
    assert all(torch.equal(scaled[n], random_scaled(weights, 30, seed=3)[n]) for n in scaled)


def test_bad_grafting_and_ablation_requests(mixed_run: mr.Run, localized_run: mr.Run, tmp_path: Path) -> None:
    for sparsity in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="--sparsity must lie strictly between 0 and 1"):
            run_analysis("graft", localized_run.path, sparsity=sparsity)
    for lr in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ConfigError, match="--lr must be a positive number"):
            run_analysis("graft", localized_run.path, lr=lr)
    with pytest.raises(ConfigError, match="--draws must be at least 1"):
        run_analysis("ablate", localized_run.path, draws=0)
    bare = tmp_path / "bare"
    shutil.copytree(mixed_run.path, bare)
    with pytest.raises(ArtifactError, match=f"no shared_mask.safetensors: run `mechrecall shared {bare}` first"):
        run_analysis("ablate", bare)
    # a graft of another model: same files, other shapes
    other_world = tmp_path / "w"
    mr.save_world(mr.create_world(mr.WorldConfig(people=6, seed=2)), other_world)
    other = mr.train_run(other_world, tmp_path / "other", mr.ModelConfig("tiny"), mr.TrainConfig(steps=1, batch_size=2), device="cpu", progress=False)
    if "graft.safetensors" not in mr.open_run(localized_run.path).directory.manifest["files"]:
        run_analysis("graft", localized_run.path, sparsity=0.05, target=None, steps=2, eval_every=1, batch_size=16)
    shutil.copy(localized_run.path / "graft.safetensors", other.path / "graft.safetensors")
    other.directory.record("graft.safetensors")
    with pytest.raises(ArtifactError, match="mask of another model"):
        read_graft(other, ParameterIndex.from_spec(other.spec()))


def test_mask_learning_finds_elements_the_base_mask_missed(mixed_run: mr.Run, weights) -> None:
    """θ_pre = θ_task with strong noise on 2% of the elements: the top-0.5% base mask undoes only
    part of it, and the learned graft must add elements that restore accuracy."""
    from mechrecall.masks import random_global

    index, _, tuned = weights
    damaged = random_global(index, round(0.02 * index.numel), seed=0)
    generator = torch.Generator().manual_seed(1)
    pre = {n: torch.where(damaged[n], t + 3 * t.std() * torch.randn(t.shape, generator=generator), t) if n in damaged else t
           for n, t in tuned.items()}  # frozen parameters (no b_U here) are in no mask
    model = mixed_run.load_model()
    fit, heldout = graft_examples(mixed_run.world(), model.tokenizer, 0.25, 0)
    result = learn_graft(model, index, pre, tuned, fit, heldout, GraftConfig(sparsity=0.005, steps=30, eval_every=5, batch_size=32))
    start = result.history[0]
    assert result.score > start["score"] and result.best_step > 0
    assert result.size > start["size"]  # it grew the mask, by far less than the damage
    assert result.size < round(0.02 * index.numel)


def test_graft_parts_rescores_the_kept_mask_on_the_fit_and_held_out_people(localized_run: mr.Run, tmp_path: Path, capsys) -> None:
    """analyses/graft_parts.py: re-scoring graft.safetensors on the graft's own split gives the fit and
    held-out accuracies the graft logged for its kept mask, and their pooled share is the graft's
    recovered QA-ID; the ceiling puts the fit people at θ_task's accuracy. Bad input: exit 2, one line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("graft_parts", Path(__file__).parents[1] / "analyses" / "graft_parts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    copy = tmp_path / "run"
    shutil.copytree(localized_run.path, copy)
    result = run_analysis("graft", copy, sparsity=1e-4, target=0.5, max_sparsity=0.5, steps=300, eval_every=2,
                          batch_size=16, lr=100.0, heldout_fraction=0.25, with_shared=False)
    kept = next(h for h in result.history if h["step"] == result.best_step)
    measured = module.measure(copy, 0.25, 0)
    assert measured["graft"] == (pytest.approx(kept["fit"]), pytest.approx(kept["heldout"]))
    assert measured["recovered"] == pytest.approx(result.recovered_qa_id)
    n_fit, n_held = measured["examples"]
    tuned_fit, tuned_held = measured["tuned"]
    pooled_tuned = (tuned_fit * n_fit + tuned_held * n_held) / (n_fit + n_held)
    assert measured["ceiling"] == pytest.approx((tuned_fit * n_fit + kept["heldout"] * n_held) / (n_fit + n_held) / pooled_tuned)
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for argv in ([str(tmp_path / "missing")], [f"{copy}@2"], [f"{copy}@x"], [str(localized_run.path.parent)],
                 [f"{copy}@0.25", "--markdown", str(blocker / "table.md")], [f"{copy}@0.25", "--markdown", str(blocker)],
                 [f"{copy}@0.25", "--markdown", str(copy / "report.md")], [f"{copy}@0.5"]):
        with pytest.raises(SystemExit) as stop:
            module.main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert blocker.read_text() == "mine"  # the file in the way is left as it was
    module.main([f"{copy}@0.25", "--markdown", str(tmp_path / "out" / "table.md")])
    written = (tmp_path / "out" / "table.md").read_text()
    assert written == capsys.readouterr().out and written.count("\n") == 3 and "\\|γ\\|₀" in written
    assert not (copy / "report.md").exists()
    history = [h for h in result.history if h["size"] <= round(0.05 * result.parameters)]
    tail = history[-max(2, len(history) // 4):]
    slope = (tail[-1]["qa_id"] - tail[0]["qa_id"]) / pooled_tuned / ((tail[-1]["size"] - tail[0]["size"]) / result.parameters)
    assert measured["slope"] == pytest.approx(slope)
