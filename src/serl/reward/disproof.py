"""Cheap proofs that math-verify says "not equal", so that sympy's slow steps need not run.

Most pairs of distinct answers in a group are simply different, and math-verify spends most of its time failing to
prove them equal: `simplify(a - b)`, set symmetric differences. `certainly_different(a, b)` follows the dispatch of
`math_verify.grader.sympy_expr_eq` (strict mode, sets not compared with relations) step by step and answers True only
where every step that could say "equal" provably cannot:

- two plain expressions: every path to "equal" (structural equality, rounding to 6 places, `(a - b).evalf() == 0`,
  `simplify(a - b).is_zero`) needs `a - b` to vanish identically, so a clear difference at one probe point settles it;
- intervals: open/closed flags or an endpoint that certainly differ;
- finite sets and tuples: a length mismatch, or an element pair (in math-verify's own order) that certainly differs;
- two sets of real constants whose members certainly differ: their symmetric difference is not empty;
- lone symbols and plain strings: math-verify's own cheap comparisons, run as they are.

Anything else (relations, matrices, percentages, integrals, symbols with integer-like assumptions, a value that
cannot be evaluated) is "don't know", and the caller runs the real check. No time limit here: callers wrap it.
"""

from __future__ import annotations

import cmath
import math
import zlib
from contextlib import suppress
from itertools import product

from latex2sympy2_extended.logic import And
from latex2sympy2_extended.sets import FiniteSet
from math_verify.grader import (
    is_assignment_relation,
    is_equation,
    is_relation,
    sort_key,
    sympy_compare_symbols,
    take_first_relation,
    take_last_relation,
    unwrap_fcs,
)
from sympy import (
    Basic,
    Derivative,
    Eq,
    Expr,
    Integral,
    Interval,
    Limit,
    Product,
    S,
    Set,
    Sum,
    Symbol,
    Tuple,
    UnevaluatedExpr,
    Union,
    nan,
    ordered,
    zoo,
)
from sympy import FiniteSet as SympyFiniteSet
from sympy.core.relational import Relational

from serl.reward.extract import Answer

_PROBES = 2  # points at which an expression is evaluated
_PROBE_CACHE: dict[Basic, tuple[complex, ...] | None] = {}
_PROBE_CACHE_LIMIT = 50_000

# Assumptions that a positive real probe value satisfies. A symbol with any other (integer, negative, …) could let
# simplify() prove an identity that fails at the probe, so it is not probed.
_PROBE_SAFE = {
    **dict.fromkeys(("commutative", "complex", "extended_real", "finite", "hermitian", "real"), True),
    **dict.fromkeys(("positive", "nonnegative", "nonzero", "extended_positive", "extended_nonnegative"), True),
    **dict.fromkeys(("extended_nonzero",), True),
    **dict.fromkeys(("imaginary", "infinite", "negative", "nonpositive", "zero", "extended_negative"), False),
    **dict.fromkeys(("extended_nonpositive",), False),
}


def certainly_different(a: Answer, b: Answer) -> bool:
    """True only where `equivalent_raw(a, b)` (math-verify, both directions) is certainly False."""
    if a.kind != "math" or b.kind != "math":
        return a.kind != b.kind or a.canonical != b.canonical
    return _cannot_verify(a.parsed, b.parsed) and _cannot_verify(b.parsed, a.parsed)


def clear_probe_cache() -> None:
    _PROBE_CACHE.clear()


def _cannot_verify(gold: tuple[object, ...], pred: tuple[object, ...]) -> bool:
    """`verify(gold, pred)` is `any` over all pairs of extracted items; an exception in a pair counts as False."""
    for g, t in product(gold, pred):
        if isinstance(g, str) and isinstance(t, str):
            g, t = g.strip(), t.strip()
            if g and g == t:
                return False
        elif isinstance(g, Basic) and isinstance(t, Basic):
            try:
                if not _cannot_match(g, t):
                    return False
            except Exception:  # don't know; math-verify decides
                return False
        elif not isinstance(g, (str, Basic)) or not isinstance(t, (str, Basic)):
            return False  # a matrix or anything unexpected: let math-verify decide
    return True


def _cannot_match(gold: Basic, pred: Basic) -> bool:
    """True only where `sympy_expr_eq(gold, pred, 6, 15)` (strict, no set-relation comparison) is False."""
    # The same rewriting of assignments and equations as sympy_expr_eq, in its order.
    is_gold_assignment, is_pred_assignment = is_assignment_relation(gold), is_assignment_relation(pred)
    is_gold_equation, is_pred_equation = is_equation(gold), is_equation(pred)
    if is_gold_assignment:
        gold = Eq(take_first_relation(gold).lhs, take_last_relation(gold).rhs, evaluate=False)
    if is_pred_assignment:
        pred = Eq(take_first_relation(pred).lhs, take_last_relation(pred).rhs, evaluate=False)
    if is_pred_equation and not is_gold_equation:
        pred = take_last_relation(pred).rhs
    elif is_gold_assignment and not is_pred_equation:
        gold = take_last_relation(gold).rhs
    if is_relation(gold) and isinstance(pred, Set):
        with suppress(Exception):  # as math-verify does, so that 1 < x < 2 can equal an interval
            gold = unwrap_fcs(gold).as_set()
    if gold in (nan, zoo):
        return True  # sympy_str_eq raises, and verify counts that as False
    if gold == pred:
        return False
    if is_relation(gold) and is_relation(pred):
        return False  # relations go through solve(); not modelled
    if isinstance(gold, (Set, Tuple)) or isinstance(pred, (Set, Tuple)):
        return _sets_cannot_match(gold, pred)
    if isinstance(gold, Symbol) or isinstance(pred, Symbol):
        return not sympy_compare_symbols(gold, pred)
    if _is_relation_like(gold) or _is_relation_like(pred):
        # A relation against an expression: `relation - expr` raises in both the numeric and the symbolic check, and
        # a relation (or the boolean doit() makes of it) never equals a number.
        other = pred if _is_relation_like(gold) else gold
        return isinstance(other, Expr) and not _is_relation_like(other)
    return _expressions_differ(gold, pred)


def _is_relation_like(expr: Basic) -> bool:
    return isinstance(expr, (Relational, And))


def _sets_cannot_match(gold: Basic, pred: Basic) -> bool:
    """Mirror of `sympy_compare_sets`."""
    a_set = gold if isinstance(gold, (Set, Tuple)) else SympyFiniteSet(gold)
    b_set = pred if isinstance(pred, (Set, Tuple)) else SympyFiniteSet(pred)
    if isinstance(a_set, Interval) and isinstance(b_set, Interval):
        return (
            a_set.left_open != b_set.left_open
            or a_set.right_open != b_set.right_open
            or _cannot_match(a_set.start, b_set.start)
            or _cannot_match(a_set.end, b_set.end)
        )
    if a_set == b_set:
        return False
    if isinstance(a_set, Set) and isinstance(b_set, Set) and not _real_sets_differ(a_set, b_set):
        return False  # the symmetric difference might be empty
    finite = (SympyFiniteSet, Tuple)
    if isinstance(a_set, finite) and isinstance(b_set, finite):
        return _elements_cannot_match(a_set, b_set)
    if isinstance(a_set, Interval) and isinstance(b_set, finite):
        # The length first: is_open is costly and only matters for two elements.
        return len(b_set) != 2 or not a_set.is_open or _elements_cannot_match(Tuple(a_set.start, a_set.end), b_set)
    if isinstance(b_set, Interval) and isinstance(a_set, finite):
        return len(a_set) != 2 or not b_set.is_open or _elements_cannot_match(a_set, Tuple(b_set.start, b_set.end))
    return True


def _elements_cannot_match(gold: Basic, pred: Basic) -> bool:
    """Mirror of `sympy_deep_compare_set_and_tuple`: elements paired in math-verify's order."""
    if len(gold) != len(pred):
        return True
    if isinstance(gold, SympyFiniteSet):
        gold_args = list(ordered(gold.args, keys=sort_key, default=False))
        pred_args = list(ordered(pred.args, keys=sort_key, default=False))
    elif isinstance(gold, Tuple) and isinstance(pred, FiniteSet):
        gold_args, pred_args = gold.args, pred._unsorted_args
    elif isinstance(pred, SympyFiniteSet):
        gold_args, pred_args = gold.args, list(ordered(pred.args, keys=sort_key, default=False))
    else:
        gold_args, pred_args = gold.args, pred.args
    return any(_cannot_match(g, p) for g, p in zip(gold_args, pred_args, strict=True))


def _expressions_differ(a: Basic, b: Basic) -> bool:
    """Two plain expressions whose difference is clearly non-zero at a probe point."""
    if _is_infinity(a) or _is_infinity(b):
        # oo against a finite constant, or oo against -oo: every path compares values, and they differ.
        other = b if _is_infinity(a) else a
        return _is_infinity(other) or _constant_value(other) is not None
    a_values, b_values = _probe_values(a), _probe_values(b)
    if a_values is None or b_values is None:
        return False
    return any(_far_apart(x, y) for x, y in zip(a_values, b_values, strict=True))


def _is_infinity(expr: Basic) -> bool:
    return expr == S.Infinity or expr == S.NegativeInfinity


def _probe_values(expr: Basic) -> tuple[complex, ...] | None:
    """`expr` at `_PROBES` points (each symbol gets a value from its name, the same in every expression), or None
    where it is not a plain expression whose every equal-path is value-based."""
    if expr in _PROBE_CACHE:
        return _PROBE_CACHE[expr]
    values = _evaluate_at_probes(expr)
    if len(_PROBE_CACHE) >= _PROBE_CACHE_LIMIT:
        _PROBE_CACHE.clear()
    _PROBE_CACHE[expr] = values
    return values


def _evaluate_at_probes(expr: Basic) -> tuple[complex, ...] | None:
    if not isinstance(expr, Expr) or isinstance(expr, Symbol):
        return None
    # Percentages are x·Unevaluated(1/100) and compare by their number; doit() may evaluate integrals and sums.
    if expr.has(UnevaluatedExpr, Integral, Sum, Product, Limit, Derivative):
        return None
    symbols = sorted(expr.free_symbols, key=str)
    if not all(isinstance(s, Symbol) and _probe_safe(s) for s in symbols):
        return None
    values = []
    for probe in range(_PROBES if symbols else 1):
        value = complex(expr.evalf(30, subs={s: _probe_value(s.name, probe) for s in symbols}))
        if not cmath.isfinite(value):
            return None
        values.append(value)
    return tuple(values) * (1 if symbols else _PROBES)


def _probe_safe(symbol: Symbol) -> bool:
    return all(_PROBE_SAFE.get(key) is value for key, value in symbol.assumptions0.items())


def _probe_value(name: str, probe: int) -> float:
    """A positive value in [0.5, 2.5) fixed by the symbol's name and the probe number."""
    return 0.5 + 2.0 * (zlib.crc32(f"{probe}:{name}".encode()) / 2**32)


def _constant_value(expr: Basic) -> complex | None:
    values = _probe_values(expr)
    return values[0] if values is not None and not expr.free_symbols else None


def _far_apart(a: complex, b: complex) -> bool:
    """Clearly different: rounding to 6 places, float noise and evalf's chop cannot make them equal."""
    return abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b))


def _real_sets_differ(a: Set, b: Set) -> bool:
    """True where two sets certainly have different members: a finite set (whatever its elements) against one that
    holds an interval, or two sets of real constants (points, intervals, unions of them) with a witness point clearly
    inside one and clearly outside the other."""
    a_parts, b_parts = _real_parts(a), _real_parts(b)
    if isinstance(a, SympyFiniteSet) and b_parts is not None and any(low < high for low, high in b_parts):
        return True
    if isinstance(b, SympyFiniteSet) and a_parts is not None and any(low < high for low, high in a_parts):
        return True
    # More certainly distinct members on one side than elements on the other: {1, 2} ≠ {x}.
    if (
        isinstance(a, SympyFiniteSet)
        and isinstance(b, SympyFiniteSet)
        and (_distinct_constants(a) > len(b.args) or _distinct_constants(b) > len(a.args))
    ):
        return True
    if a_parts is None or b_parts is None:
        return False
    return any(_clearly_outside(w, b_parts) for w in _witnesses(a_parts)) or any(
        _clearly_outside(w, a_parts) for w in _witnesses(b_parts)
    )


def _distinct_constants(s: SympyFiniteSet) -> int:
    values = [v for v in (_constant_value(x) for x in s.args) if v is not None]
    return len([v for i, v in enumerate(values) if all(_far_apart(v, w) for w in values[:i])])


_Part = tuple[float, float]  # [low, high] as floats; a point has low == high. Open ends do not matter here.


def _real_parts(s: Set) -> list[_Part] | None:
    if isinstance(s, Union):
        parts: list[_Part] = []
        for arg in s.args:
            sub = _real_parts(arg)
            if sub is None:
                return None
            parts += sub
        return parts
    if isinstance(s, Interval):
        low, high = _real_endpoint(s.start), _real_endpoint(s.end)
        return None if low is None or high is None else [(low, high)]
    if isinstance(s, SympyFiniteSet):
        points = [_real_endpoint(x) for x in s.args]
        if any(p is None or math.isinf(p) for p in points):
            return None
        return [(p, p) for p in points]  # type: ignore[misc]
    return None


def _real_endpoint(expr: Basic) -> float | None:
    if expr == S.Infinity:
        return math.inf
    if expr == S.NegativeInfinity:
        return -math.inf
    value = _constant_value(expr)
    if value is None or value.imag != 0:
        return None
    return value.real


def _margin(x: float) -> float:
    return 0.0 if math.isinf(x) else 1e-9 * max(1.0, abs(x))


def _witnesses(parts: list[_Part]) -> list[float]:
    """Points certainly inside the set: its isolated points, and interior points of its intervals."""
    points = []
    for low, high in parts:
        if low == high:
            points.append(low)
            continue
        if math.isinf(low) and math.isinf(high):
            points += [0.0, 1e6, -1e6]
            continue
        if math.isinf(low) or math.isinf(high):
            end, step = (high, -1.0) if math.isinf(low) else (low, 1.0)
            points += [end + step * d * max(1.0, abs(end)) for d in (0.01, 1.0, 1e3)]
            continue
        points += [low + (high - low) * t for t in (0.01, 0.25, 0.5, 0.75, 0.99)]
    return [p for p in points if _clearly_inside(p, parts)]


def _clearly_inside(w: float, parts: list[_Part]) -> bool:
    return any(w == low == high or low + _margin(low) < w < high - _margin(high) for low, high in parts)


def _clearly_outside(w: float, parts: list[_Part]) -> bool:
    return all(w < low - _margin(low) or w > high + _margin(high) for low, high in parts)
