"""Where a step's problems come from: the `ProblemSource` interface, and its dataset implementation (maj and gt
modes). Self-instruction (serl mode) is the other implementation, in `trainer/selfplay.py`.

The loop asks a source for problems with `next_batch` and tells it, with `observe`, what became of each problem it
gave out: kept or rejected by the difficulty filter, trained, or expired. A source's state is plain data
(`state_dict`), saved in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from serl.data import Problem


class StalledError(RuntimeError):
    """The policy produced no batch that passes the filters within the attempt budget."""


class CanaryStop(StalledError):
    """The collapse guard stopped the run: the canary set's accuracy stayed below its best (state saved)."""


@dataclass
class RolloutProblem:
    """A problem to roll out: `uid` is unique within the run (dataset id, or `gen-<int>` for generated problems)."""

    uid: str
    text: str
    label: str | None = None
    generated_id: int | None = None  # run-global id of a self-generated problem

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RolloutProblem:
        return cls(**state)


ProblemFate = Literal["kept", "rejected:difficulty", "trained", "expired"]


@dataclass(frozen=True)
class Fate:
    """What became of a problem at a step. `reward_mean` is the difficulty filter's input (kept, rejected:difficulty):
    the group's mean raw reward (`selfinstruct.difficulty`)."""

    problem: RolloutProblem
    fate: ProblemFate
    reward_mean: float | None = None


class ProblemSource(Protocol):
    def next_batch(self, size: int, *, step: int, attempt: int) -> list[RolloutProblem]:
        """SIZE problems for rollout attempt ATTEMPT of STEP (draws are seeded from them, never from history)."""
        ...

    def observe(self, step: int, fates: Sequence[Fate]) -> None:
        """What became of problems this source gave out: difficulty-filtered, trained or expired at STEP."""
        ...

    def start_iteration(self, iteration: int) -> None: ...

    def step_metrics(self) -> dict[str, float]:
        """The source's own metrics since the last call (metrics.jsonl keys, `serl.rundir`)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called on resume, after the run's append-only files were cut back to the checkpoint."""
        ...

    def close(self) -> None: ...


class DatasetSource:
    """Walks a dataset in a fresh seeded permutation each epoch; the state is just (epoch, position)."""

    def __init__(self, problems: list[Problem], seed: int):
        if not problems:
            raise ValueError("the training dataset is empty")
        self.problems = problems
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(f"{self.seed}-epoch-{epoch}").shuffle(order)
        return order

    def next_batch(self, size: int, *, step: int = 0, attempt: int = 0) -> list[RolloutProblem]:
        """The next SIZE problems of the walk (STEP and ATTEMPT do not matter: the walk is the state)."""
        batch = []
        while len(batch) < size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            problem = self.problems[self._order[self.position]]
            self.position += 1
            batch.append(RolloutProblem(uid=str(problem.id), text=problem.prompt, label=problem.label))
        return batch

    def observe(self, step: int, fates: Sequence[Fate]) -> None:
        """A dataset keeps no record of fates: the rollout log has them."""

    def start_iteration(self, iteration: int) -> None:
        """Iterations do not change the walk."""

    def step_metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)

    def close(self) -> None:
        pass
