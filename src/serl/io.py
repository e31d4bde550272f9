"""Crash-safe file helpers: atomic writes (temp file, fsync, rename) and append-only JSONL with torn-line tolerance."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WriteError(OSError):
    """A write that failed (most often a full disk), naming the file; a bare OSError from write() names none.

    `hint` is for whoever knows what to do next (the trainer adds how to resume)."""

    def __init__(self, errno: int | None = None, strerror: str = "", filename: str = "", hint: str = ""):
        super().__init__(errno, strerror, filename)
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.filename}: cannot write ({self.strerror})"
        return f"{text}; {self.hint}" if self.hint else text


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside PATH, fsync, then rename over PATH: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(err.errno, err.strerror, str(path)) from err
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]], fsync: bool = True) -> None:
    """Append whole lines in one write, so a crash leaves at most one torn last line."""
    lines = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in records)
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
    except OSError as err:  # a part of the lines may be written: a torn last line, as after a crash
        raise WriteError(err.errno, err.strerror, str(path)) from err


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Read a JSONL file written by append_jsonl; return (records, torn) where torn counts ignored bad lines.

    Only an unterminated last line is expected after a crash; any undecodable line is skipped and counted.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    records, torn = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                torn += 1
                log.warning("%s:%d: ignoring a torn or invalid JSON line", path, lineno)
    return records, torn


def truncate_to(path: str | Path, size: int) -> None:
    """Cut a file back to SIZE bytes (a position recorded in a checkpoint); a missing file stays missing."""
    path = Path(path)
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def flush_and_uncache(path: str | Path) -> None:
    """fsync a large file written once (or every file under a directory), then drop it from the page cache.

    A checkpoint is read back only on resume. Flushing it first means the rename that publishes it never points at
    unwritten data; dropping it keeps gigabytes of it from filling memory, and on VMs whose fresh memory is slow to
    get (benchmarks/bench_checkpoint.py --memory-gb) the next checkpoint reuses the same pages instead.
    """
    path = Path(path)
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if not file.is_file():
            continue
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
