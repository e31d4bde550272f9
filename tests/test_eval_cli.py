"""`serl eval` end to end with the embedded model: math + MMLU-Pro slices, metrics files, resume, --compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serl.cli import app
from serl.evaluation.math_eval import math_metrics
from serl.evaluation.mmlu_pro import mmlu_metrics
from serl.evaluation.outputs import read_records

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "mmlu_pro").is_dir(), reason="shared data not present")


def run(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


@pytest.mark.slow
def test_eval_math_and_mmlu_pro_then_compare(tmp_path) -> None:
    out = tmp_path / "base"
    common = ["--data-dir", str(DATA), "--out", str(out), "--max-new-tokens", "16", "-q"]
    result = run("math_500", "mmlu_pro", "--max-samples", "2", "--categories", "law,math", *common)
    assert result.exit_code == 0, result.output
    assert "math_500: 2 questions" in result.output and "mmlu_pro: 4 questions" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["math_500"]["questions"] == 2 and "level" in metrics["math_500"]["breakdowns"]
    math_records = read_records(out / "math_500.jsonl")
    recomputed = math_metrics(math_records)
    assert {k: v for k, v in metrics["math_500"].items() if k != "wall_s"} == recomputed

    mmlu_records = read_records(out / "mmlu_pro.jsonl")
    assert {r["category"] for r in mmlu_records} == {"law", "math"}
    record = mmlu_records[0]
    assert set(record) == {
        "id", "category", "prompt", "response", "finish_reason", "extracted", "pred", "guessed", "gold", "correct",
    }  # fmt: skip
    assert record["prompt"].endswith("Answer: Let's think step by step.") and "Question:" not in record["response"]
    assert record["guessed"] is False
    assert {k: v for k, v in metrics["mmlu_pro"].items() if k != "wall_s"} == mmlu_metrics(mmlu_records)
    assert (out / "metrics.md").read_text().count("| STEM | Humanities | Social | Other | Avg |") == 1

    # the same command again resumes: nothing is regenerated, and the files are unchanged
    before = (out / "math_500.jsonl").read_bytes()
    assert run("math_500", "--max-samples", "2", *common).exit_code == 0
    assert (out / "math_500.jsonl").read_bytes() == before

    # changed settings are refused with a one-line error
    refused = CliRunner().invoke(app, ["eval", "math_500", *common, "--max-new-tokens", "20"])
    assert refused.exit_code == 2 and "different settings (max_new_tokens)" in refused.output

    other = tmp_path / "other" / "base"  # a second run with the same directory name
    other.mkdir(parents=True)
    (other / "metrics.json").write_text(json.dumps({"math_500": {"pass@1": 0.5}}))
    compared = run("--compare", str(out), str(other))
    assert compared.exit_code == 0
    groups = " | ".join(f"mmlu_pro {g}" for g in ("STEM", "Humanities", "Social", "Other", "Avg"))
    assert f"| run | math_500 | {groups} |" in compared.output
    assert f"| {other} | 50.0 | – | – | – | – | – |" in compared.output  # rows labelled by full path


def test_eval_bad_input_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["eval", "gsm9k", "--data-dir", str(DATA / "math"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no data set 'gsm9k'" in result.output
    result = CliRunner().invoke(app, ["eval", "--compare", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not found" in result.output
