"""Reading a run directory for `serl report`: metrics.jsonl, eval/, instructions/ and config.yaml, as plain data.
Files only (no torch, no model); a run still being written (torn last lines, one step, missing keys, NaN) still
reads, and what was skipped is kept as notes for the report."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serl import rundir as names
from serl.io import read_jsonl
from serl.rundir import RunDir

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """A directory that cannot be reported on; the message is one line."""


@dataclass
class RunData:
    run_dir: Path
    steps: list[dict[str, Any]]  # one record per step, sorted; the last record wins for a repeated step
    evals: dict[str, dict[int, float]]  # dataset -> {step: pass@1}; step 0 is the initial policy
    instructions: list[dict[str, Any]]  # every self-instruction event from instructions/iter_*.jsonl
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped while reading, shown in the report
    # dataset -> {step: {question id: first response correct}} from eval/step_XXXXXX_<dataset>.jsonl
    answers: dict[str, dict[int, dict[str, bool]]] = field(default_factory=dict)
    # "dataset/metric" -> {step: value} for the sampled eval (mean@n, maj@n, label and reward accuracy)
    eval_extra: dict[str, dict[int, float]] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- reading


def finite(value: Any) -> float | None:
    """A plottable number, or None for missing, NaN, inf, bools and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    log.warning("%s", message)


def _read_records(run_dir: Path, path: Path, notes: list[str]) -> list[dict[str, Any]]:
    records, torn = read_jsonl(path)  # read_jsonl itself logs each line it skips
    if torn:
        notes.append(f"{path.relative_to(run_dir)}: ignored {torn} torn or invalid line(s)")
    return [r for r in records if isinstance(r, dict)]


def _read_steps(run_dir: Path, notes: list[str]) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, Any]] = {}
    for record in _read_records(run_dir, RunDir(run_dir).metrics, notes):
        step = record.get(names.STEP)
        if isinstance(step, int) and not isinstance(step, bool):
            by_step[step] = record
        else:
            _note(notes, "metrics.jsonl: ignored a record without an integer 'step'")
    return [by_step[s] for s in sorted(by_step)]


EXTRA_EVAL = re.compile(r".+/(mean@\d+|maj@\d+|label_accuracy|reward_accuracy)")


def _read_evals(
    run_dir: Path, steps: list[dict[str, Any]], notes: list[str]
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """(pass@1 per dataset and step, the sampled eval's metrics per "dataset/metric" and step), from
    eval/step_XXXXXX.json and the `eval/<dataset>/...` metrics."""
    evals: dict[str, dict[int, float]] = {}
    extra: dict[str, dict[int, float]] = {}

    def add(step: int, key: str, value: Any) -> None:
        if (number := finite(value)) is None:
            return
        if key.endswith("/pass@1"):
            evals.setdefault(key.removesuffix("/pass@1"), {})[step] = number
        elif EXTRA_EVAL.fullmatch(key):
            extra.setdefault(key, {})[step] = number

    for record in steps:
        for key, value in record.items():
            if key.startswith(names.EVAL):
                add(record[names.STEP], key.removeprefix(names.EVAL), value)
    for path in sorted(RunDir(run_dir).eval.glob("step_*.json")):
        if not re.fullmatch(r"step_\d+\.json", path.name):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            step, metrics = int(data["step"]), dict(data["metrics"])
        except Exception as err:  # one bad file must not hide the rest of the report
            _note(notes, f"eval/{path.name}: ignored ({type(err).__name__}: {err})".splitlines()[0])
            continue
        for key, value in metrics.items():
            add(step, key, value)

    def ordered(table: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
        return {name: dict(sorted(points.items())) for name, points in sorted(table.items())}

    return ordered(evals), ordered(extra)


def _read_answers(run_dir: Path, notes: list[str]) -> dict[str, dict[int, dict[str, bool]]]:
    """Per-question correctness (first response) per dataset and step, for paired confidence intervals."""
    answers: dict[str, dict[int, dict[str, bool]]] = {}
    for path in sorted(RunDir(run_dir).eval.glob("step_*_*.jsonl")):
        match = re.fullmatch(r"step_(\d+)_(.+)\.jsonl", path.name)
        if match is None:
            continue
        correct = {}
        for record in _read_records(run_dir, path, notes):
            marks = record.get("correct")
            if "id" in record and isinstance(marks, list) and marks:
                correct[str(record["id"])] = bool(marks[0])
        if correct:
            answers.setdefault(match.group(2), {})[int(match.group(1))] = correct
    return {name: dict(sorted(points.items())) for name, points in sorted(answers.items())}


def paired_interval(run: RunData, dataset: str, step: int) -> tuple[float, float, float] | None:
    """(accuracy at STEP − at step 0, and its paired-bootstrap 95 % interval) over the questions both evaluated;
    None without per-question answers for both."""
    from serl.evaluation.metrics import paired_bootstrap

    points = run.answers.get(dataset, {})
    if 0 not in points or step not in points:
        return None
    shared = sorted(points[0].keys() & points[step].keys())
    if not shared:
        return None
    result = paired_bootstrap([points[0][q] for q in shared], [points[step][q] for q in shared], resamples=4000)
    return result.difference, result.low, result.high


def load_run(run_dir: str | Path) -> RunData:
    """Read everything the report needs from RUN_DIR; raise ReportError when there is nothing to report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    notes: list[str] = []
    steps = _read_steps(run_dir, notes)
    instructions = []
    for path in RunDir(run_dir).instruction_logs():
        instructions.extend(_read_records(run_dir, path, notes))
    evals, eval_extra = _read_evals(run_dir, steps, notes)
    answers = _read_answers(run_dir, notes)
    for name, points in answers.items():  # sets scored only per question (the canary) still get a curve
        for step, correct in points.items():
            evals.setdefault(name, {}).setdefault(step, sum(correct.values()) / len(correct))
    evals = {name: dict(sorted(points.items())) for name, points in sorted(evals.items())}
    if not steps and not evals and not instructions:
        raise ReportError(
            f"{run_dir}: nothing to report (no metrics.jsonl lines, eval/step_*.json or "
            "instructions/iter_*.jsonl); is it a serl run directory?"
        )
    config_text, config = "", {}
    config_path = RunDir(run_dir).config
    if config_path.exists():
        config_text = config_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(config_text)
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as err:
            _note(notes, f"config.yaml: not valid YAML ({str(err).splitlines()[0]})")
    return RunData(run_dir, steps, evals, instructions, config_text, config, notes, answers, eval_extra)


def series(run: RunData, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) for KEY over the run, skipping steps where it is missing or not finite."""
    points = [(r[names.STEP], v) for r in run.steps if (v := finite(r.get(key))) is not None]
    return [s for s, _ in points], [v for _, v in points]


KNOWN_FATES = (
    "accepted",
    "kept",
    "trained",
    "rejected:novelty",
    "rejected:contamination",
    "rejected:difficulty",
    "expired",
)


def fate_group(fate: Any, by_rule: bool = True) -> str:
    """The name a fate is counted under: known fates as they are, `rejected:rule:<name>` per rule (or all
    together when not BY_RULE), and an unknown `a:b` under `a:other`, so a new fate neither crashes nor
    floods the plot."""
    if not isinstance(fate, str) or not fate:
        return "unknown"
    if fate.startswith("rejected:rule:"):
        return fate if by_rule else "rejected:rule"
    if fate in KNOWN_FATES or ":" not in fate:
        return fate
    return fate.split(":", 1)[0] + ":other"


def fate_order(name: str) -> tuple[int, str]:
    order = [*KNOWN_FATES[:3], "rejected:rule", *KNOWN_FATES[3:]]
    matches = (i for i, known in enumerate(order) if name == known or name.startswith(known + ":"))
    return next(matches, len(order)), name


def fate_key(item: tuple[str, int]) -> tuple[int, str]:
    return fate_order(item[0])


TIME_PHASES = ("generate", "rollout", "reward", "train", "eval")  # drawn first, in this order


def logged_keys(run: RunData, prefixes: tuple[str, ...]) -> set[str]:
    return {key for record in run.steps for key in record if key.startswith(prefixes)}


def count_keys(run: RunData) -> list[str]:
    """The per-step counters of the difficulty filter and of self-instruction, as logged."""
    counters = logged_keys(run, (names.FILTER_GROUPS, names.SELFINSTRUCT))
    return sorted(counters - {names.KEPT_POOL, names.CONTAMINATED_SHARE, names.NEAR_HELD_OUT_SHARE})  # a size, ratios


def time_keys(run: RunData) -> list[tuple[str, str]]:
    """(key, phase) for each logged `time/<phase>_s` but the whole step: known phases first, then others."""
    keys = {k for k in logged_keys(run, (names.TIME,)) if k.endswith("_s")} - {
        names.STEP_TIME,
        names.time_key("elapsed"),
    }
    known = [names.time_key(phase) for phase in TIME_PHASES]
    ordered = [k for k in known if k in keys] + sorted(keys - set(known))
    return [(key, key.removeprefix(names.TIME).removesuffix("_s")) for key in ordered]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


Lines = list[tuple[str, list[int], list[float]]]  # (label, steps, values)


def present(run: RunData, keys: list[tuple[str, str]]) -> Lines:
    """(label, steps, values) for each (key, label) with at least one finite value."""
    return [(label, *xy) for key, label in keys if (xy := series(run, key))[0]]
