"""`serl config show PRESET`: print a resolved configuration."""

from __future__ import annotations

import typer

from serl.cli.app import app

config_app = typer.Typer(help="Inspect configuration presets.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    preset: str = typer.Argument("cpu-demo", help="Packaged preset name or a YAML path."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. --set algo.kl_coef=1e-4 (repeatable)."),
) -> None:
    """Print PRESET resolved with overrides, as YAML."""
    from serl.config import ConfigError, dump_yaml, load_config

    try:
        cfg = load_config(preset, set_)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(dump_yaml(cfg), nl=False)


@config_app.command("list")
def list_() -> None:
    """List the packaged presets."""
    from serl.config import list_presets

    for name in list_presets():
        typer.echo(name)
