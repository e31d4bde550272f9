"""Load a problem set from JSONL, JSON, parquet, a Hugging Face dataset or the embedded generator as `Problem`s.

Every failure is a one-line `DataError` that says where: ``file.jsonl:12`` (line number) for JSONL,
``file.json record 3`` (0-based) for JSON and parquet, ``org/name:split row 3`` for a hub dataset. That includes text
no tokenizer or UTF-8 file takes (a lone surrogate such as ``"\\ud800"``) and a record longer than `max_chars`, which
in JSONL is found without reading the line any further.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from serl.data.arithmetic import generate_arithmetic
from serl.data.records import DataError, Problem

ID_KEYS = ("idx", "id", "unique_id", "question_id")  # tried in order when no id_key is given
# name -> (split, size, level): today's sets (level 4), and an easier train/test pair per level (larger test sets,
# so a few points of accuracy are measurable)
EMBEDDED_DATASETS: dict[str, tuple[str, int, int]] = {
    "arithmetic": ("train", 500, 4),
    "arithmetic-test": ("test", 200, 4),
}
EMBEDDED_DATASETS |= {f"arithmetic-l{level}": ("train", 500, level) for level in (1, 2, 3)}
EMBEDDED_DATASETS |= {f"arithmetic-l{level}-test": ("test", 500, level) for level in (1, 2, 3)}
SOURCE_HELP = (
    "accepted: a .jsonl, .json or .parquet file, "
    + ", ".join(f"'embedded:{name}'" for name in EMBEDDED_DATASETS)
    + ", or a Hugging Face dataset 'org/name', 'org/name:split' or 'org/name:config:split'"
)
_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+){0,2}")
MAX_CHARS = 100_000  # longest record by default (config: data.max_chars); real problems are a few thousand at most


@dataclass(frozen=True)
class _Row:
    where: str  # location for error messages: "file.jsonl:12", "file.json record 3"
    position: int  # line number (JSONL) or 0-based record index: the id when the data has none
    record: dict[str, Any]


def load_problems(
    path_or_name: str | os.PathLike[str],
    input_key: str | Sequence[str] = "problem",
    label_key: str | None = None,
    *,
    max_samples: int | None = None,
    id_key: str | None = None,
    max_chars: int = MAX_CHARS,
) -> list[Problem]:
    """Read problems in file order.

    input_key: the prompt field, or fallbacks tried in order (math sets use "question" or "problem").
    label_key: the gold-answer field (numbers become strings); None leaves labels None.
    max_samples: keep only the first N records (the rest of the file is not read).
    id_key: the id field; by default the first of idx/id/unique_id/question_id that every record has with unique
      values, else the line number (JSONL) or record index.
    max_chars: the longest record accepted, in characters (a JSONL line, or a record's JSON text in other formats).
    Embedded datasets ('embedded:arithmetic', 'embedded:arithmetic-test') ignore the keys and always carry labels.
    The remaining fields of each record go to `meta`.
    """
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be at least 1, got {max_samples}")
    input_keys = [input_key] if isinstance(input_key, str) else list(input_key)
    if not input_keys:
        raise DataError("input_key names no field")
    source = os.fspath(path_or_name)
    if source.startswith("embedded:"):
        return _load_embedded(source.removeprefix("embedded:"))[:max_samples]
    rows = list(islice(_read_rows(source, max_chars), max_samples))
    if not rows:
        raise DataError(f"{source}: empty dataset (no records)")
    used_id_key = _choose_id_key(rows, id_key)
    return [_to_problem(row, input_keys, label_key, used_id_key) for row in rows]


def _load_embedded(name: str) -> list[Problem]:
    if name not in EMBEDDED_DATASETS:
        have = ", ".join(f"embedded:{known}" for known in EMBEDDED_DATASETS)
        raise DataError(f"unknown embedded dataset 'embedded:{name}' (have: {have})")
    split, size, level = EMBEDDED_DATASETS[name]
    return generate_arithmetic(size, seed=0, split=split, level=level)


def _read_rows(source: str, max_chars: int) -> Iterator[_Row]:
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".jsonl":
            return _read_jsonl(path, max_chars)
        if suffix == ".json":
            return _limited(_read_json(path, max_chars), max_chars)
        if suffix == ".parquet":
            return _limited(_read_parquet(path), max_chars)
        raise DataError(f"{path}: unsupported file type {suffix or '(no extension)'}; {SOURCE_HELP}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file; {SOURCE_HELP}")
    looks_like_file = suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~"))
    if looks_like_file or not _HUB_NAME.fullmatch(source):
        raise DataError(f"{path}: file not found; {SOURCE_HELP}")
    return _limited(_read_hub(source), max_chars)


def _read_jsonl(path: Path, max_chars: int) -> Iterator[_Row]:
    # max_chars characters take at most 4 bytes each in UTF-8: a line not ended within that many is too long
    limit = 4 * max_chars + 2
    with _open(path) as lines:
        for number, raw in enumerate(iter(lambda: lines.readline(limit), b""), 1):
            where = f"{path}:{number}"
            unfinished = len(raw) == limit and not raw.endswith(b"\n")
            if unfinished or (len(raw) > max_chars and len(raw.decode("utf-8", "replace").rstrip("\r\n")) > max_chars):
                raise DataError(f"{where}: record longer than max_chars={max_chars} characters")
            if raw.strip():
                yield _Row(where, number, _object(_parse_json(raw, where), where))


def _limited(rows: Iterator[_Row], max_chars: int) -> Iterator[_Row]:
    """Rows of a format read whole (JSON, parquet, hub), each checked against max_chars as JSON text."""
    for row in rows:
        if len(json.dumps(row.record, ensure_ascii=False, default=str)) > max_chars:
            raise DataError(f"{row.where}: record longer than max_chars={max_chars} characters")
        yield row


def _read_json(path: Path, max_chars: int) -> Iterator[_Row]:
    with _open(path) as file:
        raw = file.read()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object after another: JSON Lines saved under a .json name
            yield from _read_jsonl(path, max_chars)
            return
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        found = f"an object with keys {', '.join(data) or 'none'}" if isinstance(data, dict) else type(data).__name__
        raise DataError(f'{path}: expected a list of objects or {{"data": [...]}}, found {found}')
    for index, item in enumerate(data):
        where = f"{path} record {index}"
        yield _Row(where, index, _object(item, where))


def _read_parquet(path: Path) -> Iterator[_Row]:
    import pyarrow as pa  # imported here: only parquet users pay for it
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: unreadable parquet file ({_first_line(exc)})") from None
    for index, record in enumerate(records):
        yield _Row(f"{path} record {index}", index, record)


def _read_hub(source: str) -> Iterator[_Row]:
    parts = source.split(":")  # org/name, org/name:split or org/name:config:split
    name, config, split = parts[0], parts[1] if len(parts) == 3 else None, parts[-1] if len(parts) > 1 else "train"
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{source}: not a local file, and loading it as a Hugging Face dataset needs the datasets package "
            "(pip install 'serl-rl[hub]')"
        ) from None
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, auth, missing split: all reported the same way
        raise DataError(f"{source}: cannot load Hugging Face dataset ({_first_line(exc)})") from None
    for index, record in enumerate(dataset):
        where = f"{name}:{split} row {index}"
        yield _Row(where, index, _object(record, where))


def _open(path: Path) -> Any:
    try:
        return path.open("rb")  # bytes: json.loads detects UTF-8/16/32 and a BOM itself
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def _parse_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _choose_id_key(rows: list[_Row], id_key: str | None) -> str | None:
    """The field that gives every row a unique id; None means use row positions."""
    if id_key is not None:
        for row in rows:
            if id_key not in row.record:
                raise DataError(f"{row.where}: missing id key {id_key!r} (available: {_keys(row.record)})")
        duplicate = _first_duplicate(rows, id_key)
        if duplicate:
            raise DataError(duplicate)
        return id_key
    for key in ID_KEYS:
        if all(key in row.record for row in rows) and not _first_duplicate(rows, key):
            return key
    return None


def _first_duplicate(rows: list[_Row], key: str) -> str | None:
    first_seen: dict[str, str] = {}
    for row in rows:
        value = str(row.record[key])
        if value in first_seen:
            return f"{row.where}: duplicate id {key}={value!r} (first at {first_seen[value]})"
        first_seen[value] = row.where
    return None


def _to_problem(row: _Row, input_keys: list[str], label_key: str | None, id_key: str | None) -> Problem:
    record = row.record
    _check_unicode(record, row.where)
    prompt_key = next((key for key in input_keys if key in record), None)
    if prompt_key is None:
        wanted = " or ".join(repr(key) for key in input_keys)
        raise DataError(f"{row.where}: missing key {wanted} (available: {_keys(record)})")
    prompt = record[prompt_key]
    if not isinstance(prompt, str):
        raise DataError(f"{row.where}: prompt {prompt_key!r} must be a string, found {type(prompt).__name__}")
    if not prompt.strip():
        raise DataError(f"{row.where}: prompt {prompt_key!r} is empty")
    label = None
    if label_key is not None:
        if label_key not in record:
            raise DataError(f"{row.where}: missing label key {label_key!r} (available: {_keys(record)})")
        label = _label_text(record[label_key], label_key, row.where)
    problem_id = str(record[id_key]) if id_key is not None else str(row.position)
    meta = {key: value for key, value in record.items() if key not in (prompt_key, label_key, id_key)}
    return Problem(problem_id, prompt, label, meta)


def _check_unicode(value: Any, where: str, key: str = "") -> None:
    """JSON can spell lone surrogates ("\\ud800"), which are not text: tokenizers and UTF-8 writers reject them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = ascii(value[exc.start])
            raise DataError(
                f"{where}: {key!r} is not valid Unicode text (a lone surrogate, {char}, at character {exc.start + 1})"
            ) from None
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_unicode(item, where, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_unicode(item, where, f"{key}[{index}]")


def _label_text(value: Any, label_key: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise DataError(f"{where}: label {label_key!r} must be a string or a number, found {value!r:.60}")


def _keys(record: dict[str, Any]) -> str:
    return ", ".join(record) or "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
