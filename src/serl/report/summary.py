"""The at-a-glance numbers of a run and their tables (markdown for summary.md, HTML for report.html)."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from serl import rundir as names
from serl.report.reading import (
    RunData,
    count_keys,
    fate_group,
    fate_key,
    finite,
    mean,
    paired_interval,
    present,
    series,
    time_keys,
)


def summarize(run: RunData) -> dict[str, Any]:
    """The numbers of the at-a-glance table; None where the run has no data for one."""
    steps = [r[names.STEP] for r in run.steps]
    iterations = [int(v) for r in run.steps if (v := finite(r.get(names.ITERATION))) is not None]
    scored, kept = series(run, names.GROUPS_SCORED)[1], series(run, names.GROUPS_KEPT)[1]
    # Pooled over the run (not a mean of per-step ratios) when the group counts are logged.
    kept_ratio = sum(kept) / sum(scored) if sum(scored) > 0 else mean(series(run, names.KEPT_RATIO)[1])
    elapsed = series(run, names.ELAPSED)[1]
    time_by_phase = {phase: sum(values) for phase, _, values in present(run, time_keys(run))}
    evals = {}
    for name, points in run.evals.items():
        final_step = max(points)
        best_step = max(points, key=lambda s: (points[s], -s))  # the earliest step reaching the best value
        initial = points.get(0)
        evals[name] = {
            "initial": initial,
            "final": points[final_step],
            "final_step": final_step,
            "best": points[best_step],
            "best_step": best_step,
            "delta": None if initial is None else points[final_step] - initial,
            "delta_ci": paired_interval(run, name, final_step),  # (delta, low, high) or None
        }
    fates = Counter(fate_group(r.get("fate")) for r in run.instructions)
    return {
        "steps": len(steps),
        "last_step": max(steps) if steps else None,
        "iterations": max(iterations) if iterations else None,
        "mean_reward": mean(series(run, names.MAJORITY_VOTING_REWARD)[1]),
        "mean_majority_ratio": mean(series(run, names.MAJORITY_RATIO_MEAN)[1]),
        "mean_label_accuracy": mean(series(run, names.LABEL_ACCURACY)[1]),
        "mean_train_reward": mean(series(run, names.TRAIN + "reward")[1]),
        "kept_pool": (series(run, names.KEPT_POOL)[1] or [None])[-1],
        "kept_ratio": kept_ratio,
        "contaminated_share": _pooled(run, names.CONTAMINATED, names.SCREENED),
        "near_held_out_share": _pooled(run, names.NEAR_HELD_OUT, names.SCREENED),
        "total_time_s": max(elapsed) if elapsed else (sum(series(run, names.STEP_TIME)[1]) or None),
        "time_by_phase_s": time_by_phase,
        "eval": evals,
        "fates": dict(sorted(fates.items(), key=fate_key)),
        "counts": {k: sum(series(run, k)[1]) for k in count_keys(run)},
    }


def _pooled(run: RunData, part: str, whole: str) -> float | None:
    """sum(part) / sum(whole) over the steps that logged both (None where nothing was logged)."""
    pairs = [(r[part], r[whole]) for r in run.steps if finite(r.get(part)) is not None and finite(r.get(whole))]
    return sum(p for p, _ in pairs) / sum(w for _, w in pairs) if pairs else None


def _num(value: float | None, signed: bool = False) -> str:
    """A rate or accuracy: three decimals, or a dash when the run has none."""
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _count(value: float | None) -> str:
    if value is None:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


Table = tuple[list[str], list[list[str]]]  # (header, rows)


def _config(run: RunData, section: str, key: str) -> str:
    values = run.config.get(section)
    return str(values.get(key, "–")) if isinstance(values, dict) else "–"


def summary_tables(run: RunData, summary: dict[str, Any]) -> list[Table]:
    """The summary as plain-text tables, rendered both to markdown and to HTML."""
    mode, algorithm = _config(run, "train", "mode"), _config(run, "algo", "advantage_estimator")
    rows = [
        ["preset", str(run.config.get("preset", "–"))],
        ["mode / algorithm", f"{mode} / {algorithm}"],
        ["model", _config(run, "model", "policy")],
        ["steps", f"{summary['steps']} (last step {_count(summary['last_step'])})"],
        ["iterations", _count(summary["iterations"])],
        ["mean majority-vote reward", _num(summary["mean_reward"])],
        ["mean majority ratio", _num(summary["mean_majority_ratio"])],
        ["mean label accuracy", _num(summary["mean_label_accuracy"])],
        ["mean train reward", _num(summary["mean_train_reward"])],
        ["kept ratio (kept / scored groups)", _num(summary["kept_ratio"])],
        ["generated problems in the kept pool (last step)", _count(summary["kept_pool"])],
        ["contaminated share (ROUGE-L F > the drop bound vs an eval question)", _num(summary["contaminated_share"])],
        ["near-held-out share (ROUGE-L F > 0.7 vs an eval question)", _num(summary["near_held_out_share"])],
        ["total time", _duration(summary["total_time_s"])],
    ]
    phase_seconds = summary["time_by_phase_s"]
    if sum(phase_seconds.values()) > 0:
        total = sum(phase_seconds.values())
        rows.append(["time by phase", ", ".join(f"{p} {s / total:.0%}" for p, s in phase_seconds.items())])
    tables: list[Table] = [(["run", run.run_dir.name], rows)]
    if summary["eval"]:
        evals = []
        for name, e in summary["eval"].items():
            final = f"{_num(e['final'])} (step {e['final_step']})"
            best = f"{_num(e['best'])} (step {e['best_step']})"
            ci = e["delta_ci"]
            interval = "–" if ci is None else f"[{_num(ci[1], signed=True)}, {_num(ci[2], signed=True)}]"
            evals.append([name, _num(e["initial"]), final, best, _num(e["delta"], signed=True), interval])
        header = ["eval pass@1", "step 0", "final", "best", "Δ final − step 0", "Δ 95 % CI (paired bootstrap)"]
        tables.append((header, evals))
    if summary["fates"]:
        tables.append((["instruction fate", "events"], [[k, str(v)] for k, v in summary["fates"].items()]))
    if summary["counts"]:
        counts = [[key, _count(total)] for key, total in summary["counts"].items()]
        tables.append((["count over all steps", "total"], counts))
    return tables


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def tables_markdown(tables: list[Table]) -> str:
    blocks = []
    for header, rows in tables:
        lines = [_markdown_row(header), "|" + "---|" * len(header), *map(_markdown_row, rows)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def tables_html(tables: list[Table]) -> str:
    out = []
    for header, rows in tables:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(out)
