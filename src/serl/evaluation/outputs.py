"""Evaluation outputs: the per-question JSONL (append-only, resumable), metrics JSON and a markdown table.

A run directory holds, per dataset NAME:
  NAME.jsonl          one line per question, appended as batches finish; a crash loses at most the torn last line
  NAME.settings.json  the generation settings; resuming with different ones is refused
and, for all datasets together, ``metrics.json`` and ``metrics.md``, both rewritten atomically after each dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from serl.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
GROUP_COLUMNS = ("STEM", "Humanities", "Social", "Other", "Avg")  # MMLU-Pro columns, as in the paper's Table 2


class EvalOutputError(ValueError):
    """An output directory that cannot be used as asked (settings mismatch, unreadable metrics)."""


def records_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.jsonl"


def _settings_path(path: Path) -> Path:
    return path.with_name(path.stem + ".settings.json")


def open_records(path: str | Path, settings: Mapping[str, Any], *, overwrite: bool = False) -> dict[str, dict]:
    """Get PATH ready for appending and return the records already in it, keyed by question id.

    Resuming is allowed only with the same settings (JSON-equal); a torn last line from a crash is cut off so the
    next append starts on a fresh line.
    """
    path = Path(path)
    sidecar = _settings_path(path)
    settings = json.loads(json.dumps(dict(settings)))  # tuples become lists, as they will read back
    if overwrite:
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    done: dict[str, dict] = {}
    if path.exists():
        previous = _read_json(sidecar) if sidecar.exists() else None
        if previous is not None and previous != settings:
            changed = sorted(key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key))
            raise EvalOutputError(
                f"{path} was written with different settings ({', '.join(changed)}); "
                "choose another output directory or pass --overwrite"
            )
        _cut_torn_tail(path)
        records, _ = read_jsonl(path)
        done = {str(record["id"]): record for record in records if isinstance(record, dict) and "id" in record}
    atomic_write_json(sidecar, settings)
    return done


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    append_jsonl(path, records)


def read_records(path: str | Path) -> list[dict]:
    """The records of a per-question file, skipping a torn or invalid line."""
    if not Path(path).exists():
        raise EvalOutputError(f"{path}: no such per-question file")
    return read_jsonl(path)[0]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalOutputError(f"{path}: unreadable ({exc})") from None


def load_metrics(run: str | Path) -> dict[str, dict]:
    """metrics.json of a run directory (or the file itself): dataset name -> metrics."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_JSON
    if not path.is_file():
        raise EvalOutputError(f"{path}: not found (expected a run directory with {METRICS_JSON})")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise EvalOutputError(f"{path}: expected a JSON object of dataset -> metrics")
    return data


def write_metrics(out_dir: str | Path, name: str, metrics: Mapping[str, Any]) -> dict[str, dict]:
    """Merge one dataset's metrics into OUT_DIR/metrics.json and rewrite metrics.md; return all metrics."""
    out_dir = Path(out_dir)
    path = out_dir / METRICS_JSON
    everything = load_metrics(path) if path.exists() else {}
    everything[name] = dict(metrics)
    atomic_write_json(path, everything)
    atomic_write_text(out_dir / METRICS_MD, metrics_markdown(everything))
    return everything


def percent(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "–"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _score_keys(metrics: Mapping[str, Any]) -> list[str]:
    return [key for key, value in metrics.items() if "@" in key and isinstance(value, int | float)]


def metrics_markdown(everything: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables (percent): one row per math dataset, the MMLU-Pro groups, and the breakdowns."""
    parts: list[str] = []
    math = {name: m for name, m in everything.items() if "groups" not in m}
    if math:
        keys: list[str] = []
        for metrics in math.values():
            keys += [key for key in _score_keys(metrics) if key not in keys]
        rows = [
            [name, str(m.get("questions", "?"))] + [percent(m.get(key)) for key in keys] for name, m in math.items()
        ]
        parts.append(_table(["dataset", "questions", *keys], rows))
    for name, metrics in everything.items():
        if "groups" in metrics:
            groups = metrics["groups"]
            parts.append(f"**{name}** ({metrics.get('questions', '?')} questions)\n")
            parts.append(_table(list(GROUP_COLUMNS), [[percent(groups.get(column)) for column in GROUP_COLUMNS]]))
            categories = metrics.get("by_category", {})
            rows = [[cat, str(v["questions"]), percent(v["accuracy"])] for cat, v in sorted(categories.items())]
            parts.append(_table(["category", "questions", "accuracy"], rows))
    for name, metrics in everything.items():
        by_votes = metrics.get("majority_by_votes", {})
        if by_votes:
            rows = [[votes, str(v["questions"]), percent(v["majority_correct"])] for votes, v in by_votes.items()]
            parts.append(f"**{name}**: is the majority answer right? By its votes out of {metrics.get('samples')}\n")
            parts.append(_table(["votes", "questions", "majority right (%)"], rows))
    for name, metrics in everything.items():
        for field, groups in metrics.get("breakdowns", {}).items():
            rows = [[str(value), str(v["questions"]), percent(v["pass@1"])] for value, v in groups.items()]
            parts.append(f"**{name}** by {field}\n")
            parts.append(_table([field, "questions", "pass@1"], rows))
    return "\n".join(parts)


def compare_table(runs: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "pass@1") -> str:
    """Side-by-side markdown table, one row per run, like the paper's: METRIC per math dataset, MMLU-Pro groups."""
    columns: list[tuple[str, str]] = []  # (dataset, key inside its metrics)
    for everything in runs.values():
        for name, metrics in everything.items():
            wanted = [(name, f"groups.{g}") for g in GROUP_COLUMNS] if "groups" in metrics else [(name, metric)]
            columns += [column for column in wanted if column not in columns]

    def cell(everything: Mapping[str, Mapping[str, Any]], name: str, key: str) -> str:
        metrics = everything.get(name, {})
        value = metrics.get("groups", {}).get(key[7:]) if key.startswith("groups.") else metrics.get(key)
        return percent(value)

    header = ["run"] + [f"{name} {key[7:]}" if key.startswith("groups.") else name for name, key in columns]
    rows = [[run] + [cell(everything, name, key) for name, key in columns] for run, everything in runs.items()]
    return f"{metric} (%) unless a column names an MMLU-Pro group\n\n" + _table(header, rows)
