"""load_problems on real temp files: every format, id rule and error (with the exact file and line it names)."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serl.data import DataError, Problem, load_problems


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Objects are JSON-encoded; strings are written verbatim (blank lines, broken JSON)."""
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def data_error(expected_start: str, *args: Any, **kwargs: Any) -> str:
    """Call load_problems, require a one-line DataError starting with expected_start, and return its message."""
    with pytest.raises(DataError) as caught:
        load_problems(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(expected_start), message
    return message


# --- reading ---------------------------------------------------------------------------------------------------


def test_jsonl_records_become_problems_with_ids_labels_and_meta(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "set.jsonl",
        {"idx": 7, "problem": "1+1?", "answer": "2", "level": 1},
        "",  # blank lines are skipped
        {"idx": 9, "problem": "2*3?", "answer": 6, "level": 2},
        {"idx": 11, "problem": "half of 5?", "answer": 2.5, "level": 3},
    )
    problems = load_problems(path, "problem", "answer")  # a Path works as well as a str
    assert problems == [
        Problem("7", "1+1?", "2", {"level": 1}),
        Problem("9", "2*3?", "6", {"level": 2}),
        Problem("11", "half of 5?", "2.5", {"level": 3}),
    ]


def test_without_label_key_labels_are_none_and_the_label_stays_in_meta(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", {"problem": "1+1?", "answer": "2"})
    assert load_problems(str(path)) == [Problem("1", "1+1?", None, {"answer": "2"})]


def test_input_key_fallbacks_are_tried_in_order(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        {"question": "Q1", "answer": "a"},
        {"problem": "P2", "answer": "b"},
        {"question": "Q3", "problem": "P3", "answer": "c"},
    )
    problems = load_problems(str(path), ["question", "problem"], "answer")
    assert [p.prompt for p in problems] == ["Q1", "P2", "Q3"]
    assert problems[2].meta == {"problem": "P3"}  # the unused fallback is just another field


def test_ids_fall_back_to_line_numbers_when_no_id_field_is_complete_and_unique(tmp_path: Path) -> None:
    no_ids = write_jsonl(tmp_path / "no_ids.jsonl", {"problem": "a"}, "", {"problem": "b"})
    assert [p.id for p in load_problems(str(no_ids))] == ["1", "3"]  # physical line numbers
    partial = write_jsonl(tmp_path / "partial.jsonl", {"problem": "a", "id": "x"}, {"problem": "b"})
    assert [p.id for p in load_problems(str(partial))] == ["1", "2"]
    duplicated = write_jsonl(tmp_path / "dup.jsonl", {"problem": "a", "idx": 0}, {"problem": "b", "idx": 0})
    assert [p.id for p in load_problems(str(duplicated))] == ["1", "2"]


def test_id_keys_are_tried_in_order_and_id_key_overrides(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        {"problem": "a", "unique_id": "u/1", "question_id": 70, "name": "first"},
        {"problem": "b", "unique_id": "u/2", "question_id": 71, "name": "second"},
    )
    assert [p.id for p in load_problems(str(path))] == ["u/1", "u/2"]
    by_name = load_problems(str(path), id_key="name")
    assert [p.id for p in by_name] == ["first", "second"]
    assert by_name[0].meta == {"unique_id": "u/1", "question_id": 70}


def test_max_samples_keeps_the_first_records_and_reads_no_further(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", {"problem": "a"}, {"problem": "b"}, "{broken")
    assert [p.prompt for p in load_problems(str(path), max_samples=2)] == ["a", "b"]
    data_error(f"{path}:3: invalid JSON", str(path), max_samples=3)


def test_json_list_and_data_wrapper(tmp_path: Path) -> None:
    records = [{"question": "q0", "answer": 1}, {"question": "q1", "answer": 2}]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(records, indent=2))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": records, "version": 1}))
    expected = [Problem("0", "q0", "1", {}), Problem("1", "q1", "2", {})]  # record index is the id
    assert load_problems(str(as_list), "question", "answer") == expected
    assert load_problems(str(wrapped), "question", "answer") == expected


def test_json_lines_saved_as_json_are_read_line_by_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", {"problem": "a"}, {"problem": "b"})
    assert [p.prompt for p in load_problems(str(path))] == ["a", "b"]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "set.parquet"
    pq.write_table(pa.table({"problem": ["p0", "p1"], "answer": [3, 4], "level": ["L1", "L2"]}), path)
    assert load_problems(str(path), label_key="answer") == [
        Problem("0", "p0", "3", {"level": "L1"}),
        Problem("1", "p1", "4", {"level": "L2"}),
    ]


def test_utf8_bom_and_unicode_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + json.dumps({"problem": "Ä × π?"}, ensure_ascii=False).encode() + b"\n")
    assert load_problems(str(path))[0].prompt == "Ä × π?"


def test_embedded_sets_load_by_name_with_labels() -> None:
    train = load_problems("embedded:arithmetic")
    assert len(train) == 500 and all(p.label is not None and p.label.isdigit() for p in train)
    assert len(load_problems("embedded:arithmetic-test", max_samples=50)) == 50


# --- errors: each names the file and, where there is one, the line -------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    data_error(f"{missing}: file not found", str(missing))
    data_error(f"{tmp_path / 'sub' / 'nope'}: file not found", str(tmp_path / "sub" / "nope"))


def test_directory_and_unsupported_extension(tmp_path: Path) -> None:
    data_error(f"{tmp_path}: is a directory", str(tmp_path))
    csv = tmp_path / "set.csv"
    csv.write_text("problem\n1+1\n")
    data_error(f"{csv}: unsupported file type .csv", str(csv))


def test_invalid_json_line_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", {"problem": "a"}, "", '{"problem": "b",}')
    data_error(f"{path}:3: invalid JSON", str(path))


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", {"problem": "a"}, ["problem", "b"])
    data_error(f"{path}:2: expected a JSON object, found list", str(path))


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"problem": "a"}\n{"problem": "caf\xe9"}\n')
    data_error(f"{path}:2: not UTF-8 text", str(path))


def test_missing_key_names_line_and_available_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "keys.jsonl", {"question": "a"}, {"query": "b", "answer": "1"})
    message = data_error(f"{path}:2: missing key 'question' or 'problem'", str(path), ["question", "problem"])
    assert message.endswith("(available: query, answer)")


def test_missing_label_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "labels.jsonl", {"problem": "a", "answer": "1"}, {"problem": "b", "solution": "2"})
    data_error(f"{path}:2: missing label key 'answer' (available: problem, solution)", str(path), label_key="answer")


def test_non_string_and_empty_prompts(tmp_path: Path) -> None:
    number = write_jsonl(tmp_path / "number.jsonl", {"problem": "a"}, {"problem": 12})
    data_error(f"{number}:2: prompt 'problem' must be a string, found int", str(number))
    empty = write_jsonl(tmp_path / "empty_prompt.jsonl", {"problem": "  \n "})
    data_error(f"{empty}:1: prompt 'problem' is empty", str(empty))


@pytest.mark.parametrize("label", [None, ["1", "2"], {"value": 1}, True, float("nan")])
def test_label_must_be_a_string_or_a_finite_number(tmp_path: Path, label: Any) -> None:
    path = write_jsonl(tmp_path / "label.jsonl", {"problem": "a", "answer": "1"}, {"problem": "b", "answer": label})
    data_error(f"{path}:2: label 'answer' must be a string or a number", str(path), label_key="answer")


def test_empty_dataset(tmp_path: Path) -> None:
    for name, text in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.json", "[]")]:
        path = tmp_path / name
        path.write_text(text)
        data_error(f"{path}: empty dataset", str(path))


def test_json_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"problem": "a"},\n  {"problem": }\n]')
    data_error(f"{broken}:3: invalid JSON", str(broken))
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"rows": []}')
    data_error(f"{scalar}: expected a list of objects", str(scalar))
    not_object = tmp_path / "not_object.json"
    not_object.write_text('[{"problem": "a"}, "b"]')
    data_error(f"{not_object} record 1: expected a JSON object, found str", str(not_object))
    missing = tmp_path / "missing.json"
    missing.write_text('[{"problem": "a"}, {"prompt": "b"}]')
    data_error(f"{missing} record 1: missing key 'problem' (available: prompt)", str(missing))


def test_parquet_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not a parquet file at all")
    data_error(f"{corrupt}: unreadable parquet file", str(corrupt))
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"problem": [1, 2]}), numbers)
    data_error(f"{numbers} record 0: prompt 'problem' must be a string, found int", str(numbers))


def test_id_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ids.jsonl", {"problem": "a", "key": "k"}, {"problem": "b", "key": "k"}, {"problem": "c"}
    )
    data_error(f"{path}:3: missing id key 'key' (available: problem)", str(path), id_key="key")
    data_error(f"{path}:2: duplicate id key='k' (first at {path}:1)", str(path), id_key="key", max_samples=2)


def test_bad_arguments_and_unknown_embedded_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", {"problem": "a"})
    data_error("max_samples must be at least 1", str(path), max_samples=0)
    data_error("input_key names no field", str(path), [])
    data_error("unknown embedded dataset 'embedded:gsm8k' (have: embedded:arithmetic", "embedded:gsm8k")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_hub_name_without_datasets_installed_says_what_to_install() -> None:
    message = data_error("openai/gsm8k:main:test: not a local file", "openai/gsm8k:main:test")
    assert "pip install 'serl-rl[hub]'" in message


# --- hostile text ------------------------------------------------------------------------------------------------


def test_a_lone_surrogate_is_an_error_naming_file_line_and_field(tmp_path: Path) -> None:
    # json.dumps writes "\ud800" as an escape; json.loads gives back a str that no tokenizer or UTF-8 file takes
    path = write_jsonl(tmp_path / "s.jsonl", {"problem": "1+1?", "answer": "2"}, {"problem": "What is \ud800?"})
    message = data_error(f"{path}:2:", path)
    assert message == f"{path}:2: 'problem' is not valid Unicode text (a lone surrogate, '\\ud800', at character 9)"
    wrapped = tmp_path / "s.json"
    wrapped.write_text(json.dumps({"data": [{"problem": "ok", "answer": "2", "meta": {"notes": ["", "\udfff"]}}]}))
    message = data_error(f"{wrapped} record 0:", wrapped, label_key="answer")
    assert message.endswith("'meta.notes[1]' is not valid Unicode text (a lone surrogate, '\\udfff', at character 1)")


def test_a_record_longer_than_max_chars_is_an_error_and_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:  # one 50 MB line, then a normal one
        handle.write('{"problem": "' + "x" * (50 << 20) + '"}\n{"problem": "1+1?"}\n')
    tracemalloc.start()
    message = data_error(f"{path}:1:", path, max_samples=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert message == f"{path}:1: record longer than max_chars=100000 characters"
    assert peak < 2 << 20, f"{peak / 2**20:.1f} MiB held while reading one line"
    # the limit counts characters, not bytes: 3-byte characters up to the limit pass, one more does not
    line = {"problem": "\u2211" * 40}
    at_limit = len(json.dumps(line, ensure_ascii=False))
    fits = tmp_path / "fits.jsonl"
    fits.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_problems(fits, max_chars=at_limit)[0].prompt == "\u2211" * 40
    assert data_error(f"{fits}:1:", fits, max_chars=at_limit - 1).endswith(f"max_chars={at_limit - 1} characters")
    whole = tmp_path / "big.json"  # a JSON array is parsed whole anyway; each record is still held to the limit
    whole.write_text(json.dumps([{"problem": "1+1?"}, {"problem": "y" * 200}]))
    assert (
        data_error(f"{whole} record 1:", whole, max_chars=100)
        == f"{whole} record 1: record longer than max_chars=100 characters"
    )
