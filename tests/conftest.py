"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def _link_large_files(source: str, target: str) -> None:
    if os.path.getsize(source) > 16 << 20:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


@pytest.fixture
def copy_run() -> Callable[..., None]:
    """Copy a run directory for a resume: files over 16 MB are hard links, the rest are copies.

    A resume never writes into an existing checkpoint or export (it builds a new one and renames it; old ones are
    unlinked), and the logs it appends to or cuts back are small, so the source run stays as it was.
    """

    def copy(source: Path, target: Path, ignore: Callable | None = None) -> None:
        shutil.copytree(source, target, ignore=ignore, copy_function=_link_large_files)

    return copy
