"""How a run's QA-OOD accuracy is made up: by attribute, by person, and what its wrong answers are.

    python analyses/ood_structure.py runs/tiny/s0/mixed runs/tiny/s0/two-stage

For each run (greedy exact match of the whole answer, as everywhere in mechrecall):
- accuracy per attribute;
- per person, how many of its attributes are right, beside the count a model that gets each fact
  right independently with the run's accuracy would give (binomial), and the dispersion index
  (variance of the per-person counts over the binomial variance: 1 when facts are right
  independently of the person, above 1 when whole people are known or not);
- what the wrong answers are: another person's value of the same attribute (a well-formed answer
  that is someone's fact), or a token sequence that is nobody's value.

Reads only the run folder; prints a markdown table per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict
from math import comb
from pathlib import Path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def structure(path: Path) -> dict:
    import torch

    from mechrecall.encoding import encode_pairs, pad_id
    from mechrecall.errors import MechrecallError
    from mechrecall.evaluation import exact_match
    from mechrecall.runs import open_run

    try:
        run = open_run(path)
        model = run.load_model()
    except MechrecallError as error:
        _fail(f"{path}: {error}")
    dataset, tokenizer = run.world().dataset, run.tokenizer()
    rows = dataset["qa_ood"]
    encoded = encode_pairs(tokenizer, list(rows["prompt"]), list(rows["answer"]))
    hits = exact_match(model, encoded, pad_id(tokenizer)).tolist()
    by_attribute: dict[str, list[bool]] = defaultdict(list)
    by_person: dict[int, list[bool]] = defaultdict(list)
    for attribute, person, hit in zip(rows["attribute"], rows["person_id"], hits, strict=True):
        by_attribute[attribute].append(hit)
        by_person[person].append(hit)
    accuracy = sum(hits) / len(hits)
    per_person = [sum(h) for h in by_person.values()]
    facts = len(next(iter(by_person.values())))
    counts = Counter(per_person)
    expected = {j: len(per_person) * comb(facts, j) * accuracy**j * (1 - accuracy) ** (facts - j) for j in range(facts + 1)}
    binomial_variance = facts * accuracy * (1 - accuracy)
    dispersion = statistics.pvariance(per_person) / binomial_variance if binomial_variance > 0 else float("nan")
    # every person's value of each attribute, as answer token sequences
    values: dict[str, set[tuple[int, ...]]] = defaultdict(set)
    for split in ("qa_id", "qa_ood"):
        pairs = dataset[split]
        answers = encode_pairs(tokenizer, list(pairs["prompt"]), list(pairs["answer"]))
        for i, attribute in enumerate(pairs["attribute"]):
            values[attribute].add(tuple(answers.ids[i][answers.target_start[i]:]))
    wrong = Counter()
    with torch.no_grad():
        for i, (attribute, hit) in enumerate(zip(rows["attribute"], hits, strict=True)):
            if hit:
                continue
            ids, start = encoded.ids[i], encoded.target_start[i]
            generated: list[int] = []
            for _ in range(len(ids) - start):  # greedy, as many tokens as the true answer
                logits = model(torch.tensor([ids[:start] + generated]))
                generated.append(int(logits[0, -1].argmax()))
            wrong["another person's value" if tuple(generated) in values[attribute] else "nobody's value"] += 1
    return {
        "run": str(path), "accuracy": accuracy, "n": len(hits),
        "by_attribute": {a: sum(h) / len(h) for a, h in sorted(by_attribute.items())},
        "people": len(per_person), "facts_per_person": facts,
        "per_person": {j: counts.get(j, 0) for j in range(facts + 1)}, "binomial": expected, "dispersion": dispersion,
        "wrong": dict(wrong),
    }


def lines(result: dict) -> list[str]:
    out = [f"### {result['run']}: QA-OOD {100 * result['accuracy']:.1f}% of {result['n']:,} questions", ""]
    out += ["| attribute | QA-OOD |", "|---|---|"]
    out += [f"| {a} | {100 * v:.1f}% |" for a, v in result["by_attribute"].items()]
    out += ["", f"| attributes right, of {result['facts_per_person']} | people | if independent (binomial) |", "|---|---|---|"]
    out += [f"| {j} | {result['per_person'][j]} | {result['binomial'][j]:.1f} |" for j in result["per_person"]]
    wrong = result["wrong"]
    total = sum(wrong.values())
    share = 100 * wrong.get("another person's value", 0) / total if total else float("nan")
    out += ["", f"Dispersion index of the per-person counts: {result['dispersion']:.2f} (1: facts right independently of the person).  ",
            f"Wrong answers: {total:,}; another person's value of the attribute: {share:.1f}%; nobody's value: {100 - share:.1f}%.", ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders (e.g. runs/tiny/s0/mixed)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for path in args.runs:
        if not (path / "manifest.json").is_file():
            _fail(f"{path} is not a run folder (no manifest.json): give a trained run, e.g. runs/tiny/s0/mixed")
    for path in args.runs:
        print("\n".join(lines(structure(path))))


if __name__ == "__main__":
    main()
