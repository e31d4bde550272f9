"""Every shared benchmark file loads with the expected record count (counts from ../shared/data/README.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serl.data import load_problems

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")

MATH_COUNTS = {
    "aime24": 30, "amc23": 40, "aqua": 254, "asdiv": 2215, "carp_en": 976, "college_math": 2818, "gaokao2023en": 385,
    "gsm8k": 1319, "math_500": 500, "mawps": 2065, "minerva_math": 272, "mmlu_stem": 3018, "olympiadbench": 675,
    "sat_math": 32, "svamp": 1000, "seed_math_train_500": 500, "seed_math_train_500_difficulty_0.2_0.8": 500,
}  # fmt: skip


def test_the_math_directory_holds_exactly_the_known_files() -> None:
    assert {path.stem for path in (SHARED_DATA / "math").glob("*.jsonl")} == set(MATH_COUNTS)


@pytest.mark.parametrize("name", sorted(MATH_COUNTS))
def test_math_file_loads(name: str) -> None:
    problems = load_problems(str(SHARED_DATA / "math" / f"{name}.jsonl"), ["question", "problem"], "answer")
    assert len(problems) == MATH_COUNTS[name]
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.prompt.strip() and isinstance(p.label, str) for p in problems)


def test_seed_set_ids_are_the_math_train_idx() -> None:
    seed = load_problems(
        str(SHARED_DATA / "math" / "seed_math_train_500_difficulty_0.2_0.8.jsonl"), "problem", "answer"
    )
    assert all(0 <= int(p.id) < 7500 for p in seed)
    assert {"level", "subject", "solution", "unique_id"} <= set(seed[0].meta)


def test_mmlu_pro_loads_quickly() -> None:
    start = time.perf_counter()
    problems = load_problems(str(SHARED_DATA / "mmlu_pro" / "test.jsonl"), "question", "answer")
    elapsed = time.perf_counter() - start
    assert len(problems) == 12032
    assert len({p.id for p in problems}) == 12032  # question_id
    assert all(p.label in "ABCDEFGHIJ" and len(p.label) == 1 for p in problems)
    assert {"options", "category", "answer_index"} <= set(problems[0].meta)
    assert elapsed < 3.0, f"loading 12,032 MMLU-Pro questions took {elapsed:.2f}s"  # ~0.2 s on a quiet machine
