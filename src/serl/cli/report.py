"""`serl report RUN_DIR`: plots, summary.md and a self-contained report.html for a finished or live run."""

from __future__ import annotations

from pathlib import Path

import typer

from serl.cli.app import app


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `serl train`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write (default RUN_DIR/report)."),
) -> None:
    """Write PNG plots, summary.md and report.html (plots embedded) for RUN_DIR; print report.html's path."""
    import logging

    from serl.report import ReportError, write_report

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        paths = write_report(run_dir, out_dir=out)
    except ReportError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(str(paths["html"]))
