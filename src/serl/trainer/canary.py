"""The collapse guard's bookkeeping (pure): long majority-vote runs can collapse suddenly onto confident wrong answers
(arXiv 2505.21444) while every label-free signal still looks healthy, so a small labelled canary set is evaluated
every few steps and the run acts when its accuracy stays below the best seen by more than a margin.

`CanaryGuard.observe(step, accuracy)` says what the loop should do: "best" (a new best: keep this state for a
rollback), "act" (`patience` evaluations in a row below best - margin: stop, or roll back), or "ok"."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["ok", "best", "act"]


@dataclass
class CanaryGuard:
    patience: int  # evaluations in a row below best - margin before acting; 0 = watch only, never act
    margin: float
    best: float = -1.0
    best_step: int = -1
    below: int = 0  # consecutive evaluations below best - margin
    rollbacks: int = 0

    def observe(self, step: int, accuracy: float) -> Verdict:
        if accuracy > self.best:
            self.best, self.best_step, self.below = accuracy, step, 0
            return "best"
        self.below = self.below + 1 if accuracy < self.best - self.margin else 0
        return "act" if self.patience and self.below >= self.patience else "ok"

    def rolled_back(self) -> None:
        """After a rollback the policy is the best state again: count afresh."""
        self.below = 0
        self.rollbacks += 1

    def metrics(self, accuracy: float) -> dict[str, float]:
        return {
            "pass@1": accuracy,
            "best": self.best,
            "best_step": self.best_step,
            "below_best": self.below,
            "rollbacks": self.rollbacks,
        }

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("patience", "margin")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
