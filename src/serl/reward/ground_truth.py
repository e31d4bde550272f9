"""Ground-truth reward: the label as gold, the response as prediction (serl-reference §2.4).

1.0 when the label's answer and the response's answer verify in either direction (label as gold first), else 0.0.
Errors, time-outs, an empty label and a label with no extractable answer all give 0.0, never 1.0.

One deliberate change from the reference: a bare LaTeX label (no `$`, `\\boxed`, `\\[` or `\\(`) is read inside
`$…$`. Read raw, math-verify takes `2+2\\sqrt{2}` as 2, `78\\pi` as 78 and `\\frac{\\pi}{2}` as nothing, which
marks 92 of the 500 seed solutions wrong against their own labels (2 with the wrapping).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from serl.reward.choices import GT_MATCHES
from serl.reward.equivalence import equivalent_raw
from serl.reward.extract import check_extractor, extract_raw
from serl.reward.limits import can_interrupt
from serl.reward.pool import default_num_workers, guarded_call, hard_limit, map_isolated

_MATH_DELIMITERS = ("$", "\\boxed", "\\[", "\\(")


def gold_text(label: object, extractor: str = "math") -> str:
    """The text that the gold answer is extracted from (a numeric label from JSON is read as its string)."""
    label = str(label).strip()
    if extractor == "math" and label and not any(mark in label for mark in _MATH_DELIMITERS):
        return f"${label}$"
    return label


def gt_reward(response: str, label: str | None, *, extractor: str = "math", timeout_s: float = 5.0) -> float:
    """1.0 if `response` answers `label`, else 0.0. The whole check is limited to `timeout_s`; safe from any thread."""
    check_extractor(extractor)
    return guarded_call(partial(_gt_raw, extractor=extractor), (response, label), timeout_s=timeout_s, default=0.0)


def gt_rewards(
    responses: Sequence[str],
    labels: Sequence[str | None],
    *,
    extractor: str = "math",
    timeout_s: float = 5.0,
    num_workers: int | None = None,
    progress: bool = False,
    match: str = "verify",
) -> list[float]:
    """`gt_reward` for each (response, label) pair, in a process pool sized to the cores (0 or 1: in-process).

    match: "verify" (the above) or "contains": 1.0 when the label's text occurs in the response (a format or keyword
    reward, e.g. label "\\boxed"); a None or empty label gives 0.0.
    """
    check_extractor(extractor)
    if match not in GT_MATCHES:
        raise ValueError(f"unknown gt match {match!r}; use one of {', '.join(GT_MATCHES)}")
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses for {len(labels)} labels")
    pairs = list(zip(responses, labels, strict=True))
    if match == "contains":
        return [float(label is not None and str(label) != "" and str(label) in response) for response, label in pairs]
    workers = default_num_workers() if num_workers is None else num_workers
    if workers <= 1 and can_interrupt():
        return [gt_reward(response, label, extractor=extractor, timeout_s=timeout_s) for response, label in pairs]
    within = partial(_gt_within, extractor=extractor, timeout_s=timeout_s)
    return map_isolated(
        within,
        pairs,
        timeout_s=hard_limit(timeout_s),
        on_timeout=lambda _: 0.0,
        num_workers=max(1, workers),
        progress=progress,
    )


def _gt_within(pair: tuple[str, str | None], *, extractor: str, timeout_s: float) -> float:
    return gt_reward(*pair, extractor=extractor, timeout_s=timeout_s)  # runs on a worker's main thread


def _gt_raw(pair: tuple[str, str | None], *, extractor: str) -> float:
    response, label = pair
    if label is None:
        return 0.0
    gold = extract_raw(gold_text(label, extractor), extractor)
    if gold is None:
        return 0.0
    pred = extract_raw(response, extractor)
    return 1.0 if pred is not None and equivalent_raw(gold, pred) else 0.0
