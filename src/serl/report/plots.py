"""The report's plots: one matplotlib Figure per view of a run, drawn on the Agg canvas (no display, no pyplot)."""

from __future__ import annotations

import io
import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from serl import rundir as names
from serl.report.reading import (
    Lines,
    RunData,
    count_keys,
    fate_group,
    fate_order,
    finite,
    paired_interval,
    present,
    time_keys,
)


def _figure(width: float = 8.0, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    return figure


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
        iteration = finite(record.get(names.ITERATION))
        if iteration is not None and previous is not None and iteration != previous:
            ax.axvline(record[names.STEP] - 0.5, color="grey", linestyle=":", linewidth=1)
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
    (names.MAJORITY_VOTING_REWARD, "majority-vote reward"),
    (names.MAJORITY_RATIO_MEAN, "majority ratio (mean)"),
    (names.NO_MAJORITY_FRAC, "no-majority fraction"),
    (names.LABEL_ACCURACY, "label accuracy"),
    (names.REWARD_ACCURACY, "reward accuracy"),
    (names.GROUND_TRUTH_RATIO, "ground-truth ratio"),
    (names.PASS_AT_N, "pass@n"),
    (names.TRAIN + "reward", "train reward (mean over the trained batch)"),
]


def plot_rewards(run: RunData) -> Figure | None:
    if not (lines := present(run, REWARD_KEYS)):
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
    layers = {fate: layers[fate] for fate in sorted(layers, key=fate_order)}
    counts = present(run, [(key, key) for key in count_keys(run)])
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
    """Held-out greedy pass@1 over steps, each set with its step-0 level as a dashed line and, where per-question
    answers exist, a band: step 0's accuracy plus the paired-bootstrap 95 % interval of the change since step 0
    (a rise is real where the band clears the dashed line). A second panel holds the sampled eval's figures."""
    if not run.evals:
        return None
    figure = _figure(8.0, 7.0 if run.eval_extra else 4.0)
    axes = figure.subplots(2 if run.eval_extra else 1, 1, squeeze=False).ravel()
    ax = axes[0]
    for name, points in run.evals.items():
        steps = list(points)
        (line,) = ax.plot(steps, list(points.values()), marker="o", markersize=3.5, linewidth=1.5, label=name)
        if 0 not in points:
            continue
        ax.axhline(points[0], color=line.get_color(), linestyle="--", linewidth=1, alpha=0.7)
        band = [(s, interval) for s in steps if (interval := paired_interval(run, name, s)) is not None]
        if len(band) > 1:
            xs = [s for s, _ in band]
            ax.fill_between(
                xs,
                [points[0] + low for _, (_, low, _) in band],
                [points[0] + high for _, (_, _, high) in band],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
                label=f"{name}: 95 % CI of the change",
            )
    _step_axis(ax, run)
    ax.set(title="Held-out accuracy (greedy pass@1; dashed: step 0)", xlabel="step", ylabel="pass@1")
    ax.grid(alpha=0.3)
    _legend(ax)
    if run.eval_extra:
        extra = [(key, list(points), list(points.values())) for key, points in run.eval_extra.items()]
        _lines(axes[1], run, extra, "Sampled evaluation: mean@n, maj@n, label and reward accuracy", "fraction")
    return figure


TRAIN_KEYS = [
    (names.TRAIN + "kl", "KL to reference"),
    (names.TRAIN + "entropy", "entropy"),
    (names.TRAIN + "response_length", "response length (tokens)"),
    (names.TRAIN + "loss", "loss"),
    (names.TRAIN + "grad_norm", "grad norm"),
    (names.TRAIN + "lr", "learning rate"),
]


def plot_training(run: RunData) -> Figure | None:
    """Small multiples, one panel per statistic that was logged."""
    if not (lines := present(run, TRAIN_KEYS)):
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
    hists = [(r[names.STEP], r.get(names.MAJORITY_RATIO_HIST)) for r in run.steps]
    hists = [(step, hist) for step, hist in hists if isinstance(hist, list) and hist]
    bins = Counter(len(h) for _, h in hists).most_common(1)[0][0] if hists else 0
    columns = []
    for step, hist in hists:
        values = [finite(v) or 0.0 for v in hist]
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
    layers = {label: dict(zip(xs, ys, strict=True)) for label, xs, ys in present(run, time_keys(run))}
    total = present(run, [(names.STEP_TIME, "whole step")])
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


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
