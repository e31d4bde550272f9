"""Math benchmarks: load a set in the Qwen2.5-Math layout, generate, score with the ground-truth reward.

Protocol (reference §6.2): the `raw` prompt is `question + "\\n"` with no chat template; greedy decoding scores one
response per question (pass@1); sampling (n > 1, T 1.0, top_p 0.95) reports mean@n, pass@k (unbiased) and maj@k,
the majority taken by the reward module's vote (ties and all-distinct groups go to the first response, as the
reference's `most_common`). Only the response is scored, never the prompt, with `serl.reward.gt_rewards`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serl.data import DataError, Problem, load_problems
from serl.evaluation.metrics import majority_accuracy_by_votes, mean, sample_ks, sampled_metrics
from serl.evaluation.runner import run_eval
from serl.rollout.base import Completion, RolloutEngine, SamplingParams

STOP = ("</s>", "<|im_end|>", "<|endoftext|>", "\n\n\n")  # the reference's vllm_gen_outputs.py stop strings
FORMATS = ("raw", "chat", "chat_boxed")
INPUT_KEYS = ("question", "problem")  # the reference's question field, falling back to problem
BREAKDOWN_FIELDS = ("level", "subject", "type")  # reported per value when every question has the field
SAMPLING_TEMPERATURE, SAMPLING_TOP_P = 1.0, 0.95  # the reference's maj@K sampling


def resolve_dataset(spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(name, source) for a file path, or for a set name looked up under data_dir.

    A name is found as NAME.jsonl or NAME/test.jsonl in data_dir or one of its subdirectories, so both
    `--data-dir shared/data/math` and `--data-dir shared/data` find gsm8k, and the latter finds mmlu_pro too.
    'embedded:NAME' (the generated arithmetic sets) and 'org/name[:split]' (a hub dataset) go to `load_problems`.
    """
    if os.fspath(spec).startswith("embedded:"):
        return os.fspath(spec).removeprefix("embedded:"), os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        name = path.parent.name if path.stem in ("test", "train", "validation") else path.stem
        return name, str(path)
    spec = os.fspath(spec)
    if data_dir is not None and "/" not in spec and not path.suffix:
        root = Path(data_dir).expanduser()
        for folder in [root, *sorted(p for p in root.glob("*") if p.is_dir())]:
            for candidate in (folder / f"{spec}.jsonl", folder / spec / "test.jsonl"):
                if candidate.is_file():
                    return spec, str(candidate)
        raise DataError(f"no data set {spec!r} under {root} (have: {', '.join(_set_names(root)) or 'nothing'})")
    if "/" in spec and not path.suffix and not path.exists():
        return spec.replace("/", "_").replace(":", "_"), spec  # a hub dataset
    raise DataError(f"{spec}: file not found (pass a .jsonl path, or a set name with --data-dir)")


def _set_names(root: Path) -> list[str]:
    files = [*root.glob("*.jsonl"), *root.glob("*/*.jsonl"), *root.glob("*/*/test.jsonl")]
    return sorted({f.parent.name if f.stem == "test" else f.stem for f in files} - {root.name})


def load_math(
    spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *, max_samples: int | None = None
) -> tuple[str, list[Problem]]:
    """(name, problems) of a math set; labels are the `answer` field (a `\\boxed{}` string in the shared sets)."""
    name, source = resolve_dataset(spec, data_dir)
    return name, load_problems(source, INPUT_KEYS, "answer", max_samples=max_samples)


def math_prompt(question: str, fmt: str = "raw", tokenizer: Any = None) -> str:
    """The prompt text: raw is `question + "\\n"` (reference `pure` template); chat formats use the tokenizer."""
    if fmt == "raw":
        return f"{question}\n".strip(" ")
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if tokenizer is None:
        raise ValueError(f"prompt format {fmt!r} needs a tokenizer")
    from serl.rollout.formats import format_prompt

    return format_prompt(tokenizer, question, fmt)


def math_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Dataset metrics recomputed from per-question records, with breakdowns by level/subject/type where present."""
    correct = [[bool(c) for c in record["correct"]] for record in records]
    majority = None
    if records and "majority" in records[0]:
        majority = [{int(k): int(v) for k, v in record["majority"].items()} for record in records]
    metrics: dict[str, Any] = sampled_metrics(correct, majority)
    if majority is not None and records and all("majority_votes" in record for record in records):
        n = metrics["samples"]
        winners = [row[n] for row in majority]
        votes = [int(record["majority_votes"]) for record in records]
        metrics["majority_by_votes"] = majority_accuracy_by_votes(correct, winners, votes)
    breakdowns = {}
    for field in BREAKDOWN_FIELDS:
        values = [record.get("meta", {}).get(field) for record in records]
        if any(value is None for value in values) or len(set(map(str, values))) < 2:
            continue
        groups: dict[str, list[float]] = {}
        for value, row in zip(values, correct, strict=True):
            groups.setdefault(str(value), []).append(mean([float(c) for c in row]))
        breakdowns[field] = {
            value: {"questions": len(scores), "pass@1": mean(scores)} for value, scores in sorted(groups.items())
        }
    if breakdowns:
        metrics["breakdowns"] = breakdowns
    return metrics


def score_responses(
    groups: Sequence[Sequence[str]], labels: Sequence[str | None]
) -> tuple[list[list[bool]], list[list[str | None]], list[dict[str, int]] | None, list[int] | None]:
    """(correct, extracted answers, majority index per k, majority votes) for each question's n responses.

    The majority is None for n = 1; for n > 1 it maps each k of `sample_ks(n)` (as a string, as JSON keeps it) to
    the winning response among the first k, and the votes are how many of all n responses agree with the winner.
    """
    from serl.reward.extract import extract_answer
    from serl.reward.ground_truth import gt_rewards
    from serl.reward.majority import score_groups

    n = len(groups[0])
    if any(len(group) != n for group in groups) or len(labels) != len(groups):
        raise ValueError("every question needs the same number of responses, and one label")
    rewards = gt_rewards([text for group in groups for text in group], [label for label in labels for _ in range(n)])
    correct = [[reward == 1.0 for reward in rewards[g * n : (g + 1) * n]] for g in range(len(groups))]
    if n == 1:
        found = [extract_answer(group[0]) for group in groups]
        return correct, [[answer.text if answer else None] for answer in found], None, None
    ks = sample_ks(n)
    # one vote per prefix length; ties and all-distinct groups go to the first response, as the reference's maj@K
    votes = score_groups([group[:k] for group in groups for k in ks], no_majority="first")
    per_question = [votes[g * len(ks) : (g + 1) * len(ks)] for g in range(len(groups))]
    majority = [{str(k): vote.majority_index for k, vote in zip(ks, row, strict=True)} for row in per_question]
    votes_at_n = [row[-1].majority_size for row in per_question]
    return correct, [row[-1].answers for row in per_question], majority, votes_at_n


def score_math_batch(
    problems: Sequence[Problem], prompts: Sequence[str], groups: Sequence[Sequence[Completion]]
) -> list[dict]:
    """One record per problem: prompt, responses, extracted answers, gold, correctness per response, majority."""
    texts = [[completion.text for completion in group] for group in groups]
    correct, answers, majority, votes = score_responses(texts, [problem.label for problem in problems])
    records = []
    for g, (problem, prompt, group) in enumerate(zip(problems, prompts, groups, strict=True)):
        record = {
            "id": problem.id,
            "prompt": prompt,
            "responses": texts[g],
            "finish_reasons": [completion.finish_reason for completion in group],
            "extracted": answers[g],
            "gold": problem.label,
            "correct": correct[g],
            "meta": {field: problem.meta[field] for field in BREAKDOWN_FIELDS if field in problem.meta},
        }
        if majority is not None and votes is not None:
            record["majority"] = majority[g]
            record["majority_votes"] = votes[g]
        records.append(record)
    return records


def evaluate_math(
    engine: RolloutEngine,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    fmt: str = "raw",
    n: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int = 1024,
    stop: Sequence[str] = STOP,
    seed: int | None = 0,
    batch_size: int = 64,
    records_path: str | Path | None = None,
    extra_settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    description: str = "math",
) -> tuple[dict[str, Any], list[dict]]:
    """Evaluate `problems`; returns (metrics, per-question records). Usable in a training loop (no files, quiet).

    temperature/top_p default to greedy (0, 1) for n = 1 and to the reference's sampling (1.0, 0.95) for n > 1.
    records_path: append records there as batches finish, resuming from records already in it.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if temperature is None:
        temperature = 0.0 if n == 1 else SAMPLING_TEMPERATURE
    if top_p is None:
        top_p = 1.0 if temperature == 0 else SAMPLING_TOP_P
    if temperature == 0 and n > 1:
        raise ValueError("n > 1 with greedy decoding gives n identical responses; set a temperature")
    params = SamplingParams(
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, stop=tuple(stop), seed=seed
    )
    prompts = [math_prompt(problem.prompt, fmt, tokenizer) for problem in problems]
    settings = {"task": "math", "format": fmt, "n": n, "temperature": temperature, "top_p": top_p}
    settings |= {"max_new_tokens": max_new_tokens, "stop": list(stop), "seed": seed, **(extra_settings or {})}
    records = run_eval(
        engine,
        problems,
        prompts,
        params=params,
        n=n,
        score_batch=score_math_batch,
        batch_size=batch_size,
        records_path=records_path,
        settings=settings,
        overwrite=overwrite,
        progress=progress,
        description=description,
    )
    return math_metrics(records), records
