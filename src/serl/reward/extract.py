"""Answer extraction: pull the final answer out of a response, in one of three styles.

- `math` (default): math-verify's expression and LaTeX extraction with the reference's settings (serl-reference §2.2):
  "final answer is … I hope", then "final answer is"/`\\boxed{}`, then "answer:", then any LaTeX chunk or number,
  rightmost match first within a priority.
- `choice`: a letter A–J by the MMLU-Pro cascade (serl-reference §6.3), with no random guess.
- `number`: the first number inside the last `\\boxed{}`, else the last number in the text, as an exact rational.

These functions run unguarded: the callers in this package put a time limit around them (`serl.reward.limits`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, partial
from typing import Any

import math_verify.parser
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
from sympy import srepr

from serl.reward.choices import EXTRACTORS
from serl.reward.pool import guarded_call

# The reference's extraction targets, in its order (order breaks ties between matches at the same position).
_MATH_TARGETS = (ExprExtractionConfig(), LatexExtractionConfig())


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its own timeouts are off; they are off on purpose (serl.reward.limits)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropTimeoutNotice())


# math-verify memoises LaTeX → sympy in a 20-entry cache; answers recur across the groups of a rollout ("2",
# "\\frac{1}{2}"), so keep more. The parse is a pure function of the string and sympy objects are immutable, so
# this changes no result. Long strings (a runaway response) are parsed uncached so they cannot hog memory.
_parse_latex_uncached = math_verify.parser.parse_latex_cached.__wrapped__
_LATEX_CACHE_MAX_CHARS = 1000


@lru_cache(maxsize=8192)
def _parse_latex_short(latex: str) -> Any:
    return _parse_latex_uncached(latex)


def _parse_latex(latex: str) -> Any:
    return _parse_latex_short(latex) if len(latex) <= _LATEX_CACHE_MAX_CHARS else _parse_latex_uncached(latex)


math_verify.parser.parse_latex_cached = _parse_latex


def clear_latex_cache() -> None:
    _parse_latex_short.cache_clear()


@dataclass(frozen=True)
class Answer:
    """One extracted answer.

    `canonical` is exact: two answers with the same `canonical` have identical `parsed` values, so every equivalence
    check gives them the same result. That is what lets the fast majority vote check one representative per
    canonical form.
    """

    kind: str  # "math" | "choice" | "number"
    canonical: str  # clustering key
    text: str  # the answer as written, for logs and `GroupVote.majority_answer`
    parsed: tuple[Any, ...]  # math: math-verify's parse output (sympy objects, then the matched string)


def check_extractor(extractor: str) -> None:
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")


def extract_answer(text: str, extractor: str = "math", *, timeout_s: float = 5.0) -> Answer | None:
    """The answer in `text`, or None when there is none or extraction takes longer than `timeout_s`."""
    check_extractor(extractor)
    return guarded_call(partial(extract_raw, extractor=extractor), text, timeout_s=timeout_s, default=None)


def extract_raw(text: str, extractor: str = "math") -> Answer | None:
    """Extract without a time limit. Most callers want `extract_answer`, which has one."""
    if extractor == "math":
        return _extract_math(text)
    if extractor == "choice":
        letter = extract_choice(text)
        return None if letter is None else Answer("choice", letter, letter, (letter,))
    if extractor == "number":
        return _extract_number(text)
    check_extractor(extractor)
    return None


def _extract_math(text: str) -> Answer | None:
    # parse's own defaults are the reference's: fallback_mode="first_match", extraction_mode="any_match".
    parsed = parse(text, _MATH_TARGETS, parsing_timeout=None)
    if not parsed:
        return None
    canonical = "; ".join(repr(item) if isinstance(item, str) else srepr(item) for item in parsed)
    shown = next((item for item in reversed(parsed) if isinstance(item, str)), None) or str(parsed[0])
    return Answer("math", canonical, _printable(shown), tuple(parsed))


def _printable(text: str, limit: int = 500) -> str:
    """A display string that any log can write: lone surrogates escaped, length capped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r"(?=[aA]nswer:\s*([A-J]))")  # a lookahead: "Answer: Answer: B" has two, overlapping
_LONE_LETTER = re.compile(r"\b[A-J]\b")


def extract_choice(text: str) -> str | None:
    """The MMLU-Pro answer cascade, without its random-guess fallback.

    1. the first "answer is (X)";
    2. else the last "answer: X" on the first line that has one (the reference's `.*[aA]nswer:\\s*([A-J])`);
    3. else the last standalone capital A–J (the reference's `\\b[A-J]\\b(?!.*\\b[A-J]\\b)` with DOTALL).

    Steps 2 and 3 are written as linear scans: the reference regexes are quadratic and stall on a long response.
    """
    match = _ANSWER_IS.search(text)
    if match:
        return match.group(1)
    first_line_end, letter = -1, None
    for match in _ANSWER_COLON.finditer(text):
        line_end = text.find("\n", match.start())
        line_end = len(text) if line_end < 0 else line_end
        if first_line_end >= 0 and line_end != first_line_end:
            break
        first_line_end, letter = line_end, match.group(1)
    if letter is not None:
        return letter
    last = None
    for last in _LONE_LETTER.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    return last.group(0) if last else None


def _last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (to the end of the text if it is never closed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : i]
    return text[start + len("\\boxed{") :]


_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")


def _extract_number(text: str) -> Answer | None:
    boxed = _last_boxed(text)
    if boxed is not None:
        match = _NUMBER.search(boxed)
    else:
        match = None
        for match in _NUMBER.finditer(text):  # noqa: B007 - only the last match is wanted
            pass
    if match is None:
        return None
    try:
        value = Fraction(match.group(0).replace(",", ""))
    except (ValueError, ZeroDivisionError):  # "1/0", or more digits than int() accepts
        return None
    return Answer("number", str(value), _printable(match.group(0)), (value,))
