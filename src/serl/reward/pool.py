"""A process pool whose tasks have a hard wall-clock limit.

`concurrent.futures` cannot stop one running task: a stuck sympy call would hold its worker (and the run) forever.
Here each worker is a plain process on its own pipe; one that overruns its limit, or dies, is killed and replaced, and
its task gets `on_timeout(item)`. Every worker is stopped before `map_isolated` returns, including on errors and
Ctrl-C.

On Linux workers are forked, as PyTorch's DataLoader does: they start in milliseconds with math-verify already imported,
and the calling script needs no `if __name__ == "__main__"` guard. The parent's threads (torch, tokenizers) are not
copied, and the workers only run sympy, never torch or CUDA. (forkserver and spawn re-run the caller's main module in
every worker, which costs seconds when it imports torch.) Elsewhere workers are spawned.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from serl.reward.limits import Budget, can_interrupt

T = TypeVar("T")
R = TypeVar("R")


def default_num_workers() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _context() -> Any:
    return mp.get_context("fork" if sys.platform == "linux" else "spawn")


def _serve(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which then stops us
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        fn, item = task
        try:
            reply = (True, fn(item))
        except Exception as error:
            reply = (False, f"{type(error).__name__}: {error}")
        conn.send(reply)


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_conn,), daemon=True)
        self.process.start()
        child_conn.close()
        self.index = -1
        self.deadline = 0.0

    def submit(self, index: int, fn: Callable[[Any], Any], item: Any, timeout_s: float) -> None:
        self.index = index
        self.deadline = time.monotonic() + timeout_s
        self.conn.send((fn, item))

    def stop(self, *, graceful: bool) -> None:
        if graceful:
            try:
                self.conn.send(None)
                self.process.join(timeout=2.0)
            except OSError:
                pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def map_isolated(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    timeout_s: float,
    on_timeout: Callable[[T], R],
    num_workers: int | None = None,
    progress: bool = False,
) -> list[R]:
    """`[fn(item) for item in items]` in worker processes, each call limited to `timeout_s` seconds of wall clock.

    `fn` must be picklable (a module-level function or a `functools.partial` of one). A call that overruns, or whose
    worker dies, yields `on_timeout(item)`. An exception raised by `fn` is a bug and is re-raised here.
    """
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    ctx = _context()
    pending = deque(range(len(items)))
    workers: list[_Worker] = []
    busy: dict[Connection, _Worker] = {}
    finished = False
    bar = _progress_bar(len(items)) if progress else None
    try:
        workers = [_Worker(ctx) for _ in range(min(num_workers or default_num_workers(), len(items)))]
        idle = list(workers)
        while pending or busy:
            while idle and pending:
                worker, index = idle.pop(), pending.popleft()
                worker.submit(index, fn, items[index], timeout_s)
                busy[worker.conn] = worker
            nearest = min(worker.deadline for worker in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, nearest - time.monotonic())):
                worker = busy.pop(conn)  # type: ignore[arg-type]
                try:
                    ok, value = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):  # the worker died (a crash in a C extension, the OOM killer)
                    ok, value = True, on_timeout(items[worker.index])
                    worker = _replace(worker, workers, ctx)
                if not ok:
                    raise RuntimeError(f"reward worker failed on item {worker.index}: {value}")
                results[worker.index] = value
                idle.append(worker)
                if bar:
                    bar.advance(0)
            now = time.monotonic()
            for conn, worker in list(busy.items()):
                if worker.deadline <= now:  # stuck, most likely inside C code that no signal reaches: kill it
                    del busy[conn]
                    results[worker.index] = on_timeout(items[worker.index])
                    idle.append(_replace(worker, workers, ctx))
                    if bar:
                        bar.advance(0)
        finished = True
    finally:
        for worker in workers:
            worker.stop(graceful=finished)
        if bar:
            bar.stop()
    return results


def _replace(worker: _Worker, workers: list[_Worker], ctx: Any) -> _Worker:
    """Kill `worker` and start a fresh one in its place; the new one keeps the old task index for bookkeeping."""
    worker.stop(graceful=False)
    replacement = _Worker(ctx)
    replacement.index = worker.index
    workers[workers.index(worker)] = replacement
    return replacement


def run_isolated(fn: Callable[[T], R], item: T, *, timeout_s: float, on_timeout: Callable[[T], R]) -> R:
    """`fn(item)` in one killable worker process: how code off the main thread gets a hard time limit."""
    return map_isolated(fn, [item], timeout_s=timeout_s, on_timeout=on_timeout, num_workers=1)[0]


def hard_limit(budget_s: float) -> float:
    """The wall clock after which a worker is killed: its own budget plus slack for start-up and transfer."""
    return budget_s + max(2.0, 0.5 * budget_s)


def guarded_call(fn: Callable[[T], R], item: T, *, timeout_s: float, default: R) -> R:
    """`fn(item)`, or `default` if it raises or takes longer than `timeout_s`. Safe from any thread.

    On the main thread this runs in-process under a timer; elsewhere in a killable worker (`fn`, `item` and `default`
    must then be picklable).
    """
    if can_interrupt():
        return Budget(timeout_s, total_s=timeout_s).run(fn, item, default=default)
    within = partial(_call_within_budget, fn=fn, timeout_s=timeout_s, default=default)
    return run_isolated(within, item, timeout_s=hard_limit(timeout_s), on_timeout=lambda _: default)


def _call_within_budget(item: T, *, fn: Callable[[T], R], timeout_s: float, default: R) -> R:
    return Budget(timeout_s, total_s=timeout_s).run(fn, item, default=default)


def _progress_bar(total: int) -> Any:
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    bar.add_task("scoring", total=total)
    return bar
