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


def in_population(name: tuple[str, str, str], population: str, split: str) -> bool:
    """Whether a full name (first, middle, last) may belong to ``population`` under ``split``: any
    name of the population's last-name pool ("last-name"), or a name whose three pool indices
    sum to an even ("a") or odd ("b") number ("person")."""
    if population == "all":
        return True
    if split == "last-name":
        return name[2] in last_names(population)
    firsts = pools.FIRST_NAMES_MALE if name[0] in pools.FIRST_NAMES_MALE else pools.FIRST_NAMES_FEMALE
    parity = (firsts.index(name[0]) + pools.MIDDLE_NAMES.index(name[1]) + pools.LAST_NAMES.index(name[2])) % 2
    return parity == (0 if population == "a" else 1)


def max_unique_names(population: str = "all", split: str = "last-name") -> int:
    firsts = len(pools.FIRST_NAMES_MALE) + len(pools.FIRST_NAMES_FEMALE)
    if population != "all" and split == "person":  # the triples of the wanted index parity, counted
        def parities(pool: list[str]) -> tuple[int, int]:
            return (len(pool) + 1) // 2, len(pool) // 2  # (even, odd) indices

        wanted = 0 if population == "a" else 1
        total = 0
        for group in (pools.FIRST_NAMES_MALE, pools.FIRST_NAMES_FEMALE):
            counts = [parities(group), parities(pools.MIDDLE_NAMES), parities(pools.LAST_NAMES)]
            total += sum(counts[0][a] * counts[1][b] * counts[2][c] for a in (0, 1) for b in (0, 1) for c in (0, 1) if (a + b + c) % 2 == wanted)
        return total
    return firsts * len(pools.MIDDLE_NAMES) * len(last_names(population))


def sample_world(config: WorldConfig) -> list[Person]:
    """Draw ``config.people`` people with unique full names and six attributes each.

    Person ``i`` has ``person_id == i``. The QA-ID / QA-OOD assignment is a seeded shuffle:
    the first ``round(qa_id_fraction * people)`` of it (at least one, at most people - 1) are ID.
    """
    config.validate()
    split = config.population_split
    limit = max_unique_names(config.population, split) // 4
    if config.people > limit:
        raise ConfigError(f"{config.people:,} people is too many for unique names: at most {limit:,}")
    rng = random.Random(config.seed)
    # "person": every last name, a drawn name outside the population drawn again
    surnames = last_names(config.population if split == "last-name" else "all")
    seen_names: set[tuple[str, str, str]] = set()
    drafts: list[dict[str, str]] = []
    employers = sorted(pools.EMPLOYERS)
    while len(drafts) < config.people:
        gender = rng.choice(pools.GENDERS)
        firsts = pools.FIRST_NAMES_MALE if gender == "male" else pools.FIRST_NAMES_FEMALE
        name = (rng.choice(firsts), rng.choice(pools.MIDDLE_NAMES), rng.choice(surnames))
        if name in seen_names or (split == "person" and not in_population(name, config.population, split)):
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
