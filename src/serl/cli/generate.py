"""`serl generate`: self-instruction alone: generate, filter, optionally difficulty-score, write problems; configured
by a preset and `--set` overrides like `serl train`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from serl.cli.app import app

if TYPE_CHECKING:
    from serl.selfinstruct.standalone import GenerationOutcome


@app.command()
def generate(
    preset: str = typer.Option("cpu-demo", "--preset", "-p", help="Packaged preset name or a YAML path."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. --set data.seed_path=seeds.jsonl."),
    n: int = typer.Option(50, "--n", help="Problems to produce (that pass every filter)."),
    out: Path = typer.Option(Path("generated.jsonl"), "--out", "-o", help="Output JSONL of problems."),
    difficulty: bool = typer.Option(
        False,
        "--difficulty/--no-difficulty",
        help="Roll each accepted problem out (rollout.*), majority-vote it (reward.*) and keep it when its mean reward "
        "lies within reward.difficulty_low/high, as serl train does.",
    ),
    max_rounds: int = typer.Option(100, "--max-rounds", help="Give up after this many rounds."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Log every candidate's fate to RUN_DIR/instructions/ (continues a log)."
    ),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Generate new problems from the seed problems with the model, keep those that pass the filters.

    The model, the seeds (data.seed_path, data.input_key), the generation prompt and sampling, the filters and the
    seed (train.seed) come from the preset and --set overrides, exactly as `serl train` reads them."""
    from rich.console import Console

    from serl.config import ConfigError, load_config
    from serl.selfinstruct import InstructionLog
    from serl.selfinstruct.standalone import generate_problems

    console = Console(stderr=True, quiet=quiet)
    if n < 1:
        _fail("--n must be at least 1")
    try:
        cfg = load_config(preset, set_)
        engine, tokenizer, pools = _load(cfg, device, run_dir, console)
        outcome = generate_problems(
            engine,
            tokenizer,
            pools,
            cfg,
            n=n,
            log=InstructionLog(run_dir) if run_dir else None,
            max_rounds=max_rounds,
            difficulty=difficulty,
            on_round=lambda progress: console.print(_round_line(progress, n, difficulty)),
        )
    except (ConfigError, ValueError, OSError) as err:  # DataError, ModelSpecError and bad prompt files are ValueErrors
        _fail(str(err))
    _write_output(out, outcome.problems)
    Console().print(_fate_table(outcome, difficulty))
    summary = f"{len(outcome.problems)} problems in {outcome.rounds} rounds, {outcome.seconds:.0f} s -> {out}"
    if len(outcome.problems) < n:
        _fail(f"only {summary}; raise --max-rounds or check the model's outputs")
    console.print(summary)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _load(cfg: Any, device: str | None, run_dir: Path | None, console: Any) -> tuple[Any, Any, Any]:
    """(engine, tokenizer, pools); the pools continue RUN_DIR's instruction log if any."""
    import torch

    from serl.data import load_problems
    from serl.models import load_policy
    from serl.rollout import engine_options, make_engine
    from serl.selfinstruct import Pools, load_instruction, rebuild_pools

    load_instruction(cfg.selfinstruct.prompt_file)  # a bad prompt file fails before the model loads
    seed_texts = [p.prompt for p in load_problems(cfg.data.seed_path, cfg.data.input_key, max_chars=cfg.data.max_chars)]
    pools = rebuild_pools(run_dir, seed_texts) if run_dir else Pools(seeds=seed_texts)
    if pools.torn_lines:
        console.print(f"[yellow]ignored {pools.torn_lines} torn line(s) in {run_dir}/instructions[/]")
    with console.status(f"loading {cfg.model.policy}"):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        policy, tokenizer = load_policy(cfg.model.policy, dtype=cfg.model.dtype, device=device)
    engine = make_engine(cfg.rollout.engine, policy, tokenizer, **engine_options(cfg.rollout, seed=cfg.train.seed))
    return engine, tokenizer, pools


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
