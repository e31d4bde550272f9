"""Answer equivalence: math-verify in both directions, as the reference does (serl-reference §2.2).

`verify(gold, pred)` is asymmetric (an assignment `x=2` matches `2` only one way round, for example), so two answers
are equivalent when either direction verifies. The relation is symmetric but not transitive: `x=2 ≡ 2 ≡ y=2` while
`x=2 ≢ y=2`.
"""

from __future__ import annotations

from math_verify import verify

from serl.reward.disproof import clear_probe_cache
from serl.reward.extract import Answer, clear_latex_cache, extract_raw
from serl.reward.limits import Budget
from serl.reward.pool import guarded_call

# Cross-group memo of equivalence results by canonical form. Canonical forms recur across the groups of a rollout
# ("12", "\frac{1}{2}"), and the result is a pure function of the two forms.
_CACHE: dict[tuple[str, str, str], bool] = {}
_CACHE_LIMIT = 200_000
_CUT = object()  # a check that was cut short; its False is not cached


def verify_one_way(gold: Answer, pred: Answer) -> bool:
    """One direction of the check, no time limit. `float_rounding=6` as in the reference's `math_metric`."""
    if gold.kind != "math" or pred.kind != "math":
        return gold.kind == pred.kind and gold.canonical == pred.canonical
    return verify(list(gold.parsed), list(pred.parsed), float_rounding=6, timeout_seconds=None)


def equivalent_raw(a: Answer, b: Answer) -> bool:
    """Both directions, no time limit: `a` as gold first, then `b`."""
    return verify_one_way(a, b) or verify_one_way(b, a)


def equivalent_cached(a: Answer, b: Answer, budget: Budget) -> bool:
    """`equivalent_raw` under `budget`, memoised across calls. A check that is cut short counts as False."""
    key = (a.kind, *sorted((a.canonical, b.canonical)))
    if key in _CACHE:
        return _CACHE[key]
    result = budget.run(equivalent_raw, a, b, default=_CUT)
    if result is _CUT:
        return False
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = bool(result)
    return bool(result)


def clear_equivalence_cache() -> None:
    """Forget every cross-call memo: equivalence results, probe values and parsed LaTeX."""
    _CACHE.clear()
    clear_probe_cache()
    clear_latex_cache()


def is_equivalent(a: Answer | str | None, b: Answer | str | None, *, timeout_s: float = 5.0) -> bool:
    """Whether two answers match, checking both directions. A string is first extracted as a `math` answer.

    None (no answer) matches nothing. A check that raises or takes longer than `timeout_s` is False. Safe from any
    thread and inside worker processes.
    """
    return guarded_call(_equivalent_pair, (a, b), timeout_s=timeout_s, default=False)


def _equivalent_pair(pair: tuple[Answer | str | None, Answer | str | None]) -> bool:
    a, b = (extract_raw(x, "math") if isinstance(x, str) else x for x in pair)
    return a is not None and b is not None and equivalent_raw(a, b)
