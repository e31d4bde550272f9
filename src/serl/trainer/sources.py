"""Where a step's problems come from: a labelled dataset (maj and gt modes) or self-instruction (serl mode)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from serl.data import Problem


class StalledError(RuntimeError):
    """The policy produced no batch that passes the filters within the attempt budget."""


def derive_seed(*parts: object) -> int:
    """A seed from (run seed, purpose, step, attempt, ...): draws never depend on how the run got there."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class RolloutProblem:
    """A problem to roll out: `uid` is unique within the run (dataset id, or `gen-<int>` for generated problems)."""

    uid: str
    text: str
    label: str | None = None
    generated_id: int | None = None  # run-global id of a self-generated problem


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

    def next_batch(self, size: int) -> list[RolloutProblem]:
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

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
