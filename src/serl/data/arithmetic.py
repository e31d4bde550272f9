"""Deterministic grade-school arithmetic problems: the embedded seed and held-out sets for CPU runs.

Each template draws small numbers, writes a problem with an exact integer answer, and records the arithmetic as an
expression in ``meta`` (a worked solution, and something tests can check). Problems go to the train or test split by
a hash of their text, so the two splits can never share a problem whatever the seed, size or level.
Randomness only goes through ``random.Random(seed).random()``, whose output Python guarantees across versions.

Levels, easiest first (``LEVELS``): 1 bare one-operation arithmetic, 2 one-step word problems, 3 the one-step
problems of the full word-problem set, 4 the full set of one- to three-step word problems (the default, and what
``embedded:arithmetic`` has always held). docs/benchmarks.md has the embedded model's accuracy at each level.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from serl.data.records import Problem

SPLITS = ("train", "test")
TEST_PERCENT = 20  # share of the problem space that belongs to the test split

T = TypeVar("T")


class _Draw:
    """Small-number draws built on random() alone: randint/choice may change between Python versions."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def int(self, low: int, high: int) -> int:
        return low + int(self._rng.random() * (high - low + 1))

    def pick(self, options: Sequence[T]) -> T:
        return options[int(self._rng.random() * len(options))]


@dataclass(frozen=True)
class _Person:
    name: str
    he: str
    his: str

    @property
    def He(self) -> str:  # capitalised forms read naturally in templates
        return self.he.capitalize()

    @property
    def His(self) -> str:
        return self.his.capitalize()


PEOPLE = [
    _Person(name, *("she her" if female else "he his").split())
    for name, female in [
        ("Ava", True), ("Ben", False), ("Chloe", True), ("Diego", False), ("Emma", True), ("Farid", False),
        ("Grace", True), ("Hiro", False), ("Isla", True), ("Jamal", False), ("Kira", True), ("Leo", False),
        ("Maya", True), ("Noah", False), ("Olivia", True), ("Omar", False), ("Priya", True), ("Sam", False),
        ("Sofia", True), ("Tom", False), ("Yuki", True), ("Zane", False),
    ]
]  # fmt: skip
SHOP_ITEMS = ["notebooks", "pencils", "apples", "stickers", "tickets", "cupcakes", "toy cars", "comic books", "pens"]
COUNTABLES = ["marbles", "stickers", "cookies", "grapes", "crayons", "cards", "shells", "beads", "stamps"]
VEHICLES = [("bus", 30, 60), ("train", 50, 90), ("car", 40, 80), ("bike", 8, 20), ("boat", 10, 30)]
RELATIVES = ["mother", "father", "aunt", "uncle", "grandmother", "grandfather"]


@dataclass(frozen=True)
class _Drawn:
    text: str
    answer: int
    expression: str  # the arithmetic that gives the answer, e.g. "5*3+2"
    steps: int  # number of arithmetic operations


Template = Callable[[_Draw], _Drawn]
TEMPLATES: dict[str, Template] = {}  # the word-problem set of levels 3 and 4
BARE_TEMPLATES: dict[str, Template] = {}  # level 1
ONE_STEP_TEMPLATES: dict[str, Template] = {}  # level 2


def _template(fn: Template) -> Template:
    TEMPLATES[fn.__name__] = fn
    return fn


def _registered(registry: dict[str, Template]) -> Callable[[Template], Template]:
    def register(fn: Template) -> Template:
        registry[fn.__name__] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------------------------------
# Level 1: one operation, written as arithmetic. Sums and differences up to 50, products and quotients of one- or
# two-digit factors up to 12, so the test split holds well over 500 distinct problems.


@_registered(BARE_TEMPLATES)
def bare_add(draw: _Draw) -> _Drawn:
    a, b = draw.int(2, 50), draw.int(2, 50)
    return _Drawn(f"What is {a} + {b}?", a + b, f"{a}+{b}", 1)


@_registered(BARE_TEMPLATES)
def bare_subtract(draw: _Draw) -> _Drawn:
    b = draw.int(2, 25)
    a = b + draw.int(1, 25)
    return _Drawn(f"What is {a} - {b}?", a - b, f"{a}-{b}", 1)


@_registered(BARE_TEMPLATES)
def bare_multiply(draw: _Draw) -> _Drawn:
    a, b = draw.int(2, 12), draw.int(2, 12)
    return _Drawn(f"What is {a} * {b}?", a * b, f"{a}*{b}", 1)


@_registered(BARE_TEMPLATES)
def bare_divide(draw: _Draw) -> _Drawn:
    divisor, quotient = draw.int(2, 12), draw.int(2, 12)
    return _Drawn(f"What is {divisor * quotient} / {divisor}?", quotient, f"{divisor * quotient}/{divisor}", 1)


# ---------------------------------------------------------------------------------------------------------------------
# Level 2: one-step word problems with the same small numbers.


@_registered(ONE_STEP_TEMPLATES)
def word_gets_more(draw: _Draw) -> _Drawn:
    p, things, start, more = draw.pick(PEOPLE), draw.pick(COUNTABLES), draw.int(2, 40), draw.int(2, 20)
    text = f"{p.name} has {start} {things}. {p.He} gets {more} more. How many {things} does {p.he} have now?"
    return _Drawn(text, start + more, f"{start}+{more}", 1)


@_registered(ONE_STEP_TEMPLATES)
def word_gives_away(draw: _Draw) -> _Drawn:
    p, things, given = draw.pick(PEOPLE), draw.pick(COUNTABLES), draw.int(1, 20)
    start = given + draw.int(1, 30)
    text = f"{p.name} has {start} {things} and gives {given} to a friend. How many {things} does {p.he} have left?"
    return _Drawn(text, start - given, f"{start}-{given}", 1)


@_registered(ONE_STEP_TEMPLATES)
def word_bags(draw: _Draw) -> _Drawn:
    p, things, bags, each = draw.pick(PEOPLE), draw.pick(COUNTABLES), draw.int(2, 9), draw.int(2, 9)
    text = f"{p.name} has {bags} bags with {each} {things} in each bag. How many {things} does {p.he} have?"
    return _Drawn(text, bags * each, f"{bags}*{each}", 1)


@_registered(ONE_STEP_TEMPLATES)
def word_shares(draw: _Draw) -> _Drawn:
    p, things, friends, each = draw.pick(PEOPLE), draw.pick(COUNTABLES), draw.int(2, 9), draw.int(2, 9)
    text = (
        f"{p.name} shares {friends * each} {things} equally among {friends} friends. "
        f"How many {things} does each friend get?"
    )
    return _Drawn(text, each, f"{friends * each}/{friends}", 1)


@_registered(ONE_STEP_TEMPLATES)
def word_together(draw: _Draw) -> _Drawn:
    (p, q), things, first, second = _two_people(draw), draw.pick(COUNTABLES), draw.int(2, 30), draw.int(2, 30)
    text = f"{p.name} has {first} {things} and {q.name} has {second} {things}. How many {things} do they have together?"
    return _Drawn(text, first + second, f"{first}+{second}", 1)


@_registered(ONE_STEP_TEMPLATES)
def word_how_many_more(draw: _Draw) -> _Drawn:
    (p, q), things, fewer, gap = _two_people(draw), draw.pick(COUNTABLES), draw.int(2, 30), draw.int(1, 20)
    text = (
        f"{p.name} has {fewer + gap} {things} and {q.name} has {fewer} {things}. "
        f"How many more {things} does {p.name} have than {q.name}?"
    )
    return _Drawn(text, gap, f"{fewer + gap}-{fewer}", 1)


# ---------------------------------------------------------------------------------------------------------------------
# Levels 3 and 4: the word-problem set.


def _two_people(draw: _Draw) -> tuple[_Person, _Person]:
    first = draw.pick(PEOPLE)
    second = draw.pick([p for p in PEOPLE if p is not first])
    return first, second


@_template
def shopping_total(draw: _Draw) -> _Drawn:
    p, items, count, price = draw.pick(PEOPLE), draw.pick(SHOP_ITEMS), draw.int(2, 9), draw.int(2, 12)
    text = f"{p.name} buys {count} {items} for {price} dollars each. How many dollars does {p.he} spend in total?"
    return _Drawn(text, count * price, f"{count}*{price}", 1)


@_template
def shopping_change(draw: _Draw) -> _Drawn:
    p, items, count, price = draw.pick(PEOPLE), draw.pick(SHOP_ITEMS), draw.int(2, 6), draw.int(2, 9)
    money = count * price + draw.int(1, 30)
    text = (
        f"{p.name} has {money} dollars. {p.He} buys {count} {items} that cost {price} dollars each. "
        f"How many dollars does {p.he} have left?"
    )
    return _Drawn(text, money - count * price, f"{money}-{count}*{price}", 2)


@_template
def shopping_two_items(draw: _Draw) -> _Drawn:
    p = draw.pick(PEOPLE)
    first = draw.pick(SHOP_ITEMS)
    second = draw.pick([item for item in SHOP_ITEMS if item != first])
    count, price, other_price = draw.int(2, 5), draw.int(2, 9), draw.int(3, 15)
    total = count * price + other_price
    bill = 50 if total < 50 and draw.int(0, 1) else 100
    text = (
        f"{p.name} buys {count} {first} at {price} dollars each and a pack of {second} for {other_price} dollars. "
        f"{p.He} pays with a {bill}-dollar bill. How many dollars of change does {p.he} get?"
    )
    return _Drawn(text, bill - total, f"{bill}-({count}*{price}+{other_price})", 3)


@_template
def sharing_equal(draw: _Draw) -> _Drawn:
    p, things, friends, each = draw.pick(PEOPLE), draw.pick(COUNTABLES), draw.int(2, 9), draw.int(2, 12)
    total = friends * each
    text = (
        f"{p.name} has {total} {things} and shares them equally among {friends} friends. "
        f"How many {things} does each friend get?"
    )
    return _Drawn(text, each, f"{total}/{friends}", 1)


@_template
def sharing_after_eating(draw: _Draw) -> _Drawn:
    p, boxes, each, eaten = draw.pick(PEOPLE), draw.int(2, 8), draw.int(2, 9), draw.int(1, 6)
    baked = boxes * each + eaten
    text = (
        f"{p.name} bakes {baked} cookies and eats {eaten} of them. {p.He} puts the rest into {boxes} boxes "
        f"with the same number in each box. How many cookies go in each box?"
    )
    return _Drawn(text, each, f"({baked}-{eaten})/{boxes}", 2)


@_template
def sharing_packs(draw: _Draw) -> _Drawn:
    p, things = draw.pick(PEOPLE), draw.pick(COUNTABLES)
    packs, per_pack, friends = draw.int(2, 6), draw.int(4, 10), draw.int(2, 5)
    total = packs * per_pack
    # keep a number that leaves a multiple of `friends`, at least one, and at least one item for every friend
    remainder = total % friends
    most = (total - friends - remainder) // friends
    kept = remainder + friends * draw.int(0 if remainder else 1, min(most, 2))
    text = (
        f"{p.name} buys {packs} packs of {things} with {per_pack} {things} in each pack. {p.He} keeps {kept} "
        f"and shares the rest equally among {friends} friends. How many {things} does each friend get?"
    )
    return _Drawn(text, (total - kept) // friends, f"({packs}*{per_pack}-{kept})/{friends}", 3)


@_template
def sharing_teams(draw: _Draw) -> _Drawn:
    team_size, teams = draw.int(2, 6), draw.int(2, 9)
    children = team_size * teams
    boys = draw.int(1, children - 1)
    text = (
        f"A class has {boys} boys and {children - boys} girls. The teacher splits the whole class into teams "
        f"of {team_size}. How many teams are there?"
    )
    return _Drawn(text, teams, f"({boys}+{children - boys})/{team_size}", 2)


@_template
def ages_future(draw: _Draw) -> _Drawn:
    (p, q), age, gap, years = _two_people(draw), draw.int(4, 15), draw.int(2, 9), draw.int(1, 10)
    text = (
        f"{p.name} is {age} years old. {q.name} is {gap} years older than {p.name}. "
        f"How old will {q.name} be in {years} years?"
    )
    return _Drawn(text, age + gap + years, f"{age}+{gap}+{years}", 2)


@_template
def ages_times(draw: _Draw) -> _Drawn:
    p, relative, age, times = draw.pick(PEOPLE), draw.pick(RELATIVES), draw.int(5, 12), draw.int(2, 5)
    intro = f"{p.name} is {age} years old. {p.His} {relative} is {times} times as old as {p.he} is."
    if draw.int(0, 1):
        return _Drawn(f"{intro} How old is {p.his} {relative}?", age * times, f"{age}*{times}", 1)
    text = f"{intro} What is the sum of their ages?"
    return _Drawn(text, age + age * times, f"{age}+{age}*{times}", 2)


@_template
def ages_past(draw: _Draw) -> _Drawn:
    p, gap, years = draw.pick(PEOPLE), draw.int(1, 6), draw.int(1, 5)
    age = gap + years + draw.int(1, 10)
    text = (
        f"{p.name} is {age} years old and {p.his} cousin is {gap} years younger. "
        f"How old was {p.his} cousin {years} years ago?"
    )
    return _Drawn(text, age - gap - years, f"{age}-{gap}-{years}", 2)


@_template
def distance_speed(draw: _Draw) -> _Drawn:
    vehicle, slowest, fastest = draw.pick(VEHICLES)
    speed, hours = draw.int(slowest, fastest), draw.int(2, 6)
    text = f"A {vehicle} travels {speed} kilometers every hour. How many kilometers does it travel in {hours} hours?"
    return _Drawn(text, speed * hours, f"{speed}*{hours}", 1)


@_template
def distance_ride_and_walk(draw: _Draw) -> _Drawn:
    p, speed, hours, walked = draw.pick(PEOPLE), draw.int(8, 20), draw.int(2, 4), draw.int(1, 9)
    text = (
        f"{p.name} rides {p.his} bike at {speed} kilometers per hour for {hours} hours, then walks {walked} "
        f"more kilometers. How many kilometers does {p.he} travel in all?"
    )
    return _Drawn(text, speed * hours + walked, f"{speed}*{hours}+{walked}", 2)


@_template
def distance_round_trip(draw: _Draw) -> _Drawn:
    p, one_way, days = draw.pick(PEOPLE), draw.int(1, 9), draw.int(2, 7)
    text = (
        f"{p.name} lives {one_way} kilometers from school. {p.He} walks to school and back home every school day. "
        f"How many kilometers does {p.he} walk in {days} days?"
    )
    return _Drawn(text, 2 * one_way * days, f"2*{one_way}*{days}", 2)


@_template
def distance_rope(draw: _Draw) -> _Drawn:
    pieces, piece_length = draw.int(2, 9), draw.int(2, 15)
    length = pieces * piece_length
    text = f"A rope {length} meters long is cut into {pieces} equal pieces. How many meters long is each piece?"
    return _Drawn(text, piece_length, f"{length}/{pieces}", 1)


@_template
def steps_win_and_give(draw: _Draw) -> _Drawn:
    p, things = draw.pick(PEOPLE), draw.pick(COUNTABLES)
    start, won = draw.int(5, 40), draw.int(2, 20)
    given = draw.int(1, start + won - 1)
    text = (
        f"{p.name} has {start} {things}. {p.He} gets {won} more and then gives {given} to a friend. "
        f"How many {things} does {p.he} have now?"
    )
    return _Drawn(text, start + won - given, f"{start}+{won}-{given}", 2)


@_template
def steps_empty_seats(draw: _Draw) -> _Drawn:
    rows, seats = draw.int(3, 12), draw.int(4, 10)
    taken = draw.int(1, rows * seats - 1)
    text = f"A theater has {rows} rows with {seats} seats in each row. {taken} seats are taken. How many are empty?"
    return _Drawn(text, rows * seats - taken, f"{rows}*{seats}-{taken}", 2)


@_template
def steps_pages_left(draw: _Draw) -> _Drawn:
    p, per_day, days = draw.pick(PEOPLE), draw.int(5, 20), draw.int(2, 7)
    pages = per_day * days + draw.int(1, 60)
    text = (
        f"A book has {pages} pages. {p.name} reads {per_day} pages every day for {days} days. "
        f"How many pages does {p.he} still have to read?"
    )
    return _Drawn(text, pages - per_day * days, f"{pages}-{per_day}*{days}", 2)


@_template
def steps_savings(draw: _Draw) -> _Drawn:
    p, weekly, weeks = draw.pick(PEOPLE), draw.int(2, 15), draw.int(2, 10)
    if draw.int(0, 1):
        goal = weekly * weeks
        text = f"{p.name} saves {weekly} dollars every week. How many weeks does {p.he} need to save {goal} dollars?"
        return _Drawn(text, weeks, f"{goal}/{weekly}", 1)
    start = draw.int(5, 50)
    text = (
        f"{p.name} has {start} dollars in a piggy bank and adds {weekly} dollars every week. "
        f"How many dollars are in the piggy bank after {weeks} weeks?"
    )
    return _Drawn(text, start + weekly * weeks, f"{start}+{weekly}*{weeks}", 2)


def split_of(text: str) -> str:
    """'train' or 'test', fixed by the problem text alone (sha256, not hash(), which changes between runs)."""
    digest = hashlib.sha256(" ".join(text.lower().split()).encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


@dataclass(frozen=True)
class Level:
    templates: dict[str, Template]
    max_steps: int  # problems with more arithmetic operations are drawn again
    description: str


LEVELS: dict[int, Level] = {
    1: Level(BARE_TEMPLATES, 1, "one operation written as arithmetic (What is 23 + 14?), numbers up to 50"),
    2: Level(ONE_STEP_TEMPLATES, 1, "one-step word problems, numbers up to 50"),
    3: Level(TEMPLATES, 1, "the one-step problems of the word-problem set"),
    4: Level(TEMPLATES, 3, "the word-problem set: one to three steps"),
}
DEFAULT_LEVEL = 4


def generate_arithmetic(n: int, seed: int = 0, split: str = "train", level: int = DEFAULT_LEVEL) -> list[Problem]:
    """The first n distinct problems of `split` at `level` drawn from the generator seeded with `seed`; same inputs,
    same list. Ids are `arithmetic-SPLIT-NNNN` at the default level and `arithmetic-lL-SPLIT-NNNN` at the others."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(map(str, LEVELS))}, got {level!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    draw = _Draw(seed)
    templates, max_steps = LEVELS[level].templates, LEVELS[level].max_steps
    names = list(templates)
    prefix = "arithmetic" if level == DEFAULT_LEVEL else f"arithmetic-l{level}"
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(1000 * n):  # a bound, never reached in practice: each level's space holds thousands of problems
        name = draw.pick(names)
        drawn = templates[name](draw)
        if drawn.steps > max_steps or drawn.text in seen or split_of(drawn.text) != split:
            continue
        seen.add(drawn.text)
        meta = {"template": name, "steps": drawn.steps, "expression": drawn.expression, "split": split, "level": level}
        problems.append(Problem(f"{prefix}-{split}-{len(problems):04d}", drawn.text, str(drawn.answer), meta))
        if len(problems) == n:
            return problems
    raise RuntimeError(f"could not draw {n} distinct {split} problems at level {level}")
