"""What a run reads a stored fact off: the person's name, or the facts its BIO stated before it.

    python analyses/bio_key.py runs/sweep/single-qs03/mixed-s0 runs/sweep/single-qs03/two-stage-s0

Allen-Zhu & Li's account of single-BIO worlds: a fact is stored after the facts stated before it
rather than on the name, so it can be completed inside its BIO but not asked for. The study's v2
says the same of two-stage training ("relies on the full context") against mixed training
(facts encoded from subject and relation). This script measures it on a trained run. For every
person A, another person B of the same gender (so that the pronouns agree) and QA split (a
"B's value" share measures how B's facts are stored, so B must be of the split it is read for;
seeded), and every fact of A's first BIO, three BIO-completion prompts (the BIO up to the value, as ``bio_eval``):

- intact: A's BIO (its exact match is the run's BIO accuracy of that fact);
- name swapped: A's BIO with B's full name: does the model complete A's value (it reads the fact
  off the context) or B's (it reads it off the name)?
- earlier facts swapped: A's BIO with B's values of every fact stated before this one, A's name
  kept: A's value (the name) or B's (the earlier facts)? Not defined for the fact stated first.

Pairs where A and B share the value asked for are left out (neither answer tells). A fact that
is a function of another one in the world (the employer fixes its city) is marked: read off that
other fact, it is right by the world's construction, not by a stored link. Beside each
"B's value" share, its chance: how often a value drawn from the attribute's distribution over the
world's people equals B's. Grouped by the QA split (id: QA trained, ood: held out) and by the
fact's position in the BIO. Greedy exact match of the whole value, as everywhere in mechrecall.
Reads only the run folder; prints a markdown table per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def people_of(dataset) -> list:
    """The world's people as ``Person`` objects, from its ``people`` split."""
    from mechrecall.data.world import Person

    fields = [f.name for f in dataclasses.fields(Person)]
    return [Person(**{name: row[name] for name in fields}) for row in dataset["people"]]


def recover_layout(person, text: str, fullname: bool) -> tuple[list[str], dict[str, int]]:
    """The sentence order and template choices a BIO of ``person`` was rendered with: found by
    rendering sentence after sentence until the text is matched, then checked by rendering it whole."""
    from mechrecall.data.render import render_bio
    from mechrecall.data.templates import ATTRIBUTES, BIO_TEMPLATES

    order: list[str] = []
    choice: dict[str, int] = {}
    while len(order) < len(ATTRIBUTES):
        for attribute in (a for a in ATTRIBUTES if a not in order):
            found = next((t for t in range(len(BIO_TEMPLATES[attribute]))
                          if _continues(text, render_bio(person, {**choice, attribute: t}, [*order, attribute], fullname)[0])), None)
            if found is not None:
                order.append(attribute)
                choice[attribute] = found
                break
        else:
            raise ValueError(f"person {person.person_id}: no template continues the BIO after {order}")
    if render_bio(person, choice, order, fullname)[0] != text:
        raise ValueError(f"person {person.person_id}: the recovered layout does not render the BIO")
    return order, choice


def _continues(text: str, rendered: str) -> bool:
    return text.startswith(rendered) and (len(text) == len(rendered) or text[len(rendered)] == " ")


def probe_prompts(dataset, fullname: bool, seed: int = 0, limit: int | None = None) -> list[dict]:
    """One record per (person A, fact): the three prompts, A's and B's values, the split, the
    fact's position in A's first BIO. Pure: depends on the world and ``seed`` only."""
    from mechrecall.data.render import render_bio

    people = people_of(dataset)
    first_bio = {row["person_id"]: row["text"] for row in dataset["bio"] if row["bio_index"] == 0}
    # B of A's QA split too: a column of B's value measures B's storage, so it must be the split's
    by_kind: dict[tuple[str, str], list] = defaultdict(list)
    for person in people:
        by_kind[(person.gender, person.split)].append(person)
    rng = random.Random(f"bio-key-{seed}")
    chosen = sorted(rng.sample(range(len(people)), limit)) if limit is not None and limit < len(people) else range(len(people))
    records = []
    for index in chosen:
        a = people[index]
        others = [p for p in by_kind[(a.gender, a.split)] if p.person_id != a.person_id]
        if not others:
            continue
        b = rng.choice(others)
        order, choice = recover_layout(a, first_bio[a.person_id], fullname)
        renamed = dataclasses.replace(a, first_name=b.first_name, middle_name=b.middle_name, last_name=b.last_name)
        for position, attribute in enumerate(order):
            if a.attribute(attribute) == b.attribute(attribute):
                continue
            text, starts = render_bio(a, choice, order, fullname)
            name_text, name_starts = render_bio(renamed, choice, order, fullname)
            record = {
                "person": a.person_id, "other": b.person_id, "split": a.split, "attribute": attribute, "position": position,
                "a_value": a.attribute(attribute), "b_value": b.attribute(attribute),
                "intact": text[: starts[attribute]].rstrip(), "name_swapped": name_text[: name_starts[attribute]].rstrip(),
                "facts_swapped": None,
            }
            if position > 0:
                mixed_in = dataclasses.replace(a, **{earlier: b.attribute(earlier) for earlier in order[:position]})
                facts_text, facts_starts = render_bio(mixed_in, choice, order, fullname)
                record["facts_swapped"] = facts_text[: facts_starts[attribute]].rstrip()
            records.append(record)
    return records


def measure(model, tokenizer, records: list[dict]) -> dict[str, list[bool]]:
    """Greedy exact match of A's and of B's value after each prompt."""
    from mechrecall.encoding import encode_pairs, pad_id
    from mechrecall.evaluation import exact_match

    pad = pad_id(tokenizer)
    out: dict[str, list[bool]] = {}
    for variant in ("intact", "name_swapped", "facts_swapped"):
        kept = [r for r in records if r[variant] is not None]
        for whose in ("a", "b"):
            hits = exact_match(model, encode_pairs(tokenizer, [r[variant] for r in kept], [r[f"{whose}_value"] for r in kept]), pad)
            values = iter(hits.tolist())
            out[f"{variant}/{whose}"] = [next(values) if r[variant] is not None else False for r in records]
    return out


def summarize(records: list[dict], hits: dict[str, list[bool]], dataset, permuted: bool) -> list[dict]:
    """Shares per (split, position): A's value intact; B's and A's after each swap; chance of B's."""
    frequency = {attribute: Counter(row[attribute] for row in dataset["people"]) for attribute in {r["attribute"] for r in records}}
    people = len(dataset["people"])
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[(record["split"], record["position"])].append(i)
    rows = []
    for (split, position), members in sorted(groups.items()):
        def share(key: str, among: list[int]) -> float | None:
            return sum(hits[key][i] for i in among) / len(among) if among else None

        with_facts = [i for i in members if records[i]["facts_swapped"] is not None]
        attributes = sorted({records[i]["attribute"] for i in members})
        fixed_by = function_of(dataset, attributes[0]) if len(attributes) == 1 else []
        rows.append({
            "split": split, "position": position, "n": len(members),
            "attribute": attributes[0] if not permuted and len(attributes) == 1 else "mixed",
            "intact": share("intact/a", members),
            "name_swapped_b": share("name_swapped/b", members), "name_swapped_a": share("name_swapped/a", members),
            "facts_swapped_a": share("facts_swapped/a", with_facts), "facts_swapped_b": share("facts_swapped/b", with_facts),
            "fixed_by": fixed_by,
            "chance_b": sum(frequency[records[i]["attribute"]][records[i]["b_value"]] / people for i in members) / len(members),
        })
    return rows


def function_of(dataset, attribute: str) -> list[str]:
    """The other attributes whose value fixes ``attribute``'s in every person of the world, where
    that is tested: at least half of the people share their value of the other attribute with
    someone (a value nearly everyone has alone, as a birth date, fixes everything trivially)."""
    from mechrecall.data.templates import ATTRIBUTES

    people = dataset["people"]
    fixed = []
    for other in (a for a in ATTRIBUTES if a != attribute):
        keys = Counter(people[other])
        seen: dict[str, str] = {}
        consistent = all(seen.setdefault(key, value) == value for key, value in zip(people[other], people[attribute], strict=True))
        if consistent and 2 * sum(n for n in keys.values() if n > 1) >= len(people[other]):
            fixed.append(other)
    return fixed


def lines(path: Path, rows: list[dict]) -> list[str]:
    def pct(value: float | None) -> str:
        return "·" if value is None else f"{100 * value:.1f}"

    def fixed(row: dict) -> str:
        return f" (a function of {', '.join(row['fixed_by'])})" if row.get("fixed_by") else ""

    out = [f"### {path}", "",
           "| QA split | position in BIO | fact | pairs | intact: A's value | name swapped: B's (the name) | name swapped: A's (the context) "
           "| earlier facts swapped: A's (the name) | earlier facts swapped: B's (the facts) | chance of B's value |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        out.append(f"| {row['split']} | {row['position'] + 1} | {row['attribute']}{fixed(row)} | {row['n']:,} | {pct(row['intact'])} | {pct(row['name_swapped_b'])} "
                   f"| {pct(row['name_swapped_a'])} | {pct(row['facts_swapped_a'])} | {pct(row['facts_swapped_b'])} | {pct(row['chance_b'])} |")
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders (e.g. runs/sweep/single-qs03/mixed-s0)")
    parser.add_argument("--people", type=int, default=None, help="probe this many people, drawn with --seed (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="draws the other person B of each A (and the people probed)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.people is not None and args.people < 1:
        _fail(f"--people {args.people}: give at least 1, or leave it out to probe every person")
    if args.threads < 1:
        _fail(f"--threads {args.threads}: give at least 1")
    for path in args.runs:
        if not (path / "manifest.json").is_file():
            _fail(f"{path} is not a run folder (no manifest.json): give a trained run, e.g. runs/sweep/single-qs03/mixed-s0")
    import torch

    from mechrecall.errors import MechrecallError
    from mechrecall.runs import open_run

    torch.set_num_threads(args.threads)
    for path in args.runs:
        try:
            run = open_run(path)
            model, world = run.load_model(), run.world()
        except MechrecallError as error:
            _fail(f"{path}: {error}")
        try:
            records = probe_prompts(world.dataset, world.config.fullname, seed=args.seed, limit=args.people)
        except ValueError as error:  # a BIO this version's templates do not render
            _fail(f"{path}: {error}: its world was rendered with other templates; probe it with the mechrecall version that made it")
        rows = summarize(records, measure(model, run.tokenizer(), records), world.dataset, world.config.permute)
        print("\n".join(lines(path, rows)))


if __name__ == "__main__":
    main()
