"""Seeds derived from what a draw is for, so that a resumed run replays exactly what an uninterrupted one does."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A seed from (run seed, purpose, step, attempt, ...): draws never depend on how the run got there."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")
