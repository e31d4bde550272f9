"""`serl report`: read a run directory (metrics.jsonl, eval/, instructions/, config.yaml) and write PNG
plots, a self-contained report.html (plots embedded as base64) and a summary.md table. Plain functions over
files: no torch, no model, and a run still being written (torn last lines, one step, missing keys, NaN)
still reports."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from serl.io import atomic_write_bytes, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """A directory that cannot be reported on; the message is one line."""


@dataclass
class RunData:
    run_dir: Path
    steps: list[dict[str, Any]]  # one record per step, sorted; the last record wins for a repeated step
    evals: dict[str, dict[int, float]]  # dataset -> {step: pass@1}; step 0 is the initial policy
    instructions: list[dict[str, Any]]  # every self-instruction event from instructions/iter_*.jsonl
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped while reading, shown in the report


# -------------------------------------------------------------------------------------------- reading


def _finite(value: Any) -> float | None:
    """A plottable number, or None for missing, NaN, inf, bools and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    log.warning("%s", message)


def _read_records(run_dir: Path, path: Path, notes: list[str]) -> list[dict[str, Any]]:
    records, torn = read_jsonl(path)  # read_jsonl itself logs each line it skips
    if torn:
        notes.append(f"{path.relative_to(run_dir)}: ignored {torn} torn or invalid line(s)")
    return [r for r in records if isinstance(r, dict)]


def _read_steps(run_dir: Path, notes: list[str]) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, Any]] = {}
    for record in _read_records(run_dir, run_dir / "metrics.jsonl", notes):
        step = record.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            by_step[step] = record
        else:
            _note(notes, "metrics.jsonl: ignored a record without an integer 'step'")
    return [by_step[s] for s in sorted(by_step)]


def _read_evals(run_dir: Path, steps: list[dict[str, Any]], notes: list[str]) -> dict[str, dict[int, float]]:
    """pass@1 per dataset and step, from eval/step_XXXXXX.json and the `eval/<dataset>/pass@1` metrics."""
    evals: dict[str, dict[int, float]] = {}

    def add(step: int, key: str, value: Any) -> None:
        if key.endswith("/pass@1") and (number := _finite(value)) is not None:
            evals.setdefault(key.removesuffix("/pass@1"), {})[step] = number

    for record in steps:
        for key, value in record.items():
            if key.startswith("eval/"):
                add(record["step"], key.removeprefix("eval/"), value)
    for path in sorted((run_dir / "eval").glob("step_*.json")):
        if not re.fullmatch(r"step_\d+\.json", path.name):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            step, metrics = int(data["step"]), dict(data["metrics"])
        except Exception as err:  # one bad file must not hide the rest of the report
            _note(notes, f"eval/{path.name}: ignored ({type(err).__name__}: {err})".splitlines()[0])
            continue
        for key, value in metrics.items():
            add(step, key, value)
    return {name: dict(sorted(points.items())) for name, points in sorted(evals.items())}


def load_run(run_dir: str | Path) -> RunData:
    """Read everything the report needs from RUN_DIR; raise ReportError when there is nothing to report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    notes: list[str] = []
    steps = _read_steps(run_dir, notes)
    instructions = []
    for path in sorted((run_dir / "instructions").glob("iter_*.jsonl")):
        instructions.extend(_read_records(run_dir, path, notes))
    evals = _read_evals(run_dir, steps, notes)
    if not steps and not evals and not instructions:
        raise ReportError(
            f"{run_dir}: nothing to report (no metrics.jsonl lines, eval/step_*.json or "
            "instructions/iter_*.jsonl); is it a serl run directory?"
        )
    config_text, config = "", {}
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        config_text = config_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(config_text)
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as err:
            _note(notes, f"config.yaml: not valid YAML ({str(err).splitlines()[0]})")
    return RunData(run_dir, steps, evals, instructions, config_text, config, notes)


def series(run: RunData, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) for KEY over the run, skipping steps where it is missing or not finite."""
    points = [(r["step"], v) for r in run.steps if (v := _finite(r.get(key))) is not None]
    return [s for s, _ in points], [v for _, v in points]


KNOWN_FATES = ("accepted", "kept", "trained", "rejected:novelty", "rejected:difficulty", "expired")


def fate_group(fate: Any, by_rule: bool = True) -> str:
    """The name a fate is counted under: known fates as they are, `rejected:rule:<name>` per rule (or all
    together when not BY_RULE), and an unknown `a:b` under `a:other`, so a new fate neither crashes nor
    floods the plot."""
    if not isinstance(fate, str) or not fate:
        return "unknown"
    if fate.startswith("rejected:rule:"):
        return fate if by_rule else "rejected:rule"
    if fate in KNOWN_FATES or ":" not in fate:
        return fate
    return fate.split(":", 1)[0] + ":other"


def _fate_order(name: str) -> tuple[int, str]:
    order = [*KNOWN_FATES[:3], "rejected:rule", *KNOWN_FATES[3:]]
    matches = (i for i, known in enumerate(order) if name == known or name.startswith(known + ":"))
    return next(matches, len(order)), name


def _fate_key(item: tuple[str, int]) -> tuple[int, str]:
    return _fate_order(item[0])


TIME_PHASES = ("generate", "rollout", "reward", "train", "eval")  # drawn first, in this order


def _keys(run: RunData, prefixes: tuple[str, ...]) -> set[str]:
    return {key for record in run.steps for key in record if key.startswith(prefixes)}


def _count_keys(run: RunData) -> list[str]:
    """The per-step counters of the difficulty filter and of self-instruction, as logged."""
    return sorted(_keys(run, ("filter/groups_", "selfinstruct/")) - {"selfinstruct/kept_pool"})  # a size, not a count


def _time_keys(run: RunData) -> list[tuple[str, str]]:
    """(key, phase) for each logged `time/<phase>_s` but the whole step: known phases first, then others."""
    keys = {k for k in _keys(run, ("time/",)) if k.endswith("_s")} - {"time/step_s", "time/elapsed_s"}
    known = [f"time/{phase}_s" for phase in TIME_PHASES]
    ordered = [k for k in known if k in keys] + sorted(keys - set(known))
    return [(key, key.removeprefix("time/").removesuffix("_s")) for key in ordered]


# -------------------------------------------------------------------------------------------- summary


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(run: RunData) -> dict[str, Any]:
    """The numbers of the at-a-glance table; None where the run has no data for one."""
    steps = [r["step"] for r in run.steps]
    iterations = [int(v) for r in run.steps if (v := _finite(r.get("iteration"))) is not None]
    scored, kept = series(run, "filter/groups_scored")[1], series(run, "filter/groups_kept")[1]
    # Pooled over the run (not a mean of per-step ratios) when the group counts are logged.
    kept_ratio = sum(kept) / sum(scored) if sum(scored) > 0 else _mean(series(run, "filter/kept_ratio")[1])
    elapsed = series(run, "elapsed_s")[1]
    time_by_phase = {phase: sum(values) for phase, _, values in _present(run, _time_keys(run))}
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
        }
    fates = Counter(fate_group(r.get("fate")) for r in run.instructions)
    return {
        "steps": len(steps),
        "last_step": max(steps) if steps else None,
        "iterations": max(iterations) if iterations else None,
        "mean_reward": _mean(series(run, "reward/majority_voting_reward")[1]),
        "mean_majority_ratio": _mean(series(run, "reward/majority_ratio_mean")[1]),
        "mean_label_accuracy": _mean(series(run, "reward/label_accuracy")[1]),
        "mean_train_reward": _mean(series(run, "train/reward")[1]),
        "kept_pool": (series(run, "selfinstruct/kept_pool")[1] or [None])[-1],
        "kept_ratio": kept_ratio,
        "total_time_s": max(elapsed) if elapsed else (sum(series(run, "time/step_s")[1]) or None),
        "time_by_phase_s": time_by_phase,
        "eval": evals,
        "fates": dict(sorted(fates.items(), key=_fate_key)),
        "counts": {k: sum(series(run, k)[1]) for k in _count_keys(run)},
    }


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
            evals.append([name, _num(e["initial"]), final, best, _num(e["delta"], signed=True)])
        tables.append((["eval pass@1", "step 0", "final", "best", "Δ final − step 0"], evals))
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


# -------------------------------------------------------------------------------------------- plots


Lines = list[tuple[str, list[int], list[float]]]  # (label, steps, values)


def _figure(width: float = 8.0, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    return figure


def _present(run: RunData, keys: list[tuple[str, str]]) -> Lines:
    """(label, steps, values) for each (key, label) with at least one finite value."""
    return [(label, *xy) for key, label in keys if (xy := series(run, key))[0]]


def _legend(ax: Any) -> None:
    # Beside the axes, never on the data.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _integer_steps(ax: Any) -> None:
    """Whole-number step ticks; a run of one or two steps gets room around it instead of ticks like 0.975."""
    low, high = ax.get_xlim()
    if high - low < 2:
        middle = (low + high) / 2
        ax.set_xlim(middle - 1, middle + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _step_axis(ax: Any, run: RunData) -> None:
    """Whole-number step ticks, and a faint line where an iteration starts (fresh LR schedule, new pool)."""
    _integer_steps(ax)
    previous = None
    for record in run.steps:
        iteration = _finite(record.get("iteration"))
        if iteration is not None and previous is not None and iteration != previous:
            ax.axvline(record["step"] - 0.5, color="grey", linestyle=":", linewidth=1)
        previous = iteration if iteration is not None else previous


SMOOTH_AFTER = 40  # points; longer series get a moving average


def _moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last WINDOW values (fewer at the start), so the curve starts at step one."""
    totals = [0.0, *itertools.accumulate(values)]
    return [(totals[i + 1] - totals[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(values))]


def _lines(
    ax: Any,
    run: RunData,
    lines: Lines,
    title: str,
    ylabel: str = "",
    *,
    legend: bool = True,
    smooth: bool = True,
) -> None:
    for label, xs, ys in lines:
        if len(xs) <= SMOOTH_AFTER:  # markers: a one-step run still shows its point
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.5, label=label)
        elif not smooth:
            ax.plot(xs, ys, linewidth=1.5, label=label)
        else:  # a long noisy run: the raw values faintly, a trailing moving average on top
            (raw,) = ax.plot(xs, ys, linewidth=0.8, alpha=0.3)
            ax.plot(xs, _moving_average(ys, window=max(3, len(ys) // 25)), color=raw.get_color(), label=label)
    _step_axis(ax, run)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if legend:
        _legend(ax)


MAX_BARS = 150  # steps; beyond this, thousands of bar patches take seconds to draw, so stacked areas instead


def _stacked_bars(ax: Any, run: RunData, layers: dict[str, dict[int, float]], colors: dict[str, str]) -> None:
    """One bar per step (an area for long runs), stacked in the order of LAYERS ({label: {step: height}})."""
    steps = sorted({s for heights in layers.values() for s in heights})
    bottom = [0.0] * len(steps)
    for label, heights in layers.items():
        column = [heights.get(s, 0.0) for s in steps]
        top = [b + h for b, h in zip(bottom, column, strict=True)]
        if len(steps) > MAX_BARS:
            ax.fill_between(steps, bottom, top, step="mid", linewidth=0, label=label, color=colors.get(label))
        else:
            ax.bar(steps, column, bottom=bottom, width=0.85, label=label, color=colors.get(label))
        bottom = top


REWARD_KEYS = [
    ("reward/majority_voting_reward", "majority-vote reward"),
    ("reward/majority_ratio_mean", "majority ratio (mean)"),
    ("reward/no_majority_frac", "no-majority fraction"),
    ("reward/label_accuracy", "label accuracy"),
    ("reward/reward_accuracy", "reward accuracy"),
    ("reward/ground_truth_ratio", "ground-truth ratio"),
    ("reward/pass@n", "pass@n"),
    ("train/reward", "train reward (mean over the trained batch)"),
]


def plot_rewards(run: RunData) -> Figure | None:
    if not (lines := _present(run, REWARD_KEYS)):
        return None
    figure = _figure()
    _lines(figure.add_subplot(), run, lines, "Self-reward and majority ratio per step", "fraction / reward")
    return figure


FATE_COLORS = {
    "accepted": "#9ecae1",
    "kept": "#31a354",
    "trained": "#006d2c",
    "rejected:rule": "#fd8d3c",
    "rejected:novelty": "#e6550d",
    "rejected:difficulty": "#a50f15",
    "expired": "#969696",
}


def plot_fates(run: RunData) -> Figure | None:
    """Left: events per step by fate from the instruction log. Right: the filter and self-instruct
    counts logged per step in metrics.jsonl (the only fate data in `maj` mode)."""
    layers: dict[str, dict[int, float]] = {}
    for record in run.instructions:
        step, fate = record.get("step"), fate_group(record.get("fate"), by_rule=False)
        if isinstance(step, int) and not isinstance(step, bool):
            layers.setdefault(fate, {}).setdefault(step, 0.0)
            layers[fate][step] += 1
    layers = {fate: layers[fate] for fate in sorted(layers, key=_fate_order)}
    counts = _present(run, [(key, key) for key in _count_keys(run)])
    if not layers and not counts:
        return None
    panels = int(bool(layers)) + int(bool(counts))
    figure = _figure(7.0 * panels + 1.0, 4.2)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if layers:
        _stacked_bars(axes[0], run, layers, FATE_COLORS)
        _step_axis(axes[0], run)
        axes[0].set(title="Self-instruction fates per step (instruction log)", xlabel="step", ylabel="events")
        axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(axes[0])
    if counts:
        _lines(axes[-1], run, counts, "Filter and self-instruction counts per step", "count")
    return figure


def plot_eval(run: RunData) -> Figure | None:
    if not run.evals:
        return None
    lines = [(name, list(points), list(points.values())) for name, points in run.evals.items()]
    figure = _figure()
    title = "Evaluation accuracy (greedy pass@1; step 0 = initial policy)"
    _lines(figure.add_subplot(), run, lines, title, "pass@1")
    return figure


TRAIN_KEYS = [
    ("train/kl", "KL to reference"),
    ("train/entropy", "entropy"),
    ("train/response_length", "response length (tokens)"),
    ("train/loss", "loss"),
    ("train/grad_norm", "grad norm"),
    ("train/lr", "learning rate"),
]


def plot_training(run: RunData) -> Figure | None:
    """Small multiples, one panel per statistic that was logged."""
    if not (lines := _present(run, TRAIN_KEYS)):
        return None
    columns = min(3, len(lines))
    rows = math.ceil(len(lines) / columns)
    figure = _figure(4.0 * columns, 3.0 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, line in zip(axes, lines, strict=False):
        _lines(ax, run, [line], line[0], legend=False, smooth=line[0] != "learning rate")  # a schedule: exact
    for ax in axes[len(lines) :]:
        ax.set_visible(False)
    figure.suptitle("Training statistics per step")
    return figure


def plot_majority_hist(run: RunData) -> Figure | None:
    """Heatmap: for each step, the share of prompt groups whose majority ratio falls in each bin of [0, 1]."""
    hists = [(r["step"], r.get("reward/majority_ratio_hist")) for r in run.steps]
    hists = [(step, hist) for step, hist in hists if isinstance(hist, list) and hist]
    bins = Counter(len(h) for _, h in hists).most_common(1)[0][0] if hists else 0
    columns = []
    for step, hist in hists:
        values = [_finite(v) or 0.0 for v in hist]
        if len(values) == bins and sum(values) > 0:
            columns.append((step, [v / sum(values) for v in values]))
    if not columns:
        return None
    steps = [s for s, _ in columns]
    grid = [[column[b] for _, column in columns] for b in range(bins)]
    figure = _figure()
    ax = figure.add_subplot()
    mesh = ax.pcolormesh(_edges(steps), [b / bins for b in range(bins + 1)], grid, cmap="viridis", vmin=0.0)
    figure.colorbar(mesh, ax=ax, label="share of groups")
    ax.set(title="Majority-ratio distribution per step", xlabel="step", ylabel="majority ratio")
    _integer_steps(ax)
    return figure


def _edges(centres: list[int]) -> list[float]:
    """Cell edges around sorted centres: midpoints between neighbours, half a gap (or 0.5) beyond each end."""
    if len(centres) == 1:
        return [centres[0] - 0.5, centres[0] + 0.5]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(centres)]
    return [centres[0] - (mids[0] - centres[0]), *mids, centres[-1] + (centres[-1] - mids[-1])]


def plot_time(run: RunData) -> Figure | None:
    layers = {label: dict(zip(xs, ys, strict=True)) for label, xs, ys in _present(run, _time_keys(run))}
    total = _present(run, [("time/step_s", "whole step")])
    if not layers and not total:
        return None
    figure = _figure()
    ax = figure.add_subplot()
    _stacked_bars(ax, run, layers, {})
    for label, xs, ys in total:
        ax.plot(xs, ys, color="black", marker="o", markersize=3, linewidth=1.2, label=label)
    _step_axis(ax, run)  # after everything is drawn: it reads the data limits
    ax.set(title="Wall time per step by phase", xlabel="step", ylabel="seconds")
    _legend(ax)
    return figure


PLOTS: dict[str, tuple[str, Callable[[RunData], Figure | None]]] = {
    "rewards": ("Reward and majority ratio", plot_rewards),
    "fates": ("Kept and rejected fates", plot_fates),
    "eval": ("Evaluation accuracy", plot_eval),
    "training": ("KL, entropy, response length", plot_training),
    "majority_hist": ("Majority-ratio histogram", plot_majority_hist),
    "time": ("Time per step", plot_time),
}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- report


def _html(run: RunData, tables: list[Table], images: dict[str, bytes]) -> str:
    sections = []
    for name, (title, _) in PLOTS.items():
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            body = f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
        else:
            body = '<p class="nodata">no data</p>'
        sections.append(f"<h3>{html.escape(title)}</h3>\n{body}")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in run.notes)
    config = html.escape(run.config_text) if run.config_text else "no config.yaml"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>serl report: {html.escape(run.run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
.nodata {{ color: #888; font-style: italic; }}
</style></head><body>
<h1>serl report: {html.escape(run.run_dir.name)}</h1>
<p>{html.escape(str(run.run_dir.resolve()))}</p>
<h2>Summary</h2>
{tables_html(tables)}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Plots</h2>
<p>Dotted vertical lines mark the first step of a new iteration (fresh LR schedule, new instruction pool).
Series longer than {SMOOTH_AFTER} steps are drawn faintly with a moving average on top.</p>
{chr(10).join(sections)}
<h2>Config</h2>
<pre>{config}</pre>
</body></html>
"""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the PNG plots, summary.md and a self-contained report.html to OUT_DIR (default RUN_DIR/report).

    Returns {"html": ..., "summary": ..., <plot name>: ...} for the files written. Raises ReportError (one
    line) when RUN_DIR has nothing to report. Plots with no data are left out (a stale PNG of one removed)."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "report"
    paths: dict[str, Path] = {}
    images: dict[str, bytes] = {}
    for name, (_, make) in PLOTS.items():
        path = out / f"{name}.png"
        figure = make(run)
        if figure is None:
            path.unlink(missing_ok=True)
            continue
        images[name] = _png(figure)
        atomic_write_bytes(path, images[name])
        paths[name] = path
    tables = summary_tables(run, summarize(run))
    markdown = f"# serl run {run.run_dir.name}\n\n{tables_markdown(tables)}\n"
    if run.notes:
        markdown += "\nNotes:\n" + "".join(f"- {note}\n" for note in run.notes)
    atomic_write_text(out / "summary.md", markdown)
    atomic_write_text(out / "report.html", _html(run, tables, images))
    return {"html": out / "report.html", "summary": out / "summary.md", **paths}
