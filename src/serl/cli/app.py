"""The typer application object; each command lives in its own module under serl.cli."""

import typer

app = typer.Typer(
    name="serl",
    help="SeRL: self-play reinforcement learning for LLMs from a few hundred seed problems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
