"""Cleaning and the named quality rules applied to each parsed item (serl-reference §1.4, step 3).

`clean_item` collapses whitespace and capitalises. With `faithful_capitalize=True` it calls `str.capitalize()`
as the reference does, which also lower-cases everything after the first character (`$\\Delta ABC$` becomes
`$\\delta abc$`, §9.1); by default only the first character changes. `rule_violation` returns the name of the
first rule that rejects a cleaned item, in the reference's order, or None.

`stated_result` is not the reference's (it has no check of what a problem says, §1.4 step 4) and runs only when
asked, after the reference's rules: it rejects a problem that already gives the value of a variable-free sum, such as
"What is 27 * 2 = 54?". A model that copies the stated value agrees with itself, so a majority vote rewards copying.

The rules decide on the text as the reference sees it, `str.capitalize()`d, whichever mode produced the kept text, so
both modes keep exactly the same items. (Case-folding is not always reversible: `İ` lower-cases to `i` plus a
combining dot, so "the İmage" is blacklisted by a case-blind search of the text as written, but not of the
capitalised text the reference searched.)"""

from __future__ import annotations

import re
import string

# Whole words (or the phrase "go to"), any case: things a text-only model cannot show or do.
BLACKLIST = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)
_BLACKLISTED = re.compile(r"\b(?:" + "|".join(map(re.escape, BLACKLIST)) + r")\b", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

RULES = ("empty", "length", "blacklist", "write_a_program", "leading_punctuation", "non_ascii_start", "stated_result")

# stated_result: an "=" that is not part of "==", "<=", ">=" or "!="; what must follow it to state a value; the
# characters of the sum walked back from it; and the operation that sum must hold
_EQUALS = re.compile(r"(?<![=<>!])=(?!=)")
_STATED_VALUE = re.compile(r"\s*-?\s*\d+(?:[.,]\d+)*(?!\w)")  # "= 54", "= 1,500", not "= 5x"
_ARITHMETIC_CHARS = frozenset("0123456789.,+-*/×÷^() \t")
_OPERATION = re.compile(r"\d\s*\)*\s*[+\-*/×÷^]\s*\(*\s*-?\d")


def clean_item(item: str, *, faithful_capitalize: bool = False) -> str:
    """Whitespace runs to one space, stripped, then capitalised (see the module docstring)."""
    text = _WHITESPACE.sub(" ", item).strip()
    if faithful_capitalize:
        return text.capitalize()
    return text[:1].title() + text[1:]  # title case of one character is what capitalize() gives the first one


def states_a_result(text: str) -> bool:
    """Whether TEXT writes a variable-free operation, then "=", then a number: "27 * 2 = 54", "(5*6)/2 = 15",
    "2 * 9 = 2 * (3^2)". Equations with a variable ("3x + 2 + 4 = 11", "x^2 + 4 = 13", "2 + 3 = 5x") and open
    questions ("32 - 45 = ?") do not count."""
    for equals in (m.start() for m in _EQUALS.finditer(text)):
        if not _STATED_VALUE.match(text, equals + 1):
            continue
        start = equals
        while start > 0 and text[start - 1] in _ARITHMETIC_CHARS:  # a linear walk: no regex backtracking
            start -= 1
        run = text[start:equals]
        expression = run.strip(" ,")
        glued_to_a_word = start > 0 and text[start - 1].isalnum() and not run[:1].isspace()  # "x2 + 3": a variable
        starts_a_term = expression[:1].isdigit() or expression.startswith(("(", "-"))
        if starts_a_term and not glued_to_a_word and _OPERATION.search(expression):
            return True
    return False


def rule_violation(
    text: str, *, min_words: int = 4, max_words: int = 150, reject_stated_results: bool = False
) -> str | None:
    """The first rule that rejects TEXT (already cleaned), or None when it passes them all; the rules read
    `TEXT.capitalize()`, as the reference does (see the module docstring). REJECT_STATED_RESULTS adds
    `stated_result`, which is not the reference's, after them."""
    seen = text.capitalize()
    if not seen:
        return "empty"
    if not min_words <= len(seen.split()) <= max_words:
        return "length"
    if _BLACKLISTED.search(seen):
        return "blacklist"
    if seen.startswith("Write a program"):
        return "write_a_program"
    if seen[0] in string.punctuation:
        return "leading_punctuation"
    if not seen[0].isascii():
        return "non_ascii_start"
    if reject_stated_results and states_a_result(text):
        return "stated_result"
    return None
