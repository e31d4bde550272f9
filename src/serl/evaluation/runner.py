"""The evaluation loop shared by the math and MMLU-Pro evaluations.

Prompts go to the rollout engine a batch at a time; each batch is scored and, when a per-question file is given,
appended to it before the next batch starts, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serl.data import Problem
from serl.evaluation.outputs import EvalOutputError, append_records, open_records
from serl.rollout.base import Completion, RolloutEngine, SamplingParams

# (problems of a batch, their prompts, the n completions of each) -> one record per problem, in the same order
ScoreBatch = Callable[[list[Problem], list[str], list[list[Completion]]], list[dict]]


def run_eval(
    engine: RolloutEngine,
    problems: Sequence[Problem],
    prompts: Sequence[str],
    *,
    params: SamplingParams,
    n: int,
    score_batch: ScoreBatch,
    batch_size: int = 64,
    records_path: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    description: str = "eval",
) -> list[dict]:
    """Generate and score every problem; return one record per problem, in problem order.

    With records_path, records already in that file (same settings) are reused and new ones appended per batch.
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    if len(prompts) != len(problems):
        raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
    if batch_size < 1 or n < 1:
        raise ValueError(f"batch_size and n must be at least 1, got {batch_size} and {n}")
    ids = [problem.id for problem in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique to match records on resume")
    done: dict[str, dict] = {}
    if records_path is not None:
        done = open_records(records_path, settings or {}, overwrite=overwrite)
    for problem, prompt in zip(problems, prompts, strict=True):
        if problem.id in done and done[problem.id].get("prompt") != prompt:
            raise EvalOutputError(
                f"{records_path}: question {problem.id} has a different prompt than when it was written; "
                "choose another output directory or pass --overwrite"
            )
    todo = [i for i, problem in enumerate(problems) if problem.id not in done]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(description, total=len(problems), completed=len(problems) - len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            batch_problems = [problems[i] for i in batch]
            batch_prompts = [prompts[i] for i in batch]
            completions = engine.generate(batch_prompts, params, n=n)
            if len(completions) != len(batch) * n:
                raise RuntimeError(f"engine returned {len(completions)} completions for {len(batch)} x {n}")
            groups = [completions[j * n : (j + 1) * n] for j in range(len(batch))]
            records = score_batch(batch_problems, batch_prompts, groups)
            if records_path is not None:
                append_records(records_path, records)
            done.update((record["id"], record) for record in records)
            bar.advance(task, len(batch))
    return [done[problem.id] for problem in problems]
