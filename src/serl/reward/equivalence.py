"""Answer equivalence: math-verify in both directions, as the reference does (serl-reference §2.2).

`verify(gold, pred)` is asymmetric (an assignment `x=2` matches `2` only one way round, for example), so two answers
are equivalent when either direction verifies. The relation is symmetric but not transitive: `x=2 ≡ 2 ≡ y=2` while
`x=2 ≢ y=2`.
"""

from __future__ import annotations

import cmath

from math_verify import verify
from sympy import Derivative, Expr, Integral, Limit, Product, Sum, UnevaluatedExpr

from serl.reward.extract import Answer, extract_raw
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


def numeric_value(answer: Answer) -> complex | None:
    """The value of an answer that math-verify can only match by value, else None.

    That is a single constant expression (no free symbols, sets, tuples, relations or matrices, no percentage, no
    unevaluated integral or sum). For such a pair every path of `verify` that can say "equal" (sympy `==`, rounding to
    6 decimals, `simplify(a - b) == 0`, `(a - b).evalf() == 0`) needs the two values to agree to about 1e-6, so two
    values far apart are certainly not equivalent: `certainly_different`. No time limit; call it under a Budget.
    """
    if answer.kind != "math":
        return None
    expressions = [item for item in answer.parsed if not isinstance(item, str)]
    if len(expressions) != 1:
        return None
    expr = expressions[0]
    if not isinstance(expr, Expr) or not expr.is_number:
        return None
    if expr.has(UnevaluatedExpr, Integral, Sum, Product, Limit, Derivative):  # percentages are x·Unevaluated(1/100)
        return None
    value = complex(expr.evalf(30))
    return value if cmath.isfinite(value) else None


def certainly_different(a: Answer, b: Answer, a_value: complex | None, b_value: complex | None) -> bool:
    """True only where `equivalent_raw(a, b)` is certainly False, so that sympy need not be asked.

    The matched strings also take part in `verify` (equal strings match), hence the check on them.
    """
    if a_value is None or b_value is None:
        return False
    a_strings = {item.strip() for item in a.parsed if isinstance(item, str)}
    if any(item.strip() in a_strings for item in b.parsed if isinstance(item, str)):
        return False
    return abs(a_value - b_value) > 1e-3 * max(1.0, abs(a_value), abs(b_value))


def clear_equivalence_cache() -> None:
    _CACHE.clear()


def is_equivalent(a: Answer | str | None, b: Answer | str | None, *, timeout_s: float = 5.0) -> bool:
    """Whether two answers match, checking both directions. A string is first extracted as a `math` answer.

    None (no answer) matches nothing. A check that raises or takes longer than `timeout_s` is False. Safe from any
    thread and inside worker processes.
    """
    return guarded_call(_equivalent_pair, (a, b), timeout_s=timeout_s, default=False)


def _equivalent_pair(pair: tuple[Answer | str | None, Answer | str | None]) -> bool:
    a, b = (extract_raw(x, "math") if isinstance(x, str) else x for x in pair)
    return a is not None and b is not None and equivalent_raw(a, b)
