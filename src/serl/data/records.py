"""The typed problem record every loader returns, and the one error type for bad data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DataError(ValueError):
    """Unreadable or malformed problem data. The message is one line and names the file and line (or record)."""


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    label: str | None  # gold answer as text; None when the data has no labels (SeRL never trains on them)
    meta: dict[str, Any] = field(default_factory=dict)  # every other field of the source record
