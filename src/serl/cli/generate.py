"""`serl generate`: self-instruction alone: generate, filter, optionally difficulty-score, write problems."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from serl.cli.app import app

if TYPE_CHECKING:
    from serl.selfinstruct.standalone import GenerationOutcome


@app.command()
def generate(
    model: str = typer.Option("embedded:smollm2-135m", "--model", "-m", help="Model spec (see serl.models)."),
    n: int = typer.Option(50, "--n", help="Problems to produce (that pass every filter)."),
    seeds: str = typer.Option(
        "embedded:arithmetic", "--seeds", help="Seeds: .jsonl/.json/.parquet, embedded:NAME or a hub id."
    ),
    input_key: str = typer.Option("problem", "--input-key", help="Problem field in --seeds."),
    out: Path = typer.Option(Path("generated.jsonl"), "--out", "-o", help="Output JSONL of problems."),
    rollouts: int = typer.Option(
        0, "--rollouts", help="Difficulty-score each problem with N majority-voted rollouts (0: no filter)."
    ),
    difficulty_low: float = typer.Option(0.2, "--low", help="Lowest majority ratio kept."),
    difficulty_high: float = typer.Option(0.8, "--high", help="Highest majority ratio kept."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Generation length (paper: 1024)."),
    rollout_max_new_tokens: int = typer.Option(256, "--rollout-max-new-tokens", help="Rollout length."),
    prompts_per_round: int = typer.Option(8, "--prompts-per-round", help="Prompts per engine call."),
    max_rounds: int = typer.Option(100, "--max-rounds", help="Give up after this many rounds."),
    shots: int = typer.Option(8, "--shots", help="Few-shot examples per prompt."),
    prompt_max_len: int = typer.Option(1024, "--prompt-max-len", help="Token budget of a generation prompt."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help='JSON with "system" and "user".'),
    scope: str = typer.Option("all", "--scope", help="Novelty scope: all | reference."),
    threshold: float = typer.Option(0.7, "--threshold", help="Reject when ROUGE-L F exceeds this."),
    faithful_capitalize: bool = typer.Option(
        False, "--faithful-capitalize", help="Lower-case all but the first character, as the reference does."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Log every candidate's fate to RUN_DIR/instructions/ (continues a log)."
    ),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    seed: int = typer.Option(0, help="Seed for example sampling and generation."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Generate new problems from seed problems with the model, keep those that pass the filters."""
    import random

    from rich.console import Console

    from serl.selfinstruct import InstructionLog
    from serl.selfinstruct.standalone import generate_problems

    console = Console(stderr=True, quiet=quiet)
    if scope not in ("all", "reference"):
        _fail(f"--scope must be 'all' or 'reference', got {scope!r}")
    if n < 1 or rollouts < 0 or rollouts == 1:
        _fail("--n must be at least 1 and --rollouts 0 or at least 2")
    try:
        loaded = _load(model, seeds, input_key, device, prompt_file, run_dir, console)
        engine, tokenizer, pools, instruction = loaded
        outcome = generate_problems(
            engine,
            tokenizer,
            pools,
            random.Random(seed),
            n=n,
            log=InstructionLog(run_dir) if run_dir else None,
            prompts_per_round=prompts_per_round,
            max_rounds=max_rounds,
            num_shots=shots,
            prompt_max_tokens=prompt_max_len,
            max_new_tokens=max_new_tokens,
            instruction=instruction,
            scope=scope,  # type: ignore[arg-type]
            threshold=threshold,
            faithful_capitalize=faithful_capitalize,
            rollouts=rollouts,
            rollout_max_new_tokens=rollout_max_new_tokens,
            difficulty_low=difficulty_low,
            difficulty_high=difficulty_high,
            on_round=lambda progress: console.print(_round_line(progress, n, rollouts > 0)),
        )
    except (ValueError, OSError) as err:  # DataError, ModelSpecError and bad prompt files are ValueErrors
        _fail(str(err))
    _write_output(out, outcome.problems)
    Console().print(_fate_table(outcome, rollouts > 0))
    summary = f"{len(outcome.problems)} problems in {outcome.rounds} rounds, {outcome.seconds:.0f} s -> {out}"
    if len(outcome.problems) < n:
        _fail(f"only {summary}; raise --max-rounds or check the model's outputs")
    console.print(summary)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _load(
    model: str,
    seeds: str,
    input_key: str,
    device: str | None,
    prompt_file: Path | None,
    run_dir: Path | None,
    console: Any,
) -> tuple[Any, Any, Any, Any]:
    """(engine, tokenizer, pools, instruction); the pools continue RUN_DIR's instruction log if any."""
    import torch

    from serl.data import load_problems
    from serl.models import load_policy
    from serl.rollout.hf import HFEngine
    from serl.selfinstruct import Pools, load_instruction, rebuild_pools

    instruction = load_instruction(prompt_file)
    seed_texts = [p.prompt for p in load_problems(seeds, input_key)]
    pools = rebuild_pools(run_dir, seed_texts) if run_dir else Pools(seeds=seed_texts)
    if pools.torn_lines:
        console.print(f"[yellow]ignored {pools.torn_lines} torn line(s) in {run_dir}/instructions[/]")
    with console.status(f"loading {model}"):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        policy, tokenizer = load_policy(model, device=device)
    return HFEngine(policy, tokenizer), tokenizer, pools, instruction


def _round_line(outcome: GenerationOutcome, n: int, difficulty: bool) -> str:
    fates = outcome.fates
    rules = sum(v for k, v in fates.items() if k.startswith("rejected:rule:"))
    line = (
        f"round {outcome.rounds}: {len(outcome.problems)}/{n} problems | {outcome.candidates} candidates: "
        f"rules -{rules}, novelty -{fates['rejected:novelty']}"
    )
    if difficulty:
        line += f", difficulty -{fates['rejected:difficulty']}"
    return line + f" | {outcome.seconds:.0f} s"


def _write_output(path: Path, problems: list[dict[str, Any]]) -> None:
    import json

    from serl.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems))


def _fate_rows(outcome: GenerationOutcome, difficulty: bool) -> list[tuple[str, int, str]]:
    """(fate, count, share) per row. Screening fates are shares of the candidates and sum to them; only
    accepted problems are difficulty-scored, so kept / rejected:difficulty are shares of (and sum to) those."""
    fates, total, accepted = outcome.fates, outcome.candidates, outcome.fates["accepted"]
    rules = sorted(k for k in fates if k.startswith("rejected:rule:"))
    rows = [(fate, fates[fate], total, "") for fate in ["accepted", *rules, "rejected:novelty"]]
    if difficulty:
        rows += [(fate, fates[fate], accepted, " of accepted") for fate in ("kept", "rejected:difficulty")]
    return [(fate, count, f"{count / of:.1%}{unit}" if of else "-") for fate, count, of, unit in rows]


def _fate_table(outcome: GenerationOutcome, difficulty: bool) -> Any:
    from rich.table import Table

    table = Table(title=f"Fates of {outcome.candidates} candidate problems")
    table.add_column("fate")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for fate, count, share in _fate_rows(outcome, difficulty):
        table.add_row(fate, str(count), share)
    return table
