"""In-training evaluation: greedy pass@1 of the current policy on the configured math sets, written to RUN_DIR/eval/
(per-question answers and the metrics) and logged; optionally a sampled pass on a slice of each set (mean@n, maj@n,
and TTRL's label and reward accuracy, which need votes and labels); and the collapse guard's labelled canary set."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serl.config import SerlConfig
from serl.data import Problem
from serl.io import append_jsonl, atomic_write_json
from serl.rundir import RunDir

CANARY_NAME = "canary"


def set_name(spec: str) -> str:
    """The short name metrics and files use for an evaluation set: a file's stem, or the embedded set's name."""
    return spec.removeprefix("embedded:") if spec.startswith("embedded:") else Path(spec).stem


def load_eval_sets(cfg: SerlConfig) -> tuple[dict[str, list[Problem]], list[Problem]]:
    """(the eval sets by short name, the canary's questions): loaded once, for the evaluation and for the
    contamination check of generated problems."""
    from serl.data import load_problems

    e = cfg.eval
    sets = {
        set_name(spec): load_problems(spec, e.input_key, e.label_key, max_samples=e.max_samples) for spec in e.datasets
    }
    canary = []
    if e.canary:
        canary = load_problems(e.canary, e.input_key, e.label_key, max_samples=e.canary_max_samples)
    return sets, canary


class TrainingEval:
    def __init__(
        self,
        cfg: SerlConfig,
        engine: Any,
        model: Any,
        tokenizer: Any,
        run_dir: Path,
        logger: Any,
        main: bool,
        sets: dict[str, list[Problem]],
        canary: Sequence[Problem] = (),
    ):
        self.cfg, self.engine, self.model, self.tokenizer = cfg, engine, model, tokenizer
        self.run, self.logger, self.main = RunDir(run_dir), logger, main
        self.sets, self.canary_set = sets, list(canary)

    def __call__(self, step: int) -> dict[str, float]:
        """Evaluate the policy as it is after STEP training steps (0: the initial policy)."""
        e = self.cfg.eval
        if not self.sets:  # a canary alone
            return {}
        self.logger.phase("eval", f"step {step}")
        started = time.perf_counter()
        results: dict[str, float] = {}
        for short, problems in self.sets.items():
            metrics, records = self._greedy(problems)
            results.update({f"{short}/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
            if self.main:
                append_jsonl(self.run.eval_answers(step, short), records, fsync=False)
            if e.n_samples > 1:
                results.update({f"{short}/{k}": v for k, v in self._sampled(problems[: e.sample_max_samples]).items()})
        if self.main:
            atomic_write_json(self.run.eval_metrics(step), {"step": step, "metrics": results})
        self.logger.log_eval(step, results)
        self.logger.phase("eval", f"done in {time.perf_counter() - started:.0f}s")
        return results

    def canary(self, step: int) -> float:
        """Greedy pass@1 on the canary set (its answers go to eval/ as the set `canary`)."""
        self.logger.phase("eval", f"step {step}: canary")
        metrics, records = self._greedy(self.canary_set)
        if self.main:
            append_jsonl(self.run.eval_answers(step, CANARY_NAME), records, fsync=False)
        return float(metrics["pass@1"])

    def _greedy(self, problems: Sequence[Problem]) -> tuple[dict[str, Any], list[dict]]:
        return self._generate(problems, n=1, temperature=0.0)

    def _generate(self, problems: Sequence[Problem], **sampling: Any) -> tuple[dict[str, Any], list[dict]]:
        """evaluate_math with the eval's prompt format and token budget, on the policy in eval mode."""
        from serl.evaluation import evaluate_math

        cfg = self.cfg
        self.model.eval()
        fmt = cfg.eval.prompt_format or cfg.rollout.prompt_format
        return evaluate_math(
            self.engine, self.tokenizer, problems, fmt=fmt, max_new_tokens=cfg.eval.max_new_tokens, **sampling
        )

    def _sampled(self, problems: Sequence[Problem]) -> dict[str, float]:
        """mean@n, maj@n, pass@n of n samples per question, and the vote's health against the labels."""
        from serl.reward import batch_metrics, score_groups

        cfg, e = self.cfg, self.cfg.eval
        metrics, records = self._generate(
            problems, n=e.n_samples, temperature=e.sample_temperature, top_p=e.sample_top_p, seed=cfg.train.seed
        )
        out = {k: v for k, v in metrics.items() if k.startswith(("mean@", "maj@", "pass@")) and k != "pass@1"}
        r = cfg.reward
        votes = score_groups(
            [record["responses"] for record in records],
            num_workers=r.num_workers,
            extractor=r.extractor,
            method=r.majority_method,
            timeout_s=r.timeout_s,
            no_majority=r.no_majority,
        )
        truth = [[1.0 if ok else 0.0 for ok in record["correct"]] for record in records]
        health = batch_metrics(votes, gt_rewards=truth)
        out |= {key: float(health[key]) for key in ("label_accuracy", "reward_accuracy", "majority_ratio")}
        return out
