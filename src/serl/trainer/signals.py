"""Stopping a run on SIGINT or SIGTERM within moments, in any phase.

The signal raises `Interrupted` in the main thread wherever it is. The step in progress is dropped, and the last
complete checkpoint stays `latest`: checkpoints and outputs are written so that a kill at any moment leaves them
consistent, and a resume cuts the append-only outputs back to the checkpoint. Saving mid-step instead would have to
wait for the phase to end, which can take minutes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serl.trainer.checkpoint import LATEST


class Interrupted(BaseException):
    """A BaseException, as KeyboardInterrupt is, so that libraries' `except Exception` blocks cannot swallow it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; a second one acts as it did before (stops at once)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread can take signals
        yield
        return
    owner = os.getpid()
    previous: dict[int, object] = {}

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked worker inherited this handler: end as the signal would end it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for number, old in previous.items():
            signal.signal(number, old)  # type: ignore[arg-type]
        raise Interrupted(signum)

    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)  # type: ignore[arg-type]


def resume_hint(run_dir: Path) -> str:
    """Where a stopped run stands and the command that continues it."""
    pointer = run_dir / "checkpoints" / LATEST
    latest = pointer.read_text().strip() if pointer.is_file() else None
    state = f"the last complete checkpoint is {latest}" if latest else "no checkpoint was written yet"
    return f"{state}; resume with: serl train --resume {run_dir}"
