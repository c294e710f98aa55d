"""Strategies, the loop's arithmetic, and resume after an interruption (even kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN
from safetensors.torch import load_file

import mechrecall as mr
from mechrecall.config import TrainConfig
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.encoding import (
    Encoded,
    collate,
    encode_pairs,
    encode_texts,
    per_example_loss,
)
from mechrecall.training import ExampleStream, learning_rate, plan_phases


def test_loss_is_on_every_bio_token_and_on_answer_tokens_only() -> None:
    tokenizer = build_world_tokenizer()
    bio = encode_texts(tokenizer, ["Alice Lee Abbott was born in Boston ."])
    qa = encode_pairs(tokenizer, ["Where does Alice Lee Abbott work ? Answer:"], ["New York"])
    assert bio.target_start == [1]
    assert len(qa.ids[0]) - qa.target_start[0] == 2  # "New", "York"
    assert tokenizer.decode(qa.ids[0][qa.target_start[0]:]) == "New York"
    tokens, mask = collate(Encoded(bio.ids + qa.ids, bio.target_start + qa.target_start), pad=0)
    assert mask[0].sum() == len(bio.ids[0]) - 1 and mask[1].sum() == 2
    assert not mask[1, len(qa.ids[0]):].any()  # padding is never a target
    logits = torch.randn(2, tokens.shape[1], len(tokenizer))
    loss = per_example_loss(logits, tokens, mask)
    log_probs = torch.log_softmax(logits, -1)
    start = qa.target_start[0]
    manual_qa = -(log_probs[1, start - 1, tokens[1, start]] + log_probs[1, start, tokens[1, start + 1]]) / 2
    assert torch.allclose(loss[1], manual_qa)


def test_strategies_plan_their_phases() -> None:
    mixed = plan_phases(TrainConfig(strategy="mixed", steps=100, batch_size=64, qa_share=0.25))
    assert [(p.name, p.steps, p.per_batch) for p in mixed] == [("mixed", 100, {"bio": 48, "qa": 16})]
    two = plan_phases(TrainConfig(strategy="two-stage", bio_steps=30, qa_steps=20, batch_size=8, bio_loss=0.5))
    assert [(p.name, p.steps, p.per_batch, p.bio_loss_target) for p in two] == [
        ("bio", 30, {"bio": 8, "qa": 0}, 0.5), ("qa", 20, {"bio": 0, "qa": 8}, None)
    ]


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(config, step, 110) for step in range(111)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[110] == pytest.approx(0.1)


def test_example_stream_visits_every_example_once_per_epoch() -> None:
    stream = ExampleStream(size=13, seed=2, pool="bio")
    first, second = stream.take(0, 13), stream.take(13, 13)
    assert sorted(first) == sorted(second) == list(range(13)) and first != second
    assert stream.take(5, 10) == (first + second)[5:15]


def _tensors(run_path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_path / "model.safetensors"))


class Interrupt(Exception):
    pass


def crash_at(step: int):
    """An ``on_step`` callback that stops training by raising once it reaches ``step``."""

    def crash(state) -> None:
        if state.step == step:
            raise Interrupt

    return crash


@pytest.mark.parametrize("strategy", ["mixed", "two-stage"])
def test_interrupted_run_resumes_to_the_same_weights(strategy: str, world_dir: Path, tmp_path: Path) -> None:
    config = mr.TrainConfig(strategy=strategy, steps=40, bio_steps=20, qa_steps=20, **{**FAST_TRAIN, "checkpoint_every": 7})
    whole = mr.train_run(world_dir, tmp_path / "whole", mr.ModelConfig("micro"), config, device="cpu", progress=False)

    with pytest.raises(Interrupt):
        mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False, on_step=crash_at(24))
    assert (tmp_path / "cut" / "checkpoint.safetensors").exists() and not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    expected, actual = _tensors(whole.path), _tensors(resumed.path)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed.metrics() == whole.metrics()
    assert not (tmp_path / "cut" / "checkpoint.safetensors").exists()
    if strategy == "two-stage":
        assert resumed.directory.manifest["training"]["phase_ends"] == [20, 40]


def test_a_run_resumed_with_another_thread_count_ends_as_the_uninterrupted_one(world_dir: Path, tmp_path: Path) -> None:
    """A reduction split over another number of threads rounds differently, so a run begun with 2
    threads and resumed with 1 (a study restarted with other --jobs) drifted from the uninterrupted
    run while its manifest named only the second count (found on the tiny preset: mixed seed 0's
    QA-OOD 26.1% uninterrupted, 28.2% resumed). The resumed run finishes with the threads it began
    with and records them."""
    config = mr.TrainConfig(strategy="mixed", steps=40, **{**FAST_TRAIN, "checkpoint_every": 7})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = mr.train_run(world_dir, tmp_path / "whole", mr.ModelConfig("micro"), config, device="cpu", progress=False)

        with pytest.raises(Interrupt):
            mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False, on_step=crash_at(24))
        torch.set_num_threads(1)
        resumed = mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False)
        assert torch.get_num_threads() == 1  # the caller's setting is back
        torch.set_num_threads(1)
        alone = mr.train_run(world_dir, tmp_path / "one", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    expected, actual, other = _tensors(whole.path), _tensors(resumed.path), _tensors(alone.path)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed.directory.manifest["training"]["threads"] == 2
    # the test can fail: one thread throughout is a different trajectory in its last bits
    assert not all(torch.equal(expected[k], other[k]) for k in expected)


def test_a_checkpoint_never_runs_code(world_dir: Path, tmp_path: Path) -> None:
    """A run folder received from someone else: a pickle with a payload is never unpickled (old
    checkpoint.pt files are not read at all), and one under the checkpoint's name is refused."""
    config = mr.TrainConfig(strategy="mixed", steps=20, **{**FAST_TRAIN, "checkpoint_every": 5})

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    crash = crash_at(10)

    with pytest.raises(Interrupt):
        mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False, on_step=crash)
    torch.save({"x": Payload()}, tmp_path / "cut" / "checkpoint.pt")
    resumed = mr.train_run(world_dir, tmp_path / "cut", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    assert resumed.is_trained and not (tmp_path / "pwned").exists()
    with pytest.raises(Interrupt):
        mr.train_run(world_dir, tmp_path / "cut2", mr.ModelConfig("micro"), config, device="cpu", progress=False, on_step=crash)
    torch.save({"x": Payload()}, tmp_path / "cut2" / "checkpoint.safetensors")
    with pytest.raises(mr.MechrecallError, match="is not a readable training checkpoint"):
        mr.train_run(world_dir, tmp_path / "cut2", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    assert not (tmp_path / "pwned").exists()


def test_kill_9_then_the_same_command_resumes(world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "mechrecall_cli.app", "train", str(world_dir), "--out", str(out), "--model", "micro",
        "--steps", "400", "--batch-size", "16", "--warmup-steps", "10", "--lr", "3e-3", "--checkpoint-every", "20",
        "--no-progress", "--device", "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "model.safetensors").exists()
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    reference = subprocess.run([*command[:6], str(tmp_path / "reference"), *command[7:]], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    expected, actual = _tensors(tmp_path / "reference"), _tensors(out)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_training_memorizes_and_records_its_run(mixed_run: mr.Run) -> None:
    log = mixed_run.directory.read_json("train_log.json")
    assert log[0]["loss_bio"] > 2 * log[-1]["loss_bio"] and log[0]["loss_qa"] > 2 * log[-1]["loss_qa"]
    metrics = mixed_run.metrics()
    assert metrics["qa_id"]["accuracy"] >= 0.3
    manifest = mixed_run.directory.manifest
    assert manifest["status"] == "complete" and manifest["kind"] == "run"
    assert manifest["config"]["train"]["strategy"] == "mixed" and manifest["seeds"]["train"] == 0
    assert manifest["versions"]["transformer-lens"].startswith("3.")
    for name in ("base.safetensors", "model.safetensors", "metrics.json", "model.json", "data/tokenizer.json"):
        assert name in manifest["files"]
    base, tuned = mixed_run.load_model("base"), mixed_run.load_model("tuned")
    assert not torch.equal(base.W_E, tuned.W_E)


def test_finished_run_with_the_same_config_is_not_trained_again(mixed_run: mr.Run, world_dir: Path) -> None:
    before = mixed_run.directory.manifest["files"]["model.safetensors"]
    from mechrecall.influence import TraceConfig

    config = mr.TrainConfig(**mixed_run.directory.config["train"])
    trace = TraceConfig(**mixed_run.directory.config["trace_during_training"])
    again = mr.train_run(world_dir, mixed_run.path, mr.ModelConfig("micro"), config, device="cpu", progress=False, trace=trace)
    assert again.directory.manifest["files"]["model.safetensors"] == before


def test_a_finished_run_is_a_base_for_another_world(mixed_run: mr.Run, tmp_path: Path) -> None:
    other = tmp_path / "other-world"
    mr.save_world(mr.create_world(mr.WorldConfig(people=10, seed=11)), other)
    run = mr.train_run(other, tmp_path / "tuned", mr.ModelConfig(str(mixed_run.path)), mr.TrainConfig(steps=4, batch_size=4), device="cpu", progress=False)
    base = run.directory.load_tensors("base.safetensors")
    assert all(torch.equal(base[k], v) for k, v in mixed_run.directory.load_tensors("model.safetensors").items())
    assert run.spec()["source"] == "run"


def test_decay_toward_the_base_is_adamw_decay_around_theta_pre(world_dir: Path) -> None:
    """One step by hand: AdamW without decay, then θ − lr·λ·(θ − θ_pre) on the matrices only."""
    from mechrecall import models
    from mechrecall.encoding import pad_id
    from mechrecall.training import train

    world = mr.load_world(world_dir)
    examples = {"bio": encode_texts(world.tokenizer, list(world.dataset["bio"]["text"])),
                "qa": encode_pairs(world.tokenizer, list(world.dataset["qa_id"]["prompt"]), list(world.dataset["qa_id"]["answer"]))}
    base = models.build_model("micro", world.tokenizer, seed=1)
    start = {n: p.detach().clone() for n, p in base.named_parameters()}
    config = TrainConfig(steps=1, batch_size=8, warmup_steps=0, lr=1e-2, weight_decay=0.5, decay_to="base", grad_clip=1e9)
    train(base, examples, config, pad_id(world.tokenizer), progress=False)
    plain = models.build_model("micro", world.tokenizer, seed=1)
    train(plain, examples, TrainConfig(**{**config.__dict__, "weight_decay": 0.0, "decay_to": "zero"}), pad_id(world.tokenizer), progress=False)
    for (name, decayed), (_, undecayed) in zip(base.named_parameters(), plain.named_parameters(), strict=True):
        if decayed.ndim >= 2:  # lr at step 0 of a 1-step cosine schedule is the peak lr
            expected = undecayed - 1e-2 * 0.5 * (undecayed - start[name])
            assert torch.allclose(decayed, expected, atol=1e-6), name
        else:
            assert torch.allclose(decayed, undecayed, atol=1e-7), name
    with pytest.raises(mr.MechrecallError, match="decay-to must be zero or base"):
        TrainConfig(decay_to="one").validate()


def test_l1_toward_the_base_soft_thresholds_each_change_from_theta_pre(world_dir: Path) -> None:
    """One step by hand: AdamW, then θ_pre + sign(Δ)·max(|Δ| − lr·λ₁, 0) on every trainable tensor;
    a large λ₁ leaves exact zeros in θ − θ_pre, none without it."""
    from mechrecall import models
    from mechrecall.encoding import pad_id
    from mechrecall.training import train

    world = mr.load_world(world_dir)
    examples = {"bio": encode_texts(world.tokenizer, list(world.dataset["bio"]["text"])),
                "qa": encode_pairs(world.tokenizer, list(world.dataset["qa_id"]["prompt"]), list(world.dataset["qa_id"]["answer"]))}
    config = TrainConfig(steps=1, batch_size=8, warmup_steps=0, lr=1e-2, weight_decay=0.1, grad_clip=1e9)
    start = {n: p.detach().clone() for n, p in models.build_model("micro", world.tokenizer, seed=1).named_parameters()}
    plain = models.build_model("micro", world.tokenizer, seed=1)
    train(plain, examples, config, pad_id(world.tokenizer), progress=False)
    sparse = models.build_model("micro", world.tokenizer, seed=1)
    train(sparse, examples, TrainConfig(**{**config.__dict__, "l1_to_base": 0.7}), pad_id(world.tokenizer), progress=False)
    zeros = plain_zeros = 0
    for (name, after), (_, before_threshold) in zip(sparse.named_parameters(), plain.named_parameters(), strict=True):
        if not after.requires_grad:
            continue
        change = before_threshold - start[name]
        # the slow reference: element by element
        expected = torch.tensor([s + (1 if c > 0 else -1) * max(abs(c) - 1e-2 * 0.7, 0.0) if c != 0 else s
                                 for s, c in zip(start[name].flatten().tolist(), change.flatten().tolist(), strict=True)])
        assert torch.allclose(after.flatten(), expected, atol=1e-6), name
        zeros += int((after == start[name]).sum())
        plain_zeros += int((change == 0).sum())
    assert zeros > 10 * max(plain_zeros, 1)  # Adam's first step is ±lr on most elements: λ₁ = 0.7 zeroes the small ones
    with pytest.raises(mr.MechrecallError, match="l1-to-base must be a non-negative number"):
        TrainConfig(l1_to_base=-1.0).validate()


def _train_command(world_dir: Path, out: Path, steps: int = 400) -> list[str]:
    return [
        sys.executable, "-c", "from mechrecall_cli.app import main; main()", "train", str(world_dir), "--out", str(out),
        "--model", "micro", "--steps", str(steps), "--batch-size", "16", "--warmup-steps", "10", "--lr", "3e-3",
        "--checkpoint-every", "20", "--no-progress", "--device", "cpu",
    ]


def _started(process: subprocess.Popen, out: Path) -> None:
    deadline = time.time() + 120
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "training finished before the test could act"


def test_a_second_writer_of_the_same_output_refuses_and_ctrl_c_leaves_a_resumable_run(world_dir: Path, tmp_path: Path) -> None:
    from mechrecall.artifacts import output_lock

    out = tmp_path / "run"
    # the lock is held here while the second writer starts: a writer still running when the
    # second one has imported torch (seconds under load) could not be counted on (it flaked)
    with output_lock(out):
        second = subprocess.run(_train_command(world_dir, out), capture_output=True, text=True)
    assert second.returncode == 2 and "another mechrecall process is writing" in second.stderr and "Traceback" not in second.stderr
    assert not out.exists()
    first = subprocess.Popen(_train_command(world_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _started(first, out)
    first.send_signal(signal.SIGINT)  # at once: the run is at its first checkpoint, far from its end
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "run the same command again to resume" in stderr and "Traceback" not in stderr
    assert (out / "checkpoint.safetensors").exists() and not (out / "model.safetensors").exists()
    finished = subprocess.run(_train_command(world_dir, out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    reference = subprocess.run(_train_command(world_dir, tmp_path / "reference"), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    expected, actual = _tensors(tmp_path / "reference"), _tensors(out)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)  # interrupted and resumed = uninterrupted


def test_a_run_without_its_bar_prints_one_line_per_evaluation(world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A background run (a sweep's ``--no-progress``) still shows where it is: each evaluation
    along training is one line on stderr with the step and the accuracies the manifest records;
    with progress off (what ``reproduce``'s workers use: the study shows their progress) nothing."""
    config = TrainConfig(strategy="two-stage", bio_steps=6, qa_steps=4, batch_size=4, warmup_steps=1, eval_every=4)
    mr.train_run(world_dir, tmp_path / "quiet", mr.ModelConfig("micro"), config, device="cpu", progress=False)
    assert "train two-stage:" not in capsys.readouterr().err
    run = mr.train_run(world_dir, tmp_path / "run", mr.ModelConfig("micro"), config, device="cpu", progress="lines")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train two-stage:")]
    evals = run.directory.manifest["training"]["evals"]
    assert [e["step"] for e in evals] == [4, 6, 8, 10]
    assert len(lines) == len(evals)
    for line, e in zip(lines, evals, strict=True):
        assert line.startswith(f"train two-stage: step {e['step']:,}/10 ({e['phase']}), BIO {100 * e['bio']:.1f}%, "
                               f"QA-ID {100 * e['qa_id']:.1f}%, QA-OOD {100 * e['qa_ood']:.1f}%, ")
