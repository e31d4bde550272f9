"""Answer equivalence: math-verify in both directions, as the reference does (serl-reference §2.2).

`verify(gold, pred)` is asymmetric (an assignment `x=2` matches `2` only one way round, for example), so two answers
are equivalent when either direction verifies. The relation is symmetric but not transitive: `x=2 ≡ 2 ≡ y=2` while
`x=2 ≢ y=2`.
"""

from __future__ import annotations

import cmath
from dataclasses import dataclass

from math_verify import verify
from sympy import Derivative, Expr, Integral, Limit, Product, Sum, Symbol, UnevaluatedExpr

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


@dataclass(frozen=True)
class NumericSignature:
    """What math-verify can only match an answer by: a constant's value, or the fact that it is not constant."""

    value: complex | None = None  # a constant expression's value
    varies: bool = False  # an expression in free symbols that takes two clearly different values


# Two points at which a non-constant answer is evaluated (positive, so that roots and logs stay real).
_PROBES = (0.5772156649, 1.6180339887)


def numeric_signature(answer: Answer) -> NumericSignature | None:
    """The signature of a single plain expression, else None (sets, tuples, relations, matrices, symbols alone,
    percentages, unevaluated integrals or sums, several matches). No time limit; call it under a Budget.

    For such answers every path of `verify` that can say "equal" (sympy `==`, rounding to 6 decimals,
    `simplify(a - b) == 0`, `(a - b).evalf() == 0`) needs equal values, and a constant never equals an expression
    that varies: `certainly_different` relies on exactly that.
    """
    if answer.kind != "math":
        return None
    expressions = [item for item in answer.parsed if not isinstance(item, str)]
    if len(expressions) != 1:
        return None
    expr = expressions[0]
    if not isinstance(expr, Expr) or isinstance(expr, Symbol) or (expr.is_Mul and all(a.is_Symbol for a in expr.args)):
        return None  # math-verify compares a lone symbol (and \\text{…}, a product of symbols) by name
    if expr.has(UnevaluatedExpr, Integral, Sum, Product, Limit, Derivative):  # percentages are x·Unevaluated(1/100)
        return None
    symbols = sorted(expr.free_symbols, key=str)
    if not symbols:
        value = complex(expr.evalf(30))
        return NumericSignature(value=value) if cmath.isfinite(value) else None
    first, second = (complex(expr.evalf(30, subs=dict.fromkeys(symbols, probe))) for probe in _PROBES)
    if cmath.isfinite(first) and cmath.isfinite(second) and _far_apart(first, second):
        return NumericSignature(varies=True)
    return None


def _far_apart(a: complex, b: complex) -> bool:
    return abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b))


def certainly_different(
    a: Answer, b: Answer, a_signature: NumericSignature | None, b_signature: NumericSignature | None
) -> bool:
    """True only where `equivalent_raw(a, b)` is certainly False, so that sympy need not be asked: two constants
    far apart, or a constant and an expression that varies. Equal matched strings also match in `verify`."""
    if a_signature is None or b_signature is None:
        return False
    a_strings = {item.strip() for item in a.parsed if isinstance(item, str)}
    if any(item.strip() in a_strings for item in b.parsed if isinstance(item, str)):
        return False
    if a_signature.value is not None and b_signature.value is not None:
        return _far_apart(a_signature.value, b_signature.value)
    return (a_signature.value is not None and b_signature.varies) or (
        b_signature.value is not None and a_signature.varies
    )


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
