"""analyses/bio_key.py: what a run reads a stored fact off (the name, or the facts before it)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mechrecall as mr
from mechrecall.data.templates import ATTRIBUTES

SCRIPT = Path(__file__).parents[1] / "analyses" / "bio_key.py"


def load():
    spec = importlib.util.spec_from_file_location("bio_key", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("permute,fullname", [(False, False), (True, True), (True, False)])
def test_the_layout_recovered_from_each_bio_renders_it_exactly(permute: bool, fullname: bool) -> None:
    bio_key = load()
    world = mr.create_world(mr.WorldConfig(people=30, seed=5, bio_per_person=3, permute=permute, fullname=fullname))
    people = {p.person_id: p for p in bio_key.people_of(world.dataset)}
    orders = set()
    for row in world.dataset["bio"]:
        order, _ = bio_key.recover_layout(people[row["person_id"]], row["text"], fullname)
        orders.add(tuple(order))
    assert (len(orders) > 1) == permute  # a permuted world's orders differ; an unpermuted one's never do


def test_the_probe_prompts_swap_exactly_what_they_say(world_dir: Path) -> None:
    bio_key = load()
    world = mr.load_world(world_dir)
    records = bio_key.probe_prompts(world.dataset, world.config.fullname, seed=1)
    people = {p.person_id: p for p in bio_key.people_of(world.dataset)}
    bio_eval = {(row["person_id"], row["attribute"]): row["prompt"] for row in world.dataset["bio_eval"]}
    assert records and {r["position"] for r in records} == set(range(6))
    assert not world.config.permute  # so every BIO states the facts in the order of ATTRIBUTES
    for record in records:
        a, b = people[record["person"]], people[record["other"]]
        assert a.gender == b.gender and a.split == b.split and a.person_id != b.person_id and record["a_value"] != record["b_value"]
        assert record["intact"] == bio_eval[(a.person_id, record["attribute"])]  # the run's own BIO prompt
        assert record["name_swapped"] == record["intact"].replace(a.full_name, b.full_name) and b.full_name in record["name_swapped"]
        if record["position"] == 0:
            assert record["facts_swapped"] is None
        else:  # the reference: walk the intact prompt and put B's value over each earlier value of A's, in turn
            expected, cursor = record["intact"], 0
            for attribute in ATTRIBUTES[: record["position"]]:
                found = re.compile(rf"(?<!\S){re.escape(a.attribute(attribute))}(?![\w])").search(expected, cursor)
                assert found is not None
                expected = expected[: found.start()] + b.attribute(attribute) + expected[found.end():]
                cursor = found.start() + len(b.attribute(attribute))
            assert record["facts_swapped"] == expected and a.full_name in expected


def test_the_shares_agree_with_greedy_decoding_one_prompt_at_a_time(mixed_run: mr.Run) -> None:
    from mechrecall.encoding import encode_pairs
    from mechrecall.evaluation import greedy_answer

    bio_key = load()
    model, world, tokenizer = mixed_run.load_model(), mixed_run.world(), mixed_run.tokenizer()
    records = bio_key.probe_prompts(world.dataset, world.config.fullname, seed=0, limit=8)
    hits = bio_key.measure(model, tokenizer, records)
    for variant in ("intact", "name_swapped", "facts_swapped"):
        for i, record in enumerate(records):
            if record[variant] is None:
                assert not hits[f"{variant}/a"][i] and not hits[f"{variant}/b"][i]
                continue
            for whose in ("a", "b"):
                answer = encode_pairs(tokenizer, [record[variant]], [record[f"{whose}_value"]])
                target = answer.ids[0][answer.target_start[0]:]
                assert hits[f"{variant}/{whose}"][i] == (greedy_answer(model, tokenizer, record[variant], len(target)) == target)
            assert not (hits[f"{variant}/a"][i] and hits[f"{variant}/b"][i])
    rows = bio_key.summarize(records, hits, world.dataset, world.config.permute)
    assert sum(row["n"] for row in rows) == len(records)
    for row in rows:
        members = [i for i, r in enumerate(records) if (r["split"], r["position"]) == (row["split"], row["position"])]
        assert row["intact"] == sum(hits["intact/a"][i] for i in members) / len(members)
        assert 0.0 < row["chance_b"] < 1.0
        assert row["name_swapped_a"] + row["name_swapped_b"] <= 1.0


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, fragment in (([str(tmp_path)], "not a run folder"), ([str(tmp_path), "--people", "0"], "--people 0")):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr


def test_a_fact_the_world_fixes_by_another_is_marked() -> None:
    bio_key = load()
    world = mr.create_world(mr.WorldConfig(people=600, seed=2))
    assert bio_key.function_of(world.dataset, "employer_city") == ["employer"]  # the employer fixes its city
    assert bio_key.function_of(world.dataset, "birth_city") == []


def test_a_bio_no_template_renders_is_refused_by_name() -> None:
    bio_key = load()
    world = mr.create_world(mr.WorldConfig(people=4, seed=1))
    person = bio_key.people_of(world.dataset)[0]
    text = next(row["text"] for row in world.dataset["bio"] if row["person_id"] == person.person_id)
    with pytest.raises(ValueError, match=f"person {person.person_id}: no template continues the BIO"):
        bio_key.recover_layout(person, text.replace(person.birth_city, "Atlantis"), fullname=False)
