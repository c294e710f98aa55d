"""Rendering people into BIO texts, QA pairs and BIO-completion prompts: a ``DatasetDict``.

Splits (every row keeps ``person_id``; the per-fact ones keep ``attribute``):

- ``people``: one row per person, every attribute and the QA split ("id" / "ood");
- ``bio``: ``bio_per_person`` BIO texts of every person (all of them are trained on);
- ``bio_eval``: for every person and attribute, the first BIO up to the value, and the value;
- ``qa_id``: QA of the people whose QA is trained on;
- ``qa_ood``: QA of the other people, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import random

from datasets import Dataset, DatasetDict

from mechrecall.config import WorldConfig
from mechrecall.data.pools import PRONOUNS
from mechrecall.data.templates import (
    ANSWER_CUE,
    ATTRIBUTES,
    BIO_TEMPLATES,
    QA_TEMPLATES,
)
from mechrecall.data.world import Person, sample_world

SPLITS = ("people", "bio", "bio_eval", "qa_id", "qa_ood")


def render_bio(
    person: Person, template_choice: dict[str, int], order: list[str], fullname: bool
) -> tuple[str, dict[str, int]]:
    """One BIO text and the character offset of each attribute's value in it."""
    pronoun, possessive = PRONOUNS[person.gender]
    text = ""
    value_starts: dict[str, int] = {}
    for position, attribute in enumerate(order):
        named = position == 0 or fullname
        fields = {
            "S": person.full_name if named else pronoun,
            "P": f"{person.full_name}'s" if named else possessive,
            "P_lower": possessive.lower(),
        }
        template = BIO_TEMPLATES[attribute][template_choice[attribute]]
        before_value, after_value = template.split("{V}")
        prefix = before_value.format(**fields)
        if text:
            text += " "
        value_starts[attribute] = len(text) + len(prefix)
        text += prefix + person.attribute(attribute) + after_value
    return text, value_starts


def qa_prompt(person: Person, attribute: str) -> str:
    return f"{QA_TEMPLATES[attribute].format(N=person.full_name)} {ANSWER_CUE}"


def render_world(people: list[Person], config: WorldConfig) -> DatasetDict:
    """Render the splits; template choices and sentence orders come from ``config.seed``."""
    rng = random.Random(f"render-{config.seed}")
    bio_rows: list[dict[str, object]] = []
    bio_eval_rows: list[dict[str, object]] = []
    qa_rows: dict[str, list[dict[str, object]]] = {"id": [], "ood": []}
    for person in people:
        # fresh templates for each BIO of a person: a shuffled cycle through each attribute's templates
        template_cycles = {a: rng.sample(range(len(BIO_TEMPLATES[a])), len(BIO_TEMPLATES[a])) for a in ATTRIBUTES}
        for bio_index in range(config.bio_per_person):
            choice = {a: cycle[bio_index % len(cycle)] for a, cycle in template_cycles.items()}
            order = list(ATTRIBUTES)
            if config.permute:
                rng.shuffle(order)
            text, value_starts = render_bio(person, choice, order, config.fullname)
            bio_rows.append({"person_id": person.person_id, "bio_index": bio_index, "text": text})
            if bio_index == 0:
                for attribute in ATTRIBUTES:
                    bio_eval_rows.append(
                        {
                            "person_id": person.person_id,
                            "attribute": attribute,
                            "prompt": text[: value_starts[attribute]].rstrip(),
                            "answer": person.attribute(attribute),
                        }
                    )
        for attribute in ATTRIBUTES:
            qa_rows[person.split].append(
                {
                    "person_id": person.person_id,
                    "attribute": attribute,
                    "prompt": qa_prompt(person, attribute),
                    "answer": person.attribute(attribute),
                }
            )
    return DatasetDict(
        {
            "people": Dataset.from_list([p.to_row() for p in people]),
            "bio": Dataset.from_list(bio_rows),
            "bio_eval": Dataset.from_list(bio_eval_rows),
            "qa_id": Dataset.from_list(qa_rows["id"]),
            "qa_ood": Dataset.from_list(qa_rows["ood"]),
        }
    )


def build_world(config: WorldConfig) -> DatasetDict:
    """Sample and render a world: the same config gives the same dataset, bit for bit."""
    return render_world(sample_world(config), config)


def dataset_fingerprint(dataset: DatasetDict) -> str:
    """A fingerprint of the content of every split (column names and values), the same for a
    dataset built in memory and for the one saved and loaded again."""
    digest = hashlib.sha256()
    for name in sorted(dataset):
        digest.update(json.dumps({name: dataset[name].to_dict()}, sort_keys=True).encode())
    return digest.hexdigest()[:16]
