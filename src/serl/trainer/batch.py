"""What a training step collects: the problem groups that passed the difficulty filter (carried over between steps
and into checkpoints as plain data), and the step's counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serl.rl.experience import Experience
from serl.trainer.sources import RolloutProblem


@dataclass
class PassedGroup:
    """One problem's rollout group that passed the difficulty filter, waiting to be trained on."""

    problem: RolloutProblem
    experience: Experience  # this group's n sequences
    reward_mean: float  # the difficulty filter's input
    passed_at_step: int

    def to_state(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, strings, lists) for a checkpoint."""
        return {
            "problem": self.problem.to_state(),
            "experience": self.experience.to_state(),
            "reward_mean": self.reward_mean,
            "passed_at_step": self.passed_at_step,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PassedGroup:
        problem, experience = RolloutProblem.from_state(state["problem"]), Experience.from_state(state["experience"])
        return cls(problem, experience, state["reward_mean"], state["passed_at_step"])


@dataclass
class StepStats:
    groups_scored: int = 0
    groups_kept: int = 0
    attempts: int = 0
    votes: list = field(default_factory=list)
    gt_rewards: list = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        self.times[phase] = self.times.get(phase, 0.0) + seconds
