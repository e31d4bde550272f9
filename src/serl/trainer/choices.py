"""The named choices of the training loop, one list each, checked by the config loader (`train.*`, `log.console`)."""

from __future__ import annotations

from typing import Literal

TrainMode = Literal["serl", "maj", "gt"]  # self-instruction + majority | dataset prompts + majority | labels
Carryover = Literal["expire", "keep"]  # extra passing groups: expire after one step (reference, logged) | keep
Console = Literal["rich", "quiet", "json"]
CanaryAction = Literal["stop", "rollback"]  # the collapse guard: stop with a saved state | reload the best canary state
