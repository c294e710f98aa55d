"""Batched exact match equals one-at-a-time greedy generation."""

from __future__ import annotations

import mechrecall as mr
from mechrecall.encoding import encode_pairs, pad_id
from mechrecall.evaluation import exact_match, greedy_answer


def test_batched_exact_match_agrees_with_greedy_generation(mixed_run: mr.Run) -> None:
    model = mixed_run.load_model()
    tokenizer = model.tokenizer
    world = mixed_run.world()
    rows = list(world.dataset["qa_id"]) + list(world.dataset["qa_ood"])[:40] + list(world.dataset["bio_eval"])[:60]
    encoded = encode_pairs(tokenizer, [r["prompt"] for r in rows], [r["answer"] for r in rows])
    batched = exact_match(model, encoded, pad_id(tokenizer), batch_size=7).tolist()
    one_by_one = []
    for row, ids, start in zip(rows, encoded.ids, encoded.target_start):
        answer = ids[start:]
        one_by_one.append(greedy_answer(model, tokenizer, row["prompt"], len(answer)) == answer)
    assert batched == one_by_one
    assert 0 < sum(batched) < len(batched)  # the comparison covers hits and misses


def test_metrics_cover_every_split_and_attribute(mixed_run: mr.Run) -> None:
    metrics = mixed_run.metrics()
    assert set(metrics) == {"bio", "qa_id", "qa_ood"}
    assert metrics["qa_id"]["n"] == len(mixed_run.world().dataset["qa_id"])
    for values in metrics.values():
        assert set(values["by_attribute"]) == set(mr.ATTRIBUTES)
        mean = sum(values["by_attribute"].values()) / 6  # every attribute has the same count
        assert abs(mean - values["accuracy"]) < 1e-9


def test_evaluating_again_gives_the_same_numbers(mixed_run: mr.Run) -> None:
    assert mr.evaluate_run(mixed_run.path, device="cpu") == mixed_run.metrics()
    base = mr.evaluate_run(mixed_run.path, which="base", device="cpu")
    assert base["qa_id"]["accuracy"] < mixed_run.metrics()["qa_id"]["accuracy"]
