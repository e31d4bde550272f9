"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def _tmpfs(path: Path, size: int) -> Iterator[Callable[[int], None] | None]:
    """Mount a tmpfs of SIZE bytes at PATH and yield resize(bytes); None where no tmpfs can be mounted (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        yield None
        return

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def tmpfs() -> Callable[..., Any]:
    """`with tmpfs(path, size) as resize:` puts a small real filesystem at PATH, to fill a disk for real; `resize` is
    None where mounting is not allowed (the caller skips)."""
    return _tmpfs
