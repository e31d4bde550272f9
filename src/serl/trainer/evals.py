"""In-training evaluation: greedy pass@1 of the current policy on the configured math sets, written to RUN_DIR/eval/
(per-question answers and the metrics) and logged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from serl.config import SerlConfig
from serl.io import append_jsonl, atomic_write_json
from serl.rundir import RunDir


class TrainingEval:
    def __init__(
        self, cfg: SerlConfig, engine: Any, model: Any, tokenizer: Any, run_dir: Path, logger: Any, main: bool
    ):
        from serl.data import load_problems

        e = cfg.eval
        self.cfg, self.engine, self.model, self.tokenizer = cfg, engine, model, tokenizer
        self.run, self.logger, self.main = RunDir(run_dir), logger, main
        self.sets = {
            name: load_problems(name, e.input_key, e.label_key, max_samples=e.max_samples) for name in e.datasets
        }

    def __call__(self, step: int) -> dict[str, float]:
        """Evaluate the policy as it is after STEP training steps (0: the initial policy)."""
        from serl.evaluation import evaluate_math

        cfg = self.cfg
        self.logger.phase("eval", f"step {step}")
        started = time.perf_counter()
        self.model.eval()
        results: dict[str, float] = {}
        for name, problems in self.sets.items():
            metrics, records = evaluate_math(
                self.engine,
                self.tokenizer,
                problems,
                fmt=cfg.eval.prompt_format or cfg.rollout.prompt_format,
                n=1,
                temperature=0.0,
                max_new_tokens=cfg.eval.max_new_tokens,
            )
            short = Path(name).stem if not name.startswith("embedded:") else name.removeprefix("embedded:")
            results.update({f"{short}/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
            if self.main:
                append_jsonl(self.run.eval_answers(step, short), records, fsync=False)
        if self.main:
            atomic_write_json(self.run.eval_metrics(step), {"step": step, "metrics": results})
        self.logger.log_eval(step, results)
        self.logger.phase("eval", f"done in {time.perf_counter() - started:.0f}s")
        return results
