"""Package namespaces whose names are imported from their submodules on first use (PEP 562).

A package `__init__` lists where each public name lives; `from serl.rl import PolicyTrainer` then imports
`serl.rl.policy_trainer` at that moment, and importing a light submodule such as `serl.rl.choices` (which the config
loader reads) no longer imports torch, math-verify or transformers as a side effect."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for PACKAGE, where EXPORTS maps each public name to the submodule defining it."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def dir_() -> list[str]:
        return sorted(exports)

    return getattr_, dir_
