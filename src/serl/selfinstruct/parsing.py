"""Numbered items out of a generated response (serl-reference §1.4, steps 1-2).

An item starts at `<digits>.<whitespace>` and runs, lazily, up to the next newline-digits-dot-whitespace or
the end of the text. Text before the first item is discarded (a preamble such as "Sure, here are some
problems:"), a response without any numbered item yields nothing, and whatever follows the last item's
question (a solution the model wrote anyway) stays inside that item: the rule and novelty filters see it
there, exactly as in the reference."""

from __future__ import annotations

import re

_ITEM = re.compile(r"\d+\.\s+(.*?)(?=\n\d+\.\s|\Z)", re.DOTALL)


def extract_items(response: str) -> list[str]:
    """The stripped text of every numbered item, in order; empty items are kept here (the filters drop
    them)."""
    if not response:
        return []
    return [match.group(1).strip() for match in _ITEM.finditer(response)]
