"""`serl train`: run the SeRL loop from a preset, with overrides, and resume a killed run exactly."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from serl.cli.app import app


@app.command()
def train(
    preset: str = typer.Option("cpu-demo", "--preset", "-p", help="Packaged preset name or a YAML path."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. --set algo.kl_coef=1e-4 (repeatable)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Where outputs go (default runs/<preset>-<time>)."),
    resume: Path | None = typer.Option(None, "--resume", help="Resume the run in this directory exactly."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on the console."),
    json_log: bool = typer.Option(False, "--json-log", help="One JSON object per event on stdout (for clusters)."),
    report: bool = typer.Option(True, help="Write report.html and plots when training ends."),
) -> None:
    """Train with self-instruction and majority-vote rewards (or maj / gt modes), per the preset."""
    import logging

    from serl.config import ConfigError, load_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if resume is not None:
            # The run's own resolved config is the truth; later --set overrides still apply (e.g. max_steps).
            if not (resume / "config.yaml").exists():
                raise ConfigError(f"--resume {resume}: no config.yaml there; is it a serl run directory?")
            cfg = load_config(str(resume / "config.yaml"), set_)
        else:
            cfg = load_config(preset, set_)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    if quiet:
        cfg.log.console = "quiet"
    if json_log:
        cfg.log.console = "json"

    from serl.io import WriteError
    from serl.trainer import run_training

    try:
        final_dir = run_training(cfg, run_dir=resume or run_dir, resume=resume is not None)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    except WriteError as err:  # a full disk: the message names the file and how to resume
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    if report and os.environ.get("RANK", "0") == "0":  # under accelerate launch, rank 0 alone writes it
        from serl.report import write_report

        paths = write_report(final_dir)
        typer.echo(f"report: {paths['html'] if isinstance(paths, dict) else paths}")
    typer.echo(f"run dir: {final_dir}")
