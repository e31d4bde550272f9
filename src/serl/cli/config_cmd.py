"""`serl config` (being built)."""

from serl.cli.app import app  # noqa: F401
