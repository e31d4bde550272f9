"""The self-instruction pools and their append-only log, from which they are rebuilt exactly on resume.

Every candidate gets a run-global integer id and one line in `RUN_DIR/instructions/iter_XXXX.jsonl` with its
first fate; a problem that passed the novelty filter gets more lines as its fate changes:

    rejected:rule:<name>                          (text)
    rejected:novelty                              (text, score, nearest, nearest_id)
    accepted  ->  kept | rejected:difficulty      (text, score, ...; then reward_mean, the filter's input)
              ->  trained (at step S) | expired   (a kept problem can still expire untrained)

The pools are a pure function of these lines: `Pools.apply` is the only way state changes, live and on replay,
so a rebuilt `Pools` equals the live one. Replay is idempotent: state is keyed by id and a fate never moves
backwards, so a line written twice (a step replayed after a crash) changes nothing. The kept pool is every
problem that passed the difficulty filter, trained or not, in the order it passed (serl-reference §3.1)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serl.io import append_jsonl, read_jsonl
from serl.rundir import RunDir

log = logging.getLogger(__name__)

CANDIDATE_FATES = ("accepted", "rejected:novelty", "rejected:contamination")  # plus rejected:rule:<name>
LATER_FATES = ("kept", "rejected:difficulty", "trained", "expired")
_RANK = {"accepted": 0, "kept": 1, "rejected:difficulty": 1, "trained": 2, "expired": 2}


@dataclass
class GeneratedProblem:
    """A generated problem that passed the rule and novelty filters."""

    id: int
    text: str
    iteration: int
    fate: str = "accepted"  # the latest fate: accepted (waiting for rollout), kept, rejected:difficulty, ...
    passed_difficulty: bool = False
    reward_mean: float | None = None  # the difficulty filter's input: its rollouts' mean raw reward
    trained_step: int | None = None


@dataclass
class Pools:
    seeds: list[str]
    history: dict[int, GeneratedProblem] = field(default_factory=dict)  # every accepted problem, in id order
    kept_ids: list[int] = field(default_factory=list)  # passed the difficulty filter, in the order they did
    next_id: int = 0  # the id the next candidate gets
    torn_lines: int = 0  # unreadable lines skipped while rebuilding

    def kept(self, iteration: int | None = None) -> list[str]:
        """Texts of the kept pool (optionally only problems generated in ITERATION), the few-shot source."""
        problems = (self.history[i] for i in self.kept_ids)
        return [p.text for p in problems if iteration is None or p.iteration == iteration]

    def pending(self) -> list[GeneratedProblem]:
        """Accepted problems not yet rolled out (the reference's batch buffer), oldest first."""
        return [p for p in self.history.values() if p.fate == "accepted"]

    def history_texts(self) -> list[str]:
        return [p.text for p in self.history.values()]

    def apply(self, record: dict[str, Any]) -> None:
        """Fold one log record into the pools. Idempotent; a malformed record is skipped with a warning."""
        problem_id, fate = record.get("id"), record.get("fate")
        if not isinstance(problem_id, int) or not isinstance(fate, str):
            log.warning("instruction log: skipping a record without an integer id and a fate: %.200r", record)
            return
        if fate in CANDIDATE_FATES or fate.startswith("rejected:rule:"):
            self.next_id = max(self.next_id, problem_id + 1)
            if fate == "accepted" and problem_id not in self.history:
                text, iteration = record.get("text"), record.get("iteration", 1)
                if not isinstance(text, str):
                    log.warning("instruction log: skipping accepted id %s without a text", problem_id)
                    return
                self.history[problem_id] = GeneratedProblem(problem_id, text, iteration)
            return
        problem = self.history.get(problem_id)
        if fate not in LATER_FATES or problem is None:
            log.warning("instruction log: skipping fate %r for id %s (unknown fate or id)", fate, problem_id)
            return
        if fate == "kept" and not problem.passed_difficulty:
            problem.passed_difficulty = True
            self.kept_ids.append(problem_id)
        if "reward_mean" in record:
            problem.reward_mean = record["reward_mean"]
        if fate == "trained":
            problem.trained_step = record.get("step")
        if _RANK[fate] > _RANK[problem.fate]:
            problem.fate = fate


def fate_record(problem_id: int, fate: str, *, step: int, **fields: Any) -> dict[str, Any]:
    """A log line for a later fate: `fate_record(7, "kept", step=3, reward_mean=0.5)`, `fate_record(7, "trained",
    step=3)`."""
    if fate not in LATER_FATES:
        raise ValueError(f"unknown fate {fate!r}; expected one of {', '.join(LATER_FATES)}")
    return {"id": problem_id, "fate": fate, "step": step, **fields}


class InstructionLog:
    """Appends fate records to `RUN_DIR/instructions/iter_XXXX.jsonl`, one fsync per batch, and applies them
    to the pools only after they are on disk. Opening the log cuts off a torn last line left by a crash, so
    new lines never fuse with it (`rebuild_pools` has already skipped and reported it)."""

    def __init__(self, run_dir: str | os.PathLike[str], iteration: int = 1) -> None:
        self.iteration = iteration
        self.path = RunDir(Path(run_dir)).instruction_log(iteration)
        _cut_torn_tail(self.path)

    def write(self, records: Iterable[dict[str, Any]], pools: Pools | None = None) -> None:
        records = [{**r, "iteration": r.get("iteration", self.iteration)} for r in records]
        append_jsonl(self.path, records)
        if pools is not None:
            for record in records:
                pools.apply(record)


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        log.warning("%s: cutting a torn last line (%d bytes) before appending", path, len(data) - keep)
        handle.truncate(keep)


def rebuild_pools(run_dir: str | os.PathLike[str], seeds: Sequence[str]) -> Pools:
    """The pools exactly as the log left them: every `iter_*.jsonl` replayed in iteration order. Unreadable
    lines (a torn last line after a crash) are skipped, counted in `torn_lines` and logged as warnings."""
    pools = Pools(seeds=list(seeds))
    for path in RunDir(Path(run_dir)).instruction_logs():
        records, torn = read_jsonl(path)
        pools.torn_lines += torn
        for record in records:
            if isinstance(record, dict):
                pools.apply(record)
            else:
                pools.torn_lines += 1
                log.warning("%s: ignoring a line that is not a JSON object", path)
    return pools
