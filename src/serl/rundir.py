"""The run directory's layout and the names of the metrics written into it, in one place: the loop, the logger, the
self-instruction log and `serl report` all read them from here.

    RUN_DIR/
      config.yaml                    the resolved config (a resume reads it back)
      metrics.jsonl                  one record per step, keyed by the metric names below
      tensorboard/                   the same scalars
      rollouts/step_XXXXXX.jsonl     every scored group: problem, responses, rewards, vote
      instructions/iter_XXXX.jsonl   every generated candidate and each later fate (serl mode)
      eval/step_XXXXXX.json          evaluation metrics; eval/step_XXXXXX_<set>.jsonl the answers
      checkpoints/                   resumable checkpoints (`trainer/checkpoint.py`), iter_XX_hf/ exports
      debug/                         log.debug_dump
      report/                        `serl report` output
      .ranks/rankN/                  scratch folders of ranks > 0 under a multi-process launch

Append-only files (metrics, rollouts, instructions, eval answers) are cut back to a checkpoint's sizes on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------------
# Metric names (metrics.jsonl keys). A key says which quantity it holds.

STEP = "step"
ITERATION = "iteration"
ATTEMPTS = "attempts"  # rollout rounds this step needed to fill its batch

# The difficulty filter; its input is each group's mean raw reward (see selfinstruct/difficulty.py).
FILTER_GROUPS = "filter/groups_"  # the prefix of the group counts
GROUPS_SCORED = "filter/groups_scored"
GROUPS_KEPT = "filter/groups_kept"
GROUPS_REJECTED_DIFFICULTY = "filter/groups_rejected_difficulty"
KEPT_RATIO = "filter/kept_ratio"  # kept / scored groups

# The self-reward over every scored group of the step (serl.reward.batch_metrics, under this prefix).
REWARD = "reward/"
MAJORITY_VOTING_REWARD = "reward/majority_voting_reward"
MAJORITY_RATIO_MEAN = "reward/majority_ratio_mean"  # the vote's winner count / n, averaged over groups
MAJORITY_RATIO_HIST = "reward/majority_ratio_hist"
NO_MAJORITY_FRAC = "reward/no_majority_frac"
DISTINCT_ANSWERS = "reward/distinct_answers"  # answer clusters per group: 1 everywhere is a collapse sign
LABEL_ACCURACY = "reward/label_accuracy"
REWARD_ACCURACY = "reward/reward_accuracy"
GROUND_TRUTH_RATIO = "reward/ground_truth_ratio"
PASS_AT_N = "reward/pass@n"

TRAIN = "train/"  # the policy update's figures (PolicyTrainer.train), under this prefix
SELFINSTRUCT = "selfinstruct/"  # candidate fates of the step's generation rounds
KEPT_POOL = "selfinstruct/kept_pool"  # a size, not a count
CONTAMINATED = "selfinstruct/contaminated"  # candidates with ROUGE-L F > threshold against an evaluation question
CONTAMINATED_SHARE = "selfinstruct/contaminated_share"  # of the candidates that passed the rules
SCREENED = "selfinstruct/screened"  # candidates that passed the rules: the contamination check's denominator
NEAR_HELD_OUT = "selfinstruct/near_held_out"  # candidates with ROUGE-L F > 0.7 against an evaluation question
NEAR_HELD_OUT_SHARE = "selfinstruct/near_held_out_share"  # of the screened ones, whatever the drop bound
CANARY = "canary/"  # the labelled canary set of the collapse guard: pass@1, best, and the guard's actions
EVAL = "eval/"
TIME = "time/"
STEP_TIME = "time/step_s"
ELAPSED = "elapsed_s"


def time_key(phase: str) -> str:
    """`time/<phase>_s`: seconds the step spent in PHASE (generate, rollout, reward, experience, train)."""
    return f"{TIME}{phase}_s"


# ---------------------------------------------------------------------------------------------------------------------
# Paths.

RANKS = ".ranks"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts"

    def rollout_file(self, step: int) -> Path:
        return self.rollouts / f"step_{step:06d}.jsonl"

    @property
    def instructions(self) -> Path:
        return self.root / "instructions"

    def instruction_log(self, iteration: int) -> Path:
        return self.instructions / f"iter_{iteration:04d}.jsonl"

    def instruction_logs(self) -> list[Path]:
        """Every iteration's instruction log, in iteration order."""
        return sorted(self.instructions.glob("iter_*.jsonl"))

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def eval_metrics(self, step: int) -> Path:
        return self.eval / f"step_{step:06d}.json"

    def eval_answers(self, step: int, dataset: str) -> Path:
        return self.eval / f"step_{step:06d}_{dataset}.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def canary_best(self) -> Path:
        """The collapse guard's best canary state (train.canary_action=rollback), a checkpoint root of its own."""
        return self.checkpoints / "canary_best"

    def hf_export(self, iteration: int) -> Path:
        return self.checkpoints / f"iter_{iteration:02d}_hf"

    @property
    def debug(self) -> Path:
        return self.root / "debug"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def rank_dir(self, rank: int) -> Path:
        """Where rank RANK writes: the run dir itself for rank 0, a scratch folder for the others."""
        return self.root if rank == 0 else self.root / RANKS / f"rank{rank}"

    def append_only_files(self) -> list[Path]:
        """The files a resume cuts back to a checkpoint's sizes, those that exist."""
        files = [self.metrics]
        for folder in (self.instructions, self.rollouts, self.eval):
            files.extend(sorted(folder.glob("*.jsonl")))
        return [file for file in files if file.exists()]
