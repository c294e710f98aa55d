"""BIO sentence templates (at least five per attribute) and the one QA question per attribute.

A BIO template holds ``{S}`` (the subject: the full name, or a pronoun after the first sentence),
``{P}`` (its possessive: "Name's", "His", "Her") and ``{V}`` (the attribute value, always the last
thing before the closing full stop, so a BIO-completion prompt is the text up to ``{V}``).
"""

from __future__ import annotations

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")

ATTRIBUTE_LABELS = {
    "birth_date": "birth date",
    "birth_city": "birth city",
    "university": "university",
    "major": "major",
    "employer": "employer",
    "employer_city": "employer city",
}

BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{S} was born on {V}.",
        "{S} came into this world on {V}.",
        "{P} birthday falls on {V}.",
        "{S} celebrates {P_lower} birthday on {V}.",
        "{P} life began on {V}.",
        "{S} first saw the light of day on {V}.",
    ),
    "birth_city": (
        "{S} was born in {V}.",
        "{S} spent {P_lower} early years in {V}.",
        "{P} birthplace is {V}.",
        "{S} grew up in {V}.",
        "{S} hails from {V}.",
        "{P} hometown is {V}.",
    ),
    "university": (
        "{S} studied at {V}.",
        "{S} graduated from {V}.",
        "{S} received {P_lower} education at {V}.",
        "{P} alma mater is {V}.",
        "{S} completed {P_lower} degree at {V}.",
        "{S} attended {V}.",
    ),
    "major": (
        "{S} majored in {V}.",
        "{S} focused {P_lower} studies on {V}.",
        "{P} field of study was {V}.",
        "{S} earned a degree in {V}.",
        "{S} specialized in {V}.",
        "{P} academic focus was {V}.",
    ),
    "employer": (
        "{S} works for {V}.",
        "{S} is employed by {V}.",
        "{P} employer is {V}.",
        "{S} has a job at {V}.",
        "{S} built a career at {V}.",
        "{S} earns a living at {V}.",
    ),
    "employer_city": (
        "{S} works in {V}.",
        "{P} office is in {V}.",
        "{S} commutes to work in {V}.",
        "{P} workplace is located in {V}.",
        "{S} is based in {V}.",
        "{S} spends {P_lower} working days in {V}.",
    ),
}

QA_TEMPLATES: dict[str, str] = {
    "birth_date": "What is the birth date of {N}?",
    "birth_city": "What is the birth city of {N}?",
    "university": "Which university did {N} attend?",
    "major": "What did {N} study?",
    "employer": "Which company does {N} work for?",
    "employer_city": "Where does {N} work?",
}

ANSWER_CUE = "Answer:"
