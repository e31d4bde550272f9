"""Time limits for reward work that may not finish (sympy on a pathological answer).

math-verify's own limits use `signal.alarm` inside the library and raise off the main thread, so we switch them off
and enforce ours here. On the main thread of a process (the trainer's, or a pool worker's) an interval timer raises
`ScoringTimeout` inside sympy's Python code. Anywhere else a signal cannot reach the work, so callers run it in a
killable worker process instead (`serl.reward.pool`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

# A whole group (or one ground-truth check) may take this many per-operation limits before the rest is skipped.
BUDGET_FACTOR = 3.0


class ScoringTimeout(BaseException):
    """Raised by the timer. A BaseException, so math-verify's `except Exception` blocks cannot swallow it."""


def can_interrupt() -> bool:
    """True where an interval timer can interrupt the current code: the main thread of a POSIX process."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _raise_timeout(signum: int, frame: object) -> None:
    raise ScoringTimeout


def _drop_timeouts(previous_hook: Callable[[object], object]) -> Callable[[object], object]:
    """An unraisable hook that discards `ScoringTimeout`s and passes everything else on.

    A timer that fires inside a finalizer (`__del__`, a gc callback) cannot propagate; Python hands it to
    `sys.unraisablehook`, which would print it (or, under pytest, fail the test). The re-fire reaches the real work
    50 ms later, so the lost one is not needed.
    """

    def hook(unraisable: object) -> None:
        if not isinstance(getattr(unraisable, "exc_value", None), ScoringTimeout):
            previous_hook(unraisable)

    return hook


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `ScoringTimeout` in the body after `seconds`. Main thread only (see `can_interrupt`); not reentrant.

    A timer that was already running (pytest-timeout, the caller's own alarm) is put back afterwards with its
    remaining time, so it fires late by at most `seconds` rather than never.
    """
    if seconds <= 0:
        raise ScoringTimeout
    previous_unraisable_hook = sys.unraisablehook
    sys.unraisablehook = _drop_timeouts(previous_unraisable_hook)
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    started = time.monotonic()
    # Re-fire every 50 ms: a bare `except:` deep in a parser can swallow the first ScoringTimeout.
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous_handler)
            sys.unraisablehook = previous_unraisable_hook
            if previous_delay > 0:
                remaining = previous_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), previous_interval)


class Budget:
    """Per-operation limit plus a total for a unit of work (a group, a ground-truth check).

    `run` returns `default` when the operation raises, blows its limit, or the total is spent; `timed_out` records
    that some result was cut short, so callers can report it.
    """

    def __init__(self, op_timeout_s: float, total_s: float | None = None) -> None:
        if not can_interrupt():
            raise RuntimeError("Budget needs the main thread; run the work through serl.reward.pool instead")
        self.op_timeout_s = op_timeout_s
        self.deadline = time.monotonic() + (total_s if total_s is not None else BUDGET_FACTOR * op_timeout_s)
        self.timed_out = False

    def run(self, fn: Callable[..., T], *args: object, default: T) -> T:
        limit = min(self.op_timeout_s, self.deadline - time.monotonic())
        if limit <= 0:
            self.timed_out = True
            return default
        try:
            with time_limit(limit):
                return fn(*args)
        except ScoringTimeout:
            self.timed_out = True
            return default
        except Exception:  # sympy and the LaTeX parser raise many types on garbage; garbage scores as "no answer"
            return default
