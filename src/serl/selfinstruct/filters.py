"""Cleaning and the named quality rules applied to each parsed item (serl-reference §1.4, step 3).

`clean_item` collapses whitespace and capitalises. With `faithful_capitalize=True` it calls `str.capitalize()`
as the reference does, which also lower-cases everything after the first character (`$\\Delta ABC$` becomes
`$\\delta abc$`, §9.1); by default only the first character changes. `rule_violation` returns the name of the
first rule that rejects a cleaned item, in the reference's order, or None.

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

RULES = ("empty", "length", "blacklist", "write_a_program", "leading_punctuation", "non_ascii_start")


def clean_item(item: str, *, faithful_capitalize: bool = False) -> str:
    """Whitespace runs to one space, stripped, then capitalised (see the module docstring)."""
    text = _WHITESPACE.sub(" ", item).strip()
    if faithful_capitalize:
        return text.capitalize()
    return text[:1].title() + text[1:]  # title case of one character is what capitalize() gives the first one


def rule_violation(text: str, *, min_words: int = 4, max_words: int = 150) -> str | None:
    """The first rule that rejects TEXT (already cleaned), or None when it passes them all; the rules read
    `TEXT.capitalize()`, as the reference does (see the module docstring)."""
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
    return None
