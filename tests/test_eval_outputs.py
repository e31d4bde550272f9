"""Evaluation output files: resume after a torn write, settings guard, metrics files, --compare table."""

from __future__ import annotations

import json

import pytest

from serl.evaluation.outputs import (
    EvalOutputError,
    append_records,
    compare_table,
    load_metrics,
    open_records,
    read_records,
    write_metrics,
)

SETTINGS = {"task": "math", "n": 1, "stop": ("\n\n\n",)}


def test_resume_cuts_a_torn_last_line_and_keeps_whole_records(tmp_path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    assert open_records(path, SETTINGS) == {}
    append_records(path, [{"id": "0", "correct": [True]}, {"id": "1", "correct": [False]}])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "2", "corr')  # a crash mid-write
    done = open_records(path, SETTINGS)
    assert sorted(done) == ["0", "1"]
    append_records(path, [{"id": "2", "correct": [True]}])
    assert [record["id"] for record in read_records(path)] == ["0", "1", "2"]  # the new line is whole


def test_resume_with_other_settings_is_refused_unless_overwrite(tmp_path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    open_records(path, SETTINGS)
    append_records(path, [{"id": "0", "correct": [True]}])
    with pytest.raises(EvalOutputError, match=r"different settings \(n\)"):
        open_records(path, {**SETTINGS, "n": 4})
    assert open_records(path, {**SETTINGS, "n": 4}, overwrite=True) == {}
    assert not path.exists()


def test_metrics_files_merge_datasets_and_render_markdown(tmp_path) -> None:
    write_metrics(tmp_path, "gsm8k", {"questions": 10, "samples": 1, "pass@1": 0.25})
    everything = write_metrics(
        tmp_path,
        "mmlu_pro",
        {
            "questions": 4,
            "accuracy": 0.5,
            "groups": {"STEM": 0.5, "Humanities": None, "Social": 1.0, "Other": None, "Avg": 0.6},
            "by_category": {"math": {"questions": 4, "accuracy": 0.5}},
        },
    )
    assert set(everything) == {"gsm8k", "mmlu_pro"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == everything
    markdown = (tmp_path / "metrics.md").read_text()
    assert "| gsm8k | 10 | 25.0 |" in markdown
    assert "| 50.0 | – | 100.0 | – | 60.0 |" in markdown


def test_majority_accuracy_by_votes_renders_as_a_table(tmp_path) -> None:
    by_votes = {"2": {"questions": 3, "majority_correct": 1 / 3}, "5": {"questions": 1, "majority_correct": 1.0}}
    write_metrics(tmp_path, "l1", {"questions": 4, "samples": 8, "pass@1": 0.25, "majority_by_votes": by_votes})
    markdown = (tmp_path / "metrics.md").read_text()
    assert "**l1**: is the majority answer right? By its votes out of 8" in markdown
    assert "| 2 | 3 | 33.3 |" in markdown and "| 5 | 1 | 100.0 |" in markdown


def test_compare_table_side_by_side(tmp_path) -> None:
    write_metrics(tmp_path / "base", "asdiv", {"questions": 5, "pass@1": 0.4})
    write_metrics(tmp_path / "serl", "asdiv", {"questions": 5, "pass@1": 0.6})
    write_metrics(tmp_path / "serl", "svamp", {"questions": 5, "pass@1": 0.8})
    runs = {name: load_metrics(tmp_path / name) for name in ("base", "serl")}
    table = compare_table(runs)
    assert "| run | asdiv | svamp |" in table
    assert "| base | 40.0 | – |" in table
    assert "| serl | 60.0 | 80.0 |" in table
    with pytest.raises(EvalOutputError, match="not found"):
        load_metrics(tmp_path / "missing")
