"""`serl report`: read a run directory (metrics.jsonl, eval/, instructions/, config.yaml) and write PNG plots, a
self-contained report.html (plots embedded as base64) and a summary.md table. Plain functions over files: no torch,
no model, and a run still being written (torn last lines, one step, missing keys, NaN) still reports.

`reading` turns the files into `RunData`, `summary` the numbers and tables, `plots` the figures."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from serl.io import atomic_write_bytes, atomic_write_text
from serl.report.plots import PLOTS, SMOOTH_AFTER, png
from serl.report.reading import ReportError, RunData, fate_group, load_run, series
from serl.report.summary import Table, summarize, summary_tables, tables_html, tables_markdown
from serl.rundir import RunDir

__all__ = ["ReportError", "RunData", "fate_group", "load_run", "series", "summarize", "write_report"]


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
    out = Path(out_dir) if out_dir is not None else RunDir(run.run_dir).report
    paths: dict[str, Path] = {}
    images: dict[str, bytes] = {}
    for name, (_, make) in PLOTS.items():
        path = out / f"{name}.png"
        figure = make(run)
        if figure is None:
            path.unlink(missing_ok=True)
            continue
        images[name] = png(figure)
        atomic_write_bytes(path, images[name])
        paths[name] = path
    tables = summary_tables(run, summarize(run))
    markdown = f"# serl run {run.run_dir.name}\n\n{tables_markdown(tables)}\n"
    if run.notes:
        markdown += "\nNotes:\n" + "".join(f"- {note}\n" for note in run.notes)
    atomic_write_text(out / "summary.md", markdown)
    atomic_write_text(out / "report.html", _html(run, tables, images))
    return {"html": out / "report.html", "summary": out / "summary.md", **paths}
