from __future__ import annotations

import re

import pytest

import mechrecall as mr
from mechrecall.config import WorldConfig
from mechrecall.data import pools
from mechrecall.data.render import build_world, dataset_fingerprint
from mechrecall.data.templates import ATTRIBUTES, BIO_TEMPLATES, QA_TEMPLATES
from mechrecall.data.tokenizer import build_world_tokenizer
from mechrecall.data.world import sample_world
from mechrecall.errors import ConfigError


def test_same_seed_same_fingerprint_other_seed_other_world() -> None:
    first = build_world(WorldConfig(people=50, seed=7))
    again = build_world(WorldConfig(people=50, seed=7))
    other = build_world(WorldConfig(people=50, seed=8))
    assert dataset_fingerprint(first) == dataset_fingerprint(again)
    assert first["bio"]["text"] == again["bio"]["text"]
    assert dataset_fingerprint(first) != dataset_fingerprint(other)
    assert first["people"]["full_name"] != other["people"]["full_name"]


def test_people_have_unique_names_six_attributes_and_employer_city_fixed_by_employer() -> None:
    people = sample_world(WorldConfig(people=2000, seed=1))
    assert len({p.full_name for p in people}) == 2000
    assert [p.person_id for p in people] == list(range(2000))
    for person in people:
        assert person.employer_city == pools.EMPLOYERS[person.employer]
        assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", person.birth_date)
        first_names = pools.FIRST_NAMES_MALE if person.gender == "male" else pools.FIRST_NAMES_FEMALE
        assert person.first_name in first_names


def test_splits_partition_people_and_qa_rows() -> None:
    world = build_world(WorldConfig(people=101, seed=2, qa_id_fraction=0.5))
    people = world["people"]
    id_people = {p for p, s in zip(people["person_id"], people["split"]) if s == "id"}
    ood_people = set(people["person_id"]) - id_people
    assert len(id_people) == 50 and len(ood_people) == 51
    assert set(world["qa_id"]["person_id"]) == id_people
    assert set(world["qa_ood"]["person_id"]) == ood_people
    assert len(world["qa_id"]) == 6 * 50 and len(world["qa_ood"]) == 6 * 51
    assert set(world["bio"]["person_id"]) == set(range(101))
    assert len(world["bio_eval"]) == 6 * 101
    for row in world["qa_ood"]:
        assert row["attribute"] in ATTRIBUTES and row["prompt"].endswith("Answer:")


def test_bio_names_the_person_first_then_uses_a_pronoun() -> None:
    world = build_world(WorldConfig(people=30, seed=4))
    people = world["people"]
    for row in world["bio"]:
        name = people[row["person_id"]]["full_name"]
        sentences = row["text"].split(". ")
        assert sentences[0].startswith(name) and row["text"].count(name) == 1
        pronoun = "He" if people[row["person_id"]]["gender"] == "male" else "She"
        assert any(s.startswith((pronoun, "His", "Her")) for s in sentences[1:])


def test_fullname_option_names_the_person_in_every_sentence() -> None:
    world = build_world(WorldConfig(people=10, seed=4, fullname=True))
    for row in world["bio"]:
        name = world["people"][row["person_id"]]["full_name"]
        assert row["text"].count(name) == len(ATTRIBUTES)


def test_permute_shuffles_sentence_order_and_bio_per_person_draws_fresh_templates() -> None:
    fixed = build_world(WorldConfig(people=20, seed=5))
    shuffled = build_world(WorldConfig(people=20, seed=5, permute=True))

    def orders(world) -> list[list[str]]:  # attribute order of each person's first BIO
        by_person: dict[int, list[tuple[int, str]]] = {}
        for row in world["bio_eval"]:
            by_person.setdefault(row["person_id"], []).append((len(row["prompt"]), row["attribute"]))
        return [[a for _, a in sorted(v)] for v in by_person.values()]

    assert all(order == list(ATTRIBUTES) for order in orders(fixed))
    assert sum(order != list(ATTRIBUTES) for order in orders(shuffled)) >= 15
    many = build_world(WorldConfig(people=5, seed=5, bio_per_person=4))
    assert len(many["bio"]) == 20
    for pid in range(5):
        texts = [r["text"] for r in many["bio"] if r["person_id"] == pid]
        assert len(set(texts)) == 4
        # fresh templates: no sentence repeats across one person's BIOs
        sentences = [s for t in texts for s in t.split(". ")[1:]]
        assert len(sentences) == len(set(sentences))


def test_bio_eval_prompt_is_the_first_bio_up_to_the_value() -> None:
    world = build_world(WorldConfig(people=15, seed=6, permute=True))
    first_bio = {r["person_id"]: r["text"] for r in world["bio"] if r["bio_index"] == 0}
    for row in world["bio_eval"]:
        assert first_bio[row["person_id"]].startswith(row["prompt"] + " " + row["answer"])
        assert row["answer"] == world["people"][row["person_id"]][row["attribute"]]


def test_templates_cover_each_attribute_at_least_five_ways() -> None:
    assert set(BIO_TEMPLATES) == set(ATTRIBUTES) == set(QA_TEMPLATES)
    assert all(len(set(t)) >= 5 for t in BIO_TEMPLATES.values())


def test_world_tokenizer_knows_every_word_of_every_world() -> None:
    tokenizer = build_world_tokenizer()
    world = build_world(WorldConfig(people=300, seed=9, permute=True, bio_per_person=3))
    texts = list(world["bio"]["text"]) + list(world["qa_id"]["prompt"]) + list(world["qa_ood"]["answer"])
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        assert tokenizer.unk_token_id not in ids
    # every name part and single-word value is one token
    assert len(tokenizer("Montague", add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("bad", [dict(people=1), dict(people=0), dict(qa_id_fraction=1.0), dict(bio_per_person=0)])
def test_bad_world_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        WorldConfig(**bad).validate()


def test_saved_world_round_trips(world_dir) -> None:
    loaded = mr.load_world(world_dir)
    assert loaded.fingerprint == mr.create_world(mr.WorldConfig(people=24, seed=3)).fingerprint
    assert len(loaded.tokenizer) == len(build_world_tokenizer())


def test_populations_a_and_b_share_no_person() -> None:
    a = sample_world(WorldConfig(people=3000, seed=1, population="a"))
    b = sample_world(WorldConfig(people=3000, seed=1, population="b"))
    assert not {p.last_name for p in a} & {p.last_name for p in b}
    with pytest.raises(ConfigError, match="unknown population"):
        WorldConfig(population="c").validate()
    with pytest.raises(ConfigError, match="too many for unique names"):
        sample_world(WorldConfig(people=10**6, population="a"))


def test_the_person_split_keeps_people_apart_and_shares_every_name_token() -> None:
    """population_split="person": a and b share no full name, yet every last name, middle name and
    first name of one occurs in the other (the base knows every token of a studied name); a name's
    population is the parity of its three pool indices, checked against a table built here."""
    a = sample_world(WorldConfig(people=3000, seed=1, population="a", population_split="person"))
    b = sample_world(WorldConfig(people=3000, seed=2, population="b", population_split="person"))
    names = {"a": {(p.first_name, p.middle_name, p.last_name) for p in a}, "b": {(p.first_name, p.middle_name, p.last_name) for p in b}}
    assert len(names["a"]) == len(names["b"]) == 3000 and not names["a"] & names["b"]
    for position in range(3):
        assert {n[position] for n in names["a"]} == {n[position] for n in names["b"]}
    assert {n[2] for n in names["a"]} == set(pools.LAST_NAMES)
    index = {name: i for group in (pools.FIRST_NAMES_MALE, pools.FIRST_NAMES_FEMALE) for i, name in enumerate(group)}
    middle = {name: i for i, name in enumerate(pools.MIDDLE_NAMES)}
    last = {name: i for i, name in enumerate(pools.LAST_NAMES)}
    for population, wanted in (("a", 0), ("b", 1)):
        assert all((index[f] + middle[m] + last[surname]) % 2 == wanted for f, m, surname in names[population])
    with pytest.raises(ConfigError, match="unknown population-split"):
        WorldConfig(population_split="first-name").validate()


def test_the_default_split_is_keyed_as_before_the_setting_existed() -> None:
    """A world at the default split ("last-name") draws the people it always drew and is keyed (world
    manifests, cache keys) without the new field, so studies cached before it stay valid; the
    person split is keyed."""
    from mechrecall.config import key_dict

    default = WorldConfig(people=200, seed=3, population="a")
    assert "population_split" not in key_dict(default)
    assert key_dict(WorldConfig(population_split="person"))["population_split"] == "person"
    drawn = sample_world(default)
    assert all(p.last_name in pools.LAST_NAMES[0::2] for p in drawn)
    assert [p.full_name for p in drawn] == [p.full_name for p in sample_world(WorldConfig(people=200, seed=3, population="a", population_split="last-name"))]
