"""Every `serl ...` command the README shows parses: a renamed or removed option fails here, not for a user."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serl.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    commands = []
    for line in README.read_text().splitlines():
        line = line.strip()
        if line.startswith("serl "):
            commands.append(line.split("  #")[0].strip())
    return commands


def test_the_readme_shows_serl_commands() -> None:
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command: str) -> None:
    # click parses every option before it acts on --help, so an unknown option is still an error here
    result = CliRunner().invoke(app, [*shlex.split(command)[1:], "--help"])
    assert result.exit_code == 0, f"{command!r}: {result.output}"


def test_an_unknown_option_is_caught_by_this_check() -> None:
    result = CliRunner().invoke(app, ["eval", "gsm8k", "--datasets", "gsm8k", "--help"])
    assert result.exit_code != 0
