"""The gradient trace against slow, obviously-correct references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN
from transformers import LlamaConfig, LlamaForCausalLM

import mechrecall as mr
from mechrecall import models
from mechrecall.analysis import execute
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.encoding import collate, pad_id, per_example_loss
from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.findings import shared as shared_analysis
from mechrecall.findings import trace as trace_analysis
from mechrecall.findings.shared import SharedConfig, shuffle_within_tensors
from mechrecall.findings.trace import PosthocTraceConfig, read_trace
from mechrecall.influence import (
    InfluenceAccumulator,
    TraceConfig,
    choose_individuals,
    log_grid,
    max_ranks,
    posthoc_influence,
    shared_counts,
    shared_curve,
    traced_examples,
)
from mechrecall.params import ParameterIndex
from mechrecall.training import (
    ExampleStream,
    TrainingTracer,
    learning_rate,
    plan_phases,
    train,
)


def trace_run(path, config: PosthocTraceConfig) -> None:
    execute(trace_analysis.ANALYSIS, path, config, device="cpu")


def shared_run(path, **options):
    return execute(shared_analysis.ANALYSIS, path, SharedConfig(**options), device="cpu")


def reference_shared_sizes(bio: list[float], qa: list[float], ks: list[int]) -> list[int]:
    """Top-k of each task (descending, ties to the lower index) and their intersection, per k."""
    by_bio = sorted(range(len(bio)), key=lambda i: (-bio[i], i))
    by_qa = sorted(range(len(qa)), key=lambda i: (-qa[i], i))
    return [len(set(by_bio[:k]) & set(by_qa[:k])) for k in ks]


@pytest.mark.parametrize("seed", range(4))
def test_one_sort_curve_equals_per_k_intersection_on_random_traces(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n = 3000
    bio = torch.rand(n, generator=generator)
    qa = 0.5 * bio + torch.rand(n, generator=generator)  # correlated, like real traces
    if seed % 2:  # many ties: exercise the tie-break by flat index
        bio, qa = torch.round(bio * 20), torch.round(qa * 20)
    ks = list(range(1, n + 1, 7)) + [n]
    expected = reference_shared_sizes(bio.tolist(), qa.tolist(), ks)
    assert shared_counts(max_ranks(bio, qa), ks) == expected
    assert shared_counts(max_ranks(bio.clone(), qa.clone(), consume=True), ks) == expected


def test_max_ranks_break_ties_by_index_and_leave_inputs_alone() -> None:
    bio, qa = torch.tensor([0.1, 0.9, 0.5, 0.5]), torch.tensor([0.4, 0.3, 0.2, 0.1])
    kept = bio.clone()
    assert max_ranks(bio, qa).tolist() == [3, 1, 2, 3]  # bio ranks 3,0,1,2; qa ranks 0,1,2,3
    assert torch.equal(bio, kept)
    assert max_ranks(bio.clone(), qa.clone(), consume=True).tolist() == [3, 1, 2, 3]
    assert max_ranks(torch.zeros(5), torch.zeros(5)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="non-negative"):
        max_ranks(torch.tensor([1.0, -0.0]), torch.ones(2))


def test_log_grid_spans_ten_to_n() -> None:
    grid = log_grid(10**7)
    assert grid[0] == 10 and grid[-1] == 10**7 and len(grid) == 40 and grid == sorted(set(grid))


@pytest.fixture(scope="module")
def traced_run(mixed_run: mr.Run, tmp_path_factory: pytest.TempPathFactory) -> mr.Run:
    path = tmp_path_factory.mktemp("traced") / "run"
    shutil.copytree(mixed_run.path, path)
    trace_run(path, PosthocTraceConfig(individuals=6, seed=1))
    return mr.open_run(path)


def test_posthoc_influence_is_the_sum_of_per_example_gradient_magnitudes(traced_run: mr.Run) -> None:
    model = traced_run.load_model()
    world = traced_run.world()
    people = choose_individuals(world, "qa_id", 6, 1)
    examples = traced_examples(world, model.tokenizer, people, "qa_id")
    assert len(examples["bio"]) == 6 and len(examples["qa"]) == 36
    trace = read_trace(traced_run, "posthoc")
    assert trace.metadata["people"] == people and trace.metadata["examples"] == {"bio": 6, "qa": 36}
    # reference: plain backward per example, summing |grad| by hand
    expected = {task: {n: torch.zeros_like(p) for n, p in model.named_parameters()} for task in ("bio", "qa")}
    for task in ("bio", "qa"):
        for i in range(len(examples[task])):
            model.zero_grad()
            tokens, mask = collate(examples[task].select([i]), pad_id(model.tokenizer))
            per_example_loss(model(tokens), tokens, mask).sum().backward()
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:  # frozen ones (micro's absent b_U) are not traced
                    expected[task][name] += parameter.grad.abs()
    index = trace.index
    for task, flat in (("bio", trace.bio), ("qa", trace.qa)):
        assert torch.allclose(flat, index.flatten(expected[task]), rtol=1e-5, atol=1e-8)


def test_delta_and_theta_measures_weigh_the_gradient_magnitude(traced_run: mr.Run) -> None:
    model = traced_run.load_model()
    world = traced_run.world()
    examples = traced_examples(world, model.tokenizer, choose_individuals(world, "qa_id", 3, 0), "qa_id")
    base = traced_run.directory.load_tensors("base.safetensors")
    plain = posthoc_influence(model, examples, "grad", pad_id(model.tokenizer)).totals
    delta = posthoc_influence(model, examples, "grad-delta", pad_id(model.tokenizer), base).totals
    theta = posthoc_influence(model, examples, "grad-theta", pad_id(model.tokenizer)).totals
    assert set(plain["qa"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name in plain["qa"]:
        parameter = dict(model.named_parameters())[name]
        moved = (parameter.detach() - base[name]).abs()
        assert torch.allclose(delta["qa"][name], plain["qa"][name] * moved, rtol=1e-4, atol=1e-9)
        assert torch.allclose(theta["bio"][name], plain["bio"][name] * parameter.detach().abs(), rtol=1e-4, atol=1e-9)


def test_curve_on_a_real_trace_matches_the_reference(traced_run: mr.Run) -> None:
    trace = read_trace(traced_run, "posthoc")
    ks = [10, 100, 1000, 5000, 20000, trace.bio.numel()]
    curve, _ = shared_curve(trace.bio, trace.qa, ks)
    assert curve.shared == reference_shared_sizes(trace.bio.tolist(), trace.qa.tolist(), ks)
    assert curve.shared[-1] == trace.bio.numel()


def test_shared_mask_and_counts_per_head(traced_run: mr.Run) -> None:
    result = shared_run(traced_run.path, trace="posthoc", fraction=0.005)
    mask_file = traced_run.directory.load_tensors("shared_mask.safetensors")
    trace = read_trace(traced_run, "posthoc")
    index = trace.index
    mask = index.flatten({n: t.bool() for n, t in mask_file.items()})
    assert result.k == round(0.005 * index.numel)
    assert int(mask.sum()) == result.size == reference_shared_sizes(trace.bio.tolist(), trace.qa.tolist(), [result.k])[0]
    # brute force: address every selected element one by one
    counts: dict[tuple[int, int, str], int] = {}
    for flat in torch.nonzero(mask).flatten().tolist():
        unit = index.unit_of(flat)
        if unit is not None and unit[2] != "mlp":
            counts[unit] = counts.get(unit, 0) + 1
    for component, table in result.by_head.items():
        for layer, row in enumerate(table):
            for head, value in enumerate(row):
                assert value == counts.get((layer, head, component), 0)


def test_shuffled_null_keeps_each_tensor_and_its_curve_is_the_reference(traced_run: mr.Run) -> None:
    trace = read_trace(traced_run, "posthoc")
    index = trace.index
    shuffled = shuffle_within_tensors(trace.qa, index, seed=4)
    for slot in index.slots:  # the same values within every tensor, in another order
        a, b = trace.qa[slot.offset : slot.offset + slot.numel], shuffled[slot.offset : slot.offset + slot.numel]
        assert torch.equal(torch.sort(a).values, torch.sort(b).values)
    assert not torch.equal(shuffled, trace.qa)
    result = shared_run(traced_run.path, trace="posthoc", fraction=0.01, null_draws=2, seed=3)
    assert len(result.null_shared) == 2
    for draw, counts in enumerate(result.null_shared):
        null = shuffle_within_tensors(trace.qa, index, seed=3 * 1_000 + draw)
        assert list(counts) == reference_shared_sizes(trace.bio.tolist(), null.tolist(), list(result.ks))
    # the k/N baseline is not the null: a per-tensor shuffle keeps more overlap than independent random sets
    k = result.ks[len(result.ks) // 2]
    assert result.null_at(k) >= k / result.n


def test_parameter_addressing_with_grouped_query_attention(tmp_path: Path) -> None:
    tokenizer = build_world_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = models.load_checkpoint(str(tmp_path))
    index = ParameterIndex.of(model)
    assert index.n_kv_heads == 2 and index.group_size == 2
    assert index.numel == models.count_parameters(model)
    assert index.unit_of(index.flat_index("blocks.1.attn._W_K", (1, 5, 3))) == (1, 1, "k")
    assert index.unit_of(index.flat_index("blocks.0.attn.W_Q", (3, 0, 0))) == (0, 3, "q")
    assert index.unit_of(index.flat_index("blocks.0.attn.W_O", (2, 7, 31))) == (0, 2, "o")
    assert index.unit_of(index.flat_index("blocks.1.mlp.W_in", (4, 40))) == (1, 40, "mlp")
    assert index.unit_of(index.flat_index("blocks.1.mlp.W_out", (40, 4))) == (1, 40, "mlp")
    assert index.unit_of(index.flat_index("embed.W_E", (3, 3))) is None
    for flat in torch.randint(0, index.numel, (200,)).tolist():
        name, position = index.locate(flat)
        assert index.flat_index(name, position) == flat
    everything = torch.ones(index.numel, dtype=torch.bool)
    by_head = index.count_by_head(everything)
    per_head = 32 * 8 * 1  # d_model x d_head elements per head and component (no biases: frozen)
    assert by_head["k"].shape == (2, 2) and by_head["k"].unique().tolist() == [per_head]
    assert index.head_totals(by_head).unique().tolist() == [2 * per_head + 2 * per_head / 2]
    assert ParameterIndex.from_spec(models.model_spec(model, "checkpoint", "x")) == index


def reference_training_trace(model, examples, config: mr.TrainConfig, pad: int, traced: dict[str, set[int]] | None, weights: list[dict]) -> dict:
    """The study's trace by hand: for every step, the traced examples of its batch (re-drawn from the
    same seeded streams), each one's own backward pass at that step's weights, times that step's
    learning rate, summed per task with its sign."""
    phases = plan_phases(config)
    streams = {pool: ExampleStream(len(examples[pool]), config.seed, pool) for pool in ("bio", "qa")}
    consumed = {"bio": 0, "qa": 0}
    totals = {task: {n: torch.zeros_like(p) for n, p in model.named_parameters()} for task in ("bio", "qa")}
    step = 0
    for phase in phases:
        for step_in_phase in range(phase.steps):
            lr = learning_rate(config, step_in_phase, phase.steps, phase.lr)
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    parameter.copy_(weights[step][name])  # the weights this step's gradient was taken at
            for pool, count in phase.per_batch.items():
                if count == 0:
                    continue
                indices = streams[pool].take(consumed[pool], count)
                consumed[pool] += count
                for i in indices:
                    if traced is not None and i not in traced[pool]:
                        continue
                    model.zero_grad()
                    tokens, mask = collate(examples[pool].select([i]), pad)
                    per_example_loss(model(tokens), tokens, mask).sum().backward()
                    for name, parameter in model.named_parameters():
                        if parameter.requires_grad:  # frozen ones (micro's absent b_U) are not traced
                            totals[pool][name] += lr * parameter.grad
            step += 1
    return totals


@pytest.mark.parametrize(("strategy", "every_example"), [("mixed", False), ("two-stage", False), ("mixed", True)])
def test_training_trace_is_the_learning_rate_weighted_sum_of_per_example_gradients(strategy: str, every_example: bool, world_dir: Path) -> None:
    world = mr.load_world(world_dir)
    tokenizer = world.tokenizer
    qa = world.dataset["qa_id"]
    from mechrecall.encoding import encode_pairs, encode_texts

    examples = {  # as training encodes them
        "bio": encode_texts(tokenizer, list(world.dataset["bio"]["text"])), "qa": encode_pairs(tokenizer, list(qa["prompt"]), list(qa["answer"]))}
    config = mr.TrainConfig(strategy=strategy, steps=12, bio_steps=6, qa_steps=6, batch_size=8, warmup_steps=3, lr=3e-3, weight_decay=0.0)
    people = set(choose_individuals(world, "qa_id", 5, 0))
    traced = None if every_example else {
        "bio": {i for i, p in enumerate(world.dataset["bio"]["person_id"]) if p in people},
        "qa": {i for i, p in enumerate(qa["person_id"]) if p in people},
    }
    model = models.build_model("micro", tokenizer, seed=2)
    weights = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    tracer = TrainingTracer(InfluenceAccumulator(model, "lr-grad"), traced)
    train(model, examples, config, pad_id(tokenizer), progress=False, tracer=tracer,
          on_step=lambda state: weights.append({n: p.detach().clone() for n, p in model.named_parameters()}))
    expected = reference_training_trace(model, examples, config, pad_id(tokenizer), traced, weights)
    assert tracer.accumulator.examples["bio"] > 0 and tracer.accumulator.examples["qa"] > 0
    for task in ("bio", "qa"):
        for name, total in tracer.accumulator.totals[task].items():
            assert torch.allclose(total, expected[task][name], rtol=1e-3, atol=1e-6), (task, name)
    assert any((t < 0).any() for t in tracer.accumulator.totals["qa"].values())  # signed, not magnitudes


def test_training_trace_leaves_the_trajectory_and_resumes_exactly(world_dir: Path, tmp_path: Path) -> None:
    config = mr.TrainConfig(strategy="mixed", steps=30, **{**FAST_TRAIN, "checkpoint_every": 8})
    plain = mr.train_run(world_dir, tmp_path / "plain", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    trace = TraceConfig(individuals=5)
    traced = mr.train_run(world_dir, tmp_path / "traced", mr.ModelConfig("micro"), config, device="cpu", progress=False, trace=trace)
    a, b = plain.directory.load_tensors("model.safetensors"), traced.directory.load_tensors("model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)

    class Stop(Exception):
        pass

    def stop(state) -> None:
        if state.step == 19:
            raise Stop

    with pytest.raises(Stop):
        mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False, trace=trace, on_step=stop)
    resumed = mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False, trace=trace)
    whole, again = read_trace(traced, "training"), read_trace(resumed, "training")
    assert torch.equal(whole.bio, again.bio) and torch.equal(whole.qa, again.qa)
    assert whole.metadata["examples"]["bio"] > 0 and whole.metadata["examples"]["qa"] > 0
    assert whole.metadata["measure"] == "lr-grad" and (whole.bio >= 0).all()  # ranked by magnitude
    assert whole.bio.sum() > 0 and whole.qa.sum() > 0


def test_a_stale_shared_set_is_refused_with_the_command_to_rerun(traced_run: mr.Run, tmp_path: Path) -> None:
    path = tmp_path / "run"
    shutil.copytree(traced_run.path, path)
    shared_run(path, trace="posthoc", fraction=0.01)
    trace_run(path, PosthocTraceConfig(individuals=4, seed=7))  # other people: S is now stale
    run = mr.open_run(path)
    with pytest.raises(ArtifactError, match=f"stale: trace.safetensors changed.*mechrecall shared {path}"):
        run.directory.read_json("shared.json")
    with pytest.raises(ArtifactError, match="stale"):
        run.directory.load_tensors("shared_mask.safetensors")
    shared_run(path, trace="posthoc", fraction=0.01)  # rerun as told: readable again
    run.directory.read_json("shared.json")


def test_bad_trace_requests(traced_run: mr.Run, world_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than the 12 people"):
        trace_run(traced_run.path, PosthocTraceConfig(individuals=13))
    with pytest.raises(ConfigError, match="--fraction must lie in"):
        shared_run(traced_run.path, trace="posthoc", fraction=0.0)
    with pytest.raises(ConfigError, match="choose one of training, posthoc"):
        shared_run(traced_run.path, trace="later")
    with pytest.raises(ConfigError, match="use the qa_id split"):
        mr.train_run(world_dir, tmp_path / "x", mr.ModelConfig("micro"), mr.TrainConfig(), trace=TraceConfig(split="qa_ood"))
    with pytest.raises(ConfigError, match="training influence measure 'grad'"):
        mr.train_run(world_dir, tmp_path / "x", mr.ModelConfig("micro"), mr.TrainConfig(), trace=TraceConfig(measure="grad"))
    # a run without a trace, and a trace made for other weights
    other = mr.train_run(
        world_dir, tmp_path / "other", mr.ModelConfig("micro", seed=9), mr.TrainConfig(steps=3, batch_size=4), device="cpu", progress=False
    )
    with pytest.raises(ArtifactError, match=f"no trace.safetensors: run `mechrecall trace {other.path}` first"):
        shared_run(other.path, trace="posthoc")
    with pytest.raises(ArtifactError, match="no trace_training.safetensors: train the run with the study's trace"):
        shared_run(other.path)
    shutil.copy(traced_run.path / "trace.safetensors", other.path / "trace.safetensors")
    other.directory.record("trace.safetensors")
    with pytest.raises(ArtifactError, match="made for other weights"):
        shared_run(other.path, trace="posthoc")
