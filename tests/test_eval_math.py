"""Math evaluation with the embedded model on slices of the shared sets: schema, recompute, resume, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from serl.data import DataError
from serl.evaluation.math_eval import STOP, evaluate_math, load_math, math_metrics, resolve_dataset
from serl.evaluation.outputs import EvalOutputError, read_records

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "math").is_dir(), reason="shared data not present")
RECORD_KEYS = {"id", "prompt", "responses", "finish_reasons", "extracted", "gold", "correct", "meta"}


@pytest.fixture(scope="session")
def engine_and_tokenizer():
    from serl.models import load_policy
    from serl.rollout.hf import HFEngine

    model, tokenizer = load_policy()
    return HFEngine(model, tokenizer, max_batch_size=16), tokenizer


@needs_data
def test_resolve_by_name_or_path() -> None:
    assert resolve_dataset("gsm8k", DATA)[1].endswith("math/gsm8k.jsonl")
    assert resolve_dataset("mmlu_pro", DATA) == ("mmlu_pro", str(DATA / "mmlu_pro" / "test.jsonl"))
    assert resolve_dataset(DATA / "math" / "svamp.jsonl")[0] == "svamp"
    with pytest.raises(DataError, match=r"no data set 'gsm9k'.*gsm8k"):
        resolve_dataset("gsm9k", DATA)
    assert resolve_dataset("embedded:arithmetic-test") == ("arithmetic-test", "embedded:arithmetic-test")
    name, problems = load_math("math_500", DATA, max_samples=2)
    assert name == "math_500" and problems[0].prompt.startswith("Convert the point")  # 'problem' field
    assert problems[0].label.startswith("\\boxed{") and problems[0].meta["level"] == 2


@needs_data
@pytest.mark.slow
def test_greedy_slice_schema_recompute_and_resume(engine_and_tokenizer, tmp_path) -> None:
    engine, tokenizer = engine_and_tokenizer
    _, problems = load_math("gsm8k", DATA, max_samples=4)
    path = tmp_path / "gsm8k.jsonl"
    metrics, records = evaluate_math(engine, tokenizer, problems[:3], max_new_tokens=16, records_path=path)
    assert [record["id"] for record in records] == [p.id for p in problems[:3]]
    for record, problem in zip(records, problems, strict=False):
        assert set(record) == RECORD_KEYS
        assert record["prompt"] == problem.prompt + "\n"  # the reference's raw format
        assert record["gold"] == problem.label
        assert len(record["responses"]) == len(record["correct"]) == len(record["extracted"]) == 1
        assert record["finish_reasons"][0] in ("eos", "stop", "length")
        assert not any(stop in record["responses"][0] for stop in STOP)
    assert metrics == math_metrics(read_records(path))
    assert metrics["questions"] == 3 and metrics["samples"] == 1

    written = path.read_bytes()
    metrics4, records4 = evaluate_math(engine, tokenizer, problems, max_new_tokens=16, records_path=path)
    assert path.read_bytes().startswith(written)  # the first three were reused, not regenerated
    assert len(read_records(path)) == 4 and records4[:3] == records
    assert metrics4 == math_metrics(read_records(path))
    with pytest.raises(EvalOutputError, match="max_new_tokens"):
        evaluate_math(engine, tokenizer, problems, max_new_tokens=17, records_path=path)


@needs_data
@pytest.mark.slow
def test_sampling_reports_mean_maj_pass_at_k(engine_and_tokenizer) -> None:
    engine, tokenizer = engine_and_tokenizer
    _, problems = load_math("svamp", DATA, max_samples=2)
    metrics, records = evaluate_math(engine, tokenizer, problems, n=4, max_new_tokens=16, seed=1)
    assert {"mean@4", "pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4"} <= set(metrics)
    assert metrics["pass@1"] <= metrics["pass@2"] <= metrics["pass@4"]
    for record in records:
        assert len(record["responses"]) == 4 and set(record["majority"]) == {"1", "2", "4"}
        assert record["majority"]["1"] == 0
    assert metrics == math_metrics(records)
    with pytest.raises(ValueError, match="greedy"):
        evaluate_math(engine, tokenizer, problems, n=4, temperature=0.0)
