"""`serl eval`: math benchmarks and MMLU-Pro with the paper's protocol, and `--compare` of finished runs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from serl.cli.app import app

MMLU_PRO_NAMES = ("mmlu_pro", "mmlu-pro")


@app.command("eval")
def evaluate(
    targets: list[str] = typer.Argument(
        None,
        help="Data sets (a .jsonl path, or a name with --data-dir: gsm8k, math_500, mmlu_pro …); with "
        "--compare, run directories.",
        show_default=False,
    ),
    model: str = typer.Option("embedded:smollm2-135m", "--model", "-m", help="Model spec (see serl.models)."),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        envvar="SERL_DATA_DIR",
        help="Where set names are looked up (NAME.jsonl or NAME/test.jsonl).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/eval-<model>)."),
    fmt: str = typer.Option(
        "raw", "--format", help="Math prompt format: raw (question + newline) | chat | chat_boxed."
    ),
    n: int = typer.Option(1, "--n", help="Samples per question: 1 = greedy pass@1; K > 1 adds mean@K, maj@K, pass@K."),
    temperature: float | None = typer.Option(None, help="Default 0 for --n 1, else 1.0."),
    top_p: float | None = typer.Option(None, "--top-p", help="Default 1.0 greedy, else 0.95."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Default 1024 math, 2048 MMLU-Pro."),
    max_samples: int | None = typer.Option(
        None, "--max-samples", help="Evaluate a slice: the first N questions (per category for MMLU-Pro)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Questions per generate call and per results append."),
    engine_name: str = typer.Option("hf", "--engine", help="hf (CPU or GPU) | vllm (GPU)."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    dtype: str | None = typer.Option(
        None, help="HF engine compute dtype, e.g. bfloat16 (~2.5x faster with AVX512-BF16); default: the model's."
    ),
    seed: int = typer.Option(0, help="Sampling seed."),
    shots: int = typer.Option(0, "--shots", help="MMLU-Pro: k-shot CoT exemplars per question (0 = zero-shot)."),
    exemplars: Path | None = typer.Option(
        None, help="MMLU-Pro: JSONL of exemplars (validation-split layout with cot_content and category)."
    ),
    categories: str | None = typer.Option(None, help="MMLU-Pro: comma-separated categories to evaluate."),
    random_guess: bool = typer.Option(
        False, "--random-guess", help="MMLU-Pro: score unanswered questions with a random option (reference quirk)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier results in --out instead of resuming."),
    compare: bool = typer.Option(False, "--compare", help="Print a side-by-side table of the run directories given."),
    metric: str = typer.Option("pass@1", help="With --compare: the math metric shown (pass@1, maj@16, …)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate a model on math sets and MMLU-Pro; results resume from OUT if interrupted."""

    if not targets:
        typer.echo("error: name at least one data set (or run directories with --compare)", err=True)
        raise typer.Exit(2)
    if compare:
        _run_guarded(_compare, targets, metric)
        return
    options = _Options(
        data_dir=data_dir,
        fmt=fmt,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
        shots=shots,
        exemplars=exemplars,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        random_guess=random_guess,
        overwrite=overwrite,
        progress=not quiet,
        dtype=dtype,
    )
    _run_guarded(_evaluate, targets, model, out or Path("runs") / f"eval-{_slug(model)}", engine_name, device, options)


@dataclass(frozen=True)
class _Options:
    data_dir: Path | None
    fmt: str
    n: int
    temperature: float | None
    top_p: float | None
    max_new_tokens: int | None
    max_samples: int | None
    batch_size: int
    seed: int
    shots: int
    exemplars: Path | None
    categories: list[str] | None
    random_guess: bool
    overwrite: bool
    progress: bool
    dtype: str | None = None


def _run_guarded(fn: Callable[..., None], *args: Any) -> None:
    """Run FN; bad input (data, output directory, options) becomes a one-line error and exit code 2."""
    from serl.data import DataError
    from serl.evaluation.outputs import EvalOutputError
    from serl.models import ModelSpecError

    try:
        fn(*args)
    except (DataError, EvalOutputError, ModelSpecError, ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


def _compare(runs: list[str], metric: str) -> None:
    from serl.evaluation.outputs import compare_table, load_metrics

    labels = [Path(run).name or run for run in runs]
    if len(set(labels)) < len(labels):
        labels = list(runs)
    typer.echo(compare_table({label: load_metrics(run) for label, run in zip(labels, runs, strict=True)}, metric))


def _is_mmlu_pro(name: str, source: str) -> bool:
    from serl.data import load_problems

    if name.lower() in MMLU_PRO_NAMES or "mmlu-pro" in source.lower():
        return True
    first = load_problems(source, ("question", "problem"), max_samples=1)[0]
    return isinstance(first.meta.get("options"), list) and "category" in first.meta


def _evaluate(targets: list[str], model: str, out: Path, engine_name: str, device: str | None, opts: _Options) -> None:
    from serl.evaluation.math_eval import FORMATS, resolve_dataset
    from serl.evaluation.outputs import write_metrics

    if opts.fmt not in FORMATS:
        raise ValueError(f"unknown --format {opts.fmt!r}; expected one of {', '.join(FORMATS)}")
    # resolve every data set before loading the model, so a typo fails in a second
    resolved = [resolve_dataset(target, opts.data_dir) for target in targets]
    engine, tokenizer = _make_engine(model, engine_name, device, opts.seed, opts.dtype)
    for name, source in resolved:
        started = time.perf_counter()
        if _is_mmlu_pro(name, source):
            metrics = _eval_mmlu_pro(engine, tokenizer, name, source, model, out, opts)
            summary = f"accuracy {100 * metrics['accuracy']:.1f}%, Avg {100 * metrics['groups']['Avg']:.1f}%"
            summary += f", {metrics['no_answer']} unanswered"
            if opts.random_guess:
                summary += f" ({metrics['guessed']} guessed)"
        else:
            metrics = _eval_math(engine, tokenizer, name, source, model, out, opts)
            summary = ", ".join(f"{key} {100 * value:.1f}%" for key, value in metrics.items() if "@" in key)
        metrics["wall_s"] = round(time.perf_counter() - started, 1)  # this invocation only, when resumed
        write_metrics(out, name, metrics)
        typer.echo(f"{name}: {metrics['questions']} questions, {summary} ({metrics['wall_s']} s)")
    typer.echo(f"results: {out / 'metrics.md'}\n")
    typer.echo((out / "metrics.md").read_text(encoding="utf-8"))


def _eval_math(engine, tokenizer, name: str, source: str, model: str, out: Path, opts: _Options) -> dict:
    from serl.evaluation.math_eval import evaluate_math, load_math
    from serl.evaluation.outputs import records_path

    _, problems = load_math(source, max_samples=opts.max_samples)
    metrics, _ = evaluate_math(
        engine,
        tokenizer,
        problems,
        fmt=opts.fmt,
        n=opts.n,
        temperature=opts.temperature,
        top_p=opts.top_p,
        max_new_tokens=opts.max_new_tokens or 1024,
        seed=opts.seed,
        batch_size=opts.batch_size,
        records_path=records_path(out, name),
        extra_settings={"model": model},
        overwrite=opts.overwrite,
        progress=opts.progress,
        description=name,
    )
    return metrics


def _eval_mmlu_pro(engine, tokenizer, name: str, source: str, model: str, out: Path, opts: _Options) -> dict:
    from serl.evaluation.mmlu_pro import evaluate_mmlu_pro, load_questions
    from serl.evaluation.outputs import records_path

    if opts.shots > 0 and opts.exemplars is None:
        raise ValueError("--shots > 0 needs --exemplars FILE (the validation split is not in the shared data)")
    metrics, _ = evaluate_mmlu_pro(
        engine,
        load_questions(source, max_samples=opts.max_samples, categories=opts.categories),
        exemplars=load_questions(opts.exemplars) if opts.exemplars else (),
        shots=opts.shots,
        count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
        max_new_tokens=opts.max_new_tokens or 2048,
        random_guess=opts.random_guess,
        batch_size=opts.batch_size,
        records_path=records_path(out, name),
        extra_settings={"model": model},
        overwrite=opts.overwrite,
        progress=opts.progress,
    )
    return metrics


def _slug(model: str) -> str:
    name = model.removeprefix("embedded:").rstrip("/")
    return os.path.basename(name).replace(":", "-") or "model"


def _make_engine(
    model: str, engine_name: str, device: str | None, seed: int, dtype: str | None = None
) -> tuple[Any, Any]:
    """The rollout engine and tokenizer for MODEL: HF on the policy loaded here, or vLLM from the model spec."""
    import torch

    from serl.models import load_policy, load_tokenizer
    from serl.rollout import ENGINES, make_engine

    if engine_name not in ENGINES:
        raise ValueError(f"unknown --engine {engine_name!r}; expected one of {', '.join(ENGINES)}")
    if engine_name == "vllm":
        tokenizer = load_tokenizer(model)
        # alone on the GPU: vLLM's usual memory share, and no sleep mode (nothing else needs the memory)
        options = {"gpu_memory_utilization": 0.9, "enable_sleep": False, "dtype": dtype}
        return make_engine("vllm", model, tokenizer, seed=seed, **options), tokenizer
    policy, tokenizer = load_policy(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return make_engine("hf", policy, tokenizer, dtype=dtype), tokenizer
