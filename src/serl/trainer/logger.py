"""Run logging: metrics.jsonl (the source of truth for `serl report`), TensorBoard, optional wandb, and the console
(a rich progress display with phase and ETA, a quiet mode, or JSON lines for clusters)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from serl import rundir as names
from serl.io import append_jsonl
from serl.rundir import RunDir

log = logging.getLogger("serl")

KEY_METRICS = (  # shown on each step's console line, under the short name
    (names.MAJORITY_VOTING_REWARD, "reward"),
    (names.MAJORITY_RATIO_MEAN, "maj"),
    (names.KEPT_RATIO, "kept"),
    (names.TRAIN + "loss", "loss"),
    (names.TRAIN + "kl", "kl"),
    (names.TRAIN + "entropy", "ent"),
    (names.STEP_TIME, "s"),
)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


class RunLogger:
    def __init__(self, run_dir: Path, mode: str, total_steps: int, tensorboard: bool, wandb_cfg: dict | None):
        self.run_dir = run_dir
        self.mode = mode
        self.metrics_path = RunDir(run_dir).metrics
        self.console = Console(stderr=True)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(RunDir(run_dir).tensorboard))
        self._wandb = None
        if wandb_cfg is not None:
            try:
                import wandb
            except ImportError as err:
                raise RuntimeError("log.wandb=true needs the wandb extra: pip install 'serl-rl[wandb]'") from err
            self._wandb = wandb.init(**wandb_cfg)
        self._progress: Progress | None = None
        self._task = None
        self.total_steps = total_steps
        self._phase = "start"
        if mode == "rich" and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[phase]:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )

    def __enter__(self) -> RunLogger:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total_steps, phase="start", info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def reset_total(self, total_steps: int, completed: int) -> None:
        self.total_steps = total_steps
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total_steps, completed=completed)

    def advance_to(self, step: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step)

    def phase(self, name: str, info: str = "") -> None:
        """Show the current phase: generate, filter, rollout, reward, experience, train, eval, save."""
        self._phase = name
        if self.mode == "json":
            print(json.dumps({"event": "phase", "phase": name, "info": info}), flush=True)
        elif self._progress is not None and self._task is not None:
            self._progress.update(self._task, phase=name, info=info)
        elif self.mode == "rich":
            print(f"[{time.strftime('%H:%M:%S')}] {name} {info}", file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "info", "message": message}), flush=True)
        elif self.mode == "rich":
            self.console.print(message)
        log.info(message)

    def warning(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "warning", "message": message}), flush=True)
        else:
            self.console.print(f"[yellow]warning:[/] {message}")
        log.warning(message)

    def log_step(self, metrics: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, [metrics])
        step = int(metrics[names.STEP])
        scalars = _scalars(metrics)
        if self._tb is not None:
            for key, value in scalars.items():
                if key not in (names.STEP, names.ITERATION):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self.mode == "json":
            print(json.dumps({"event": "step", **metrics}), flush=True)
        elif self.mode == "rich":
            parts = [f"{short}={scalars[key]:.4g}" for key, short in KEY_METRICS if key in scalars]
            evals = [f"{k.removeprefix(names.EVAL)}={v:.3f}" for k, v in scalars.items() if k.startswith(names.EVAL)]
            self.console.print(f"step {step:>4} | " + " ".join(parts + evals))
        self.advance_to(step)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        if self._tb is not None:
            for key, value in _scalars(metrics).items():
                self._tb.add_scalar(names.EVAL + key, value, step)
        if self.mode == "json":
            print(json.dumps({"event": "eval", "step": step, **metrics}), flush=True)
        elif self.mode == "rich":
            text = " ".join(f"{k}={v:.3f}" for k, v in _scalars(metrics).items())
            self.console.print(f"eval @ step {step}: {text}")
