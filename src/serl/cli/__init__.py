"""`serl` command line: train, generate, eval, report, config and chat."""

from serl.cli import chat, config_cmd, evaluate, generate, report, train  # noqa: F401  (registers the commands)
from serl.cli.app import app

__all__ = ["app"]
