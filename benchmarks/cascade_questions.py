"""Short questions with checkable answers, for ``benchmarks/cascade.py``.

Four kinds, 220 questions in all, the same on every run (a fixed seed):
arithmetic (80: sums, differences, products, exact quotients), unit
conversions (50, whole results), capitals (50) and dates (40: weekdays,
days in a month, months and years later).

``check(question, answer)`` decides whether a model's free-text answer is
right, without a model:

* a number: the numbers in the answer that the question does not already
  hold must be exactly the expected one ("37 * 41 = 1517" is right, "it is
  1517, or maybe 1527" is not; "1,517" and "1517.0" read as 1517; numbers
  spelled in words do not count);
* a name (a capital, a weekday, a month): the expected name must appear,
  as a word, and no other name of the same kind the question does not
  already hold ("Canberra, not Sydney" is right, since Sydney is no
  capital in the table; "Monday or Tuesday" is wrong).

Run ``python -m benchmarks.cascade_questions`` to print them as JSON lines.
"""

from __future__ import annotations

import calendar
import datetime
import json
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

SEED = 11

CAPITALS = {
    "France": ("Paris",),
    "Germany": ("Berlin",),
    "Italy": ("Rome",),
    "Spain": ("Madrid",),
    "Portugal": ("Lisbon",),
    "Japan": ("Tokyo",),
    "China": ("Beijing",),
    "India": ("New Delhi", "Delhi"),
    "Russia": ("Moscow",),
    "Canada": ("Ottawa",),
    "Australia": ("Canberra",),
    "Brazil": ("Brasília", "Brasilia"),
    "Argentina": ("Buenos Aires",),
    "Egypt": ("Cairo",),
    "Kenya": ("Nairobi",),
    "Nigeria": ("Abuja",),
    "the United Kingdom": ("London",),
    "Ireland": ("Dublin",),
    "Norway": ("Oslo",),
    "Sweden": ("Stockholm",),
    "Finland": ("Helsinki",),
    "Denmark": ("Copenhagen",),
    "Poland": ("Warsaw",),
    "Greece": ("Athens",),
    "Turkey": ("Ankara",),
    "Iran": ("Tehran",),
    "Iraq": ("Baghdad",),
    "Saudi Arabia": ("Riyadh",),
    "Thailand": ("Bangkok",),
    "Vietnam": ("Hanoi",),
    "South Korea": ("Seoul",),
    "Indonesia": ("Jakarta",),
    "the Philippines": ("Manila",),
    "Pakistan": ("Islamabad",),
    "Bangladesh": ("Dhaka",),
    "Peru": ("Lima",),
    "Chile": ("Santiago",),
    "Colombia": ("Bogotá", "Bogota"),
    "Venezuela": ("Caracas",),
    "Cuba": ("Havana",),
    "Austria": ("Vienna",),
    "Switzerland": ("Bern", "Berne"),
    "the Netherlands": ("Amsterdam",),
    "Belgium": ("Brussels",),
    "Hungary": ("Budapest",),
    "the Czech Republic": ("Prague",),
    "Romania": ("Bucharest",),
    "Ukraine": ("Kyiv", "Kiev"),
    "Morocco": ("Rabat",),
    "New Zealand": ("Wellington",),
}
"""Country to its capital's accepted spellings, the first the canonical one."""

UNITS = (
    ("kilometres", "metres", 1000),
    ("metres", "centimetres", 100),
    ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
    ("yards", "feet", 3),
)
"""From unit, to unit, and how many of the second make one of the first."""

WEEKDAYS = tuple(calendar.day_name)
MONTHS = tuple(calendar.month_name)[1:]

_A = TypeVar("_A")
_NUMBER = re.compile(r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class Question:
    """One labelled question.

    Attributes:
        kind: ``arithmetic``, ``units``, ``capitals`` or ``dates``.
        text: The question as the model reads it.
        answer: The canonical answer, as text.
        accepted: Every spelling of a name answer that counts (the canonical first).
        names: For a name answer, the names of its kind a wrong answer may give instead.
    """

    kind: str
    text: str
    answer: str
    accepted: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


def generate(seed: int = SEED) -> list[Question]:
    """The 220 questions, in a fixed order for ``seed``."""
    rng = random.Random(seed)
    return [*_arithmetic(rng), *_units(rng), *_capitals(rng), *_dates(rng)]


def numbers(text: str) -> list[float]:
    """The numbers written in digits in ``text`` (thousands separators allowed)."""
    return [float(match.replace(",", "")) for match in _NUMBER.findall(text)]


def check(question: Question, answer: str) -> bool:
    """Whether ``answer`` (a model's free text) answers ``question`` rightly; see the module doc."""
    if not question.accepted:
        stated = set(numbers(answer)) - set(numbers(question.text))
        return stated == {float(question.answer)}
    if not any(_mentions(answer, spelling) for spelling in question.accepted):
        return False
    rivals = (name for name in question.names if name not in question.accepted)
    return not any(_mentions(answer, rival) and not _mentions(question.text, rival) for rival in rivals)


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def _arithmetic(rng: random.Random) -> list[Question]:
    def sum_() -> tuple[str, int]:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", a + b

    def difference() -> tuple[str, int]:
        a = rng.randint(50, 999)
        b = rng.randint(10, a - 10)
        return f"What is {a} - {b}?", a - b

    def product() -> tuple[str, int]:
        a, b = rng.randint(2, 9), rng.randint(11, 99)
        return f"What is {a} times {b}?", a * b

    def quotient() -> tuple[str, int]:
        b, result = rng.randint(2, 9), rng.randint(11, 30)
        return f"What is {b * result} divided by {b}?", result

    return [
        Question("arithmetic", text, str(answer))
        for make, count in ((sum_, 20), (difference, 20), (product, 25), (quotient, 15))
        for text, answer in _distinct(make, count)
    ]


def _units(rng: random.Random) -> list[Question]:
    questions = []
    for big, small, factor in UNITS:
        amounts = rng.sample(range(2, 13), 5)  # Five distinct amounts of each conversion.
        questions += [
            Question("units", f"How many {small} are in {amount} {big}?", str(amount * factor))
            for amount in amounts
        ]
    return questions


def _capitals(rng: random.Random) -> list[Question]:
    every_capital = tuple(spelling for spellings in CAPITALS.values() for spelling in spellings)
    countries = sorted(CAPITALS)
    rng.shuffle(countries)
    return [
        Question(
            "capitals",
            f"What is the capital of {country}?",
            CAPITALS[country][0],
            accepted=CAPITALS[country],
            names=every_capital,
        )
        for country in countries
    ]


def _dates(rng: random.Random) -> list[Question]:
    start = datetime.date(1990, 1, 1).toordinal()

    def weekday() -> tuple[str, str]:
        day = datetime.date.fromordinal(rng.randint(start, start + 40 * 365))
        return f"What day of the week was {day.day} {MONTHS[day.month - 1]} {day.year}?", WEEKDAYS[
            day.weekday()
        ]

    def month_length() -> tuple[str, str]:
        year, month = rng.randint(1990, 2030), rng.randint(1, 12)
        return f"How many days are there in {MONTHS[month - 1]} {year}?", str(
            calendar.monthrange(year, month)[1]
        )

    def month_later() -> tuple[str, str]:
        month, later = rng.randint(0, 11), rng.randint(2, 9)
        return f"Which month comes {later} months after {MONTHS[month]}?", MONTHS[(month + later) % 12]

    def year_later() -> tuple[str, str]:
        year, later = rng.randint(1950, 2000), rng.randint(11, 40)
        return f"What year is {later} years after {year}?", str(year + later)

    return [
        *(
            Question("dates", text, answer, accepted=(answer,), names=WEEKDAYS)
            for text, answer in _distinct(weekday, 15)
        ),
        *(Question("dates", text, answer) for text, answer in _distinct(month_length, 10)),
        *(
            Question("dates", text, answer, accepted=(answer,), names=MONTHS)
            for text, answer in _distinct(month_later, 10)
        ),
        *(Question("dates", text, answer) for text, answer in _distinct(year_later, 5)),
    ]


def _distinct(make: Callable[[], tuple[str, _A]], count: int) -> list[tuple[str, _A]]:
    """``count`` questions from ``make``, none asked twice."""
    made: dict[str, _A] = {}
    while len(made) < count:
        text, answer = make()
        made.setdefault(text, answer)
    return list(made.items())


if __name__ == "__main__":
    for question in generate():
        print(json.dumps(asdict(question), ensure_ascii=False))
