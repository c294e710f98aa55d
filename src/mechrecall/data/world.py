"""Sampling the people of a world: pure and seeded (``random.Random(seed)``, nothing global)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from mechrecall.config import WorldConfig
from mechrecall.data import pools
from mechrecall.data.templates import ATTRIBUTES
from mechrecall.errors import ConfigError


@dataclass(frozen=True)
class Person:
    person_id: int
    first_name: str
    middle_name: str
    last_name: str
    gender: str
    birth_date: str
    birth_city: str
    university: str
    major: str
    employer: str
    employer_city: str
    split: str  # "id": QA trained on; "ood": QA held out

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.middle_name} {self.last_name}"

    def attribute(self, name: str) -> str:
        if name not in ATTRIBUTES:
            raise KeyError(f"unknown attribute {name!r}")
        return str(getattr(self, name))

    def to_row(self) -> dict[str, object]:
        return {**asdict(self), "full_name": self.full_name}


def last_names(population: str) -> list[str]:
    """The last-name pool of a population: all, or the even ("a") or odd ("b") half."""
    if population == "all":
        return list(pools.LAST_NAMES)
    return pools.LAST_NAMES[0 if population == "a" else 1 :: 2]


def max_unique_names(population: str = "all") -> int:
    firsts = len(pools.FIRST_NAMES_MALE) + len(pools.FIRST_NAMES_FEMALE)
    return firsts * len(pools.MIDDLE_NAMES) * len(last_names(population))


def sample_world(config: WorldConfig) -> list[Person]:
    """Draw ``config.people`` people with unique full names and six attributes each.

    Person ``i`` has ``person_id == i``. The QA-ID / QA-OOD assignment is a seeded shuffle:
    the first ``round(qa_id_fraction * people)`` of it (at least one, at most people - 1) are ID.
    """
    config.validate()
    if config.people > max_unique_names(config.population) // 4:
        raise ConfigError(f"{config.people:,} people is too many for unique names: at most {max_unique_names(config.population) // 4:,}")
    rng = random.Random(config.seed)
    surnames = last_names(config.population)
    seen_names: set[tuple[str, str, str]] = set()
    drafts: list[dict[str, str]] = []
    employers = sorted(pools.EMPLOYERS)
    while len(drafts) < config.people:
        gender = rng.choice(pools.GENDERS)
        firsts = pools.FIRST_NAMES_MALE if gender == "male" else pools.FIRST_NAMES_FEMALE
        name = (rng.choice(firsts), rng.choice(pools.MIDDLE_NAMES), rng.choice(surnames))
        if name in seen_names:
            continue
        seen_names.add(name)
        employer = rng.choice(employers)
        drafts.append(
            {
                "first_name": name[0],
                "middle_name": name[1],
                "last_name": name[2],
                "gender": gender,
                "birth_date": f"{rng.choice(pools.MONTHS)} {rng.choice(pools.DAYS)}, {rng.choice(pools.YEARS)}",
                "birth_city": rng.choice(pools.CITIES),
                "university": rng.choice(pools.UNIVERSITIES),
                "major": rng.choice(pools.MAJORS),
                "employer": employer,
                "employer_city": pools.EMPLOYERS[employer],
            }
        )
    order = list(range(config.people))
    rng.shuffle(order)
    n_id = min(max(round(config.qa_id_fraction * config.people), 1), config.people - 1)
    id_people = set(order[:n_id])
    return [
        Person(person_id=i, split="id" if i in id_people else "ood", **draft) for i, draft in enumerate(drafts)
    ]
