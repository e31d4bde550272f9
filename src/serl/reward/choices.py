"""The named choices of the self-reward, one list each: the config loader checks `reward.*` values against these
Literal types, and the reward functions check their arguments against the same lists. Free of math-verify and sympy,
so that reading a config stays cheap."""

from __future__ import annotations

from typing import Literal, get_args

Extractor = Literal["math", "choice", "number"]
MajorityMethod = Literal["fast", "reference"]  # fast: identical rewards, clustered | reference: all pairs
NoMajority = Literal["zero", "first"]  # a group where no two responses agree: all 0 | one-hot on response 0 (reference)
GtMatch = Literal["verify", "contains"]
# controls, never for real training: shuffle = the kept groups' rewards permuted across them (same mean, no signal);
# invert = 1 - reward (a sabotaged reward, for testing collapse guards)
RewardControl = Literal["none", "shuffle", "invert"]

EXTRACTORS: tuple[str, ...] = get_args(Extractor)
MAJORITY_METHODS: tuple[str, ...] = get_args(MajorityMethod)
NO_MAJORITY: tuple[str, ...] = get_args(NoMajority)
GT_MATCHES: tuple[str, ...] = get_args(GtMatch)
REWARD_CONTROLS: tuple[str, ...] = get_args(RewardControl)
