"""`serl report`: a realistic run directory written by hand (10 steps, 2 iterations, torn last lines, NaN,
missing keys) gives valid non-blank PNGs, a self-contained report.html and hand-computed summary numbers."""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from serl.report import ReportError, fate_group, load_run, summarize, write_report
from serl.report.plots import _moving_average

PLOT_NAMES = {"rewards", "fates", "eval", "training", "majority_hist", "time"}
EVAL_FILES = {  # step -> dataset -> pass@1; step 0 is the initial policy
    0: {"math500": 0.20, "gsm8k": 0.40},
    5: {"math500": 0.26, "gsm8k": 0.38},
    10: {"math500": 0.24, "gsm8k": 0.46},
}

CONFIG = """preset: cpu-demo
model:
  policy: embedded:smollm2-135m
train:
  mode: serl
  rollout_batch_size: 10
algo:
  advantage_estimator: reinforce
"""


def step_record(step: int) -> dict:
    record = {
        "step": step,
        "iteration": 1 if step <= 5 else 2,
        "reward/majority_voting_reward": 0.3 + 0.04 * step,  # mean over 1..10 = 0.52
        "reward/majority_ratio_mean": 0.5 + 0.03 * step,  # mean = 0.665
        "reward/no_majority_frac": 0.1,
        "reward/majority_ratio_hist": [0, 0, 1, 1, 2, 2, 1, 1, 1, step % 3],
        "filter/groups_scored": 10,
        "filter/groups_kept": 2 if step == 1 else 4,  # 38 kept of 100 scored
        "filter/groups_rejected_difficulty": 8 if step == 1 else 6,
        "filter/kept_ratio": (2 if step == 1 else 4) / 10,
        "selfinstruct/candidates": 8,
        "selfinstruct/accepted": 5,
        "selfinstruct/rejected_novelty": 2,
        "selfinstruct/rejected_rule:length": 1,
        "selfinstruct/kept_pool": 2 * step,  # a pool size: the report shows the last one, never a sum
        # 7 screened a step, one contaminated on even steps: pooled 5 / 70, not the sum or mean of the shares
        "selfinstruct/screened": 7,
        "selfinstruct/contaminated": int(step % 2 == 0),
        "selfinstruct/contaminated_share": int(step % 2 == 0) / 7,
        # 3 within ROUGE-L 0.7 of a held-out question on steps 1-4, none later: pooled 12 / 70
        "selfinstruct/near_held_out": 3 * (step <= 4),
        "selfinstruct/near_held_out_share": 3 * (step <= 4) / 7,
        "train/reward": 0.25 if step <= 5 else 0.75,  # mean 0.5
        "train/loss": 0.05 - 0.002 * step,
        "train/kl": 0.001 * step,
        "train/entropy": 1.2 - 0.05 * step,
        "train/response_length": 100 + 5 * step,
        "train/grad_norm": 1.5,
        "train/lr": 5e-6,
        "time/generate_s": 3.0,
        "time/rollout_s": 10.0,
        "time/reward_s": 1.0,
        "time/train_s": 6.0,
        "time/save_s": 0.5 if step == 5 else math.nan,  # a phase the report does not know by name
        "time/step_s": 25.0 if step in (5, 10) else 20.0,
        # cumulative time/step_s: 210 at step 10
        "elapsed_s": 20.0 * step + (5.0 if step >= 5 else 0.0) + (5.0 if step >= 10 else 0.0),
    }
    if step % 2 == 0:
        record["reward/label_accuracy"] = 0.2 + 0.025 * step  # 0.25 .. 0.45, mean 0.35
    if step == 3:
        record["reward/label_accuracy"] = math.nan  # logged as NaN: ignored, not plotted
    if step == 1:
        del record["train/kl"]  # a key missing on one line
    if step in EVAL_FILES:
        record["time/eval_s"] = 5.0
        record.update({f"eval/{name}/pass@1": value for name, value in EVAL_FILES[step].items()})
    return record


def instruction_events(step: int) -> list[str]:
    fates = ["accepted", "accepted", "rejected:rule:length", "rejected:novelty"]
    fates += ["kept", "rejected:difficulty", "trained"]
    return fates + (["expired", "rejected:toxicity", "rejected:contamination"] if step == 10 else [])


def write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(CONFIG)
    lines = [json.dumps(step_record(step)) for step in range(1, 11)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 11, "reward/majority_vo')  # torn
    (run_dir / "eval").mkdir()
    for step, values in EVAL_FILES.items():
        metrics = {f"{name}/pass@1": value for name, value in values.items()} | {"math500/questions": 50}
        eval_dir = run_dir / "eval"
        (eval_dir / f"step_{step:06d}.json").write_text(json.dumps({"step": step, "metrics": metrics}))
        # 50 questions per step, the first round(50 · pass@1) of them right: step 10 adds 2 right answers to step 0's
        right = round(50 * values["math500"])
        answers = [json.dumps({"id": f"q{i}", "correct": [i < right]}) for i in range(50)]
        (eval_dir / f"step_{step:06d}_math500.jsonl").write_text("\n".join(answers) + "\n")
    (run_dir / "instructions").mkdir()
    next_id = 0
    for iteration, steps in ((1, range(1, 6)), (2, range(6, 11))):
        records = []
        for step in steps:
            for fate in instruction_events(step):
                records.append(json.dumps({"id": next_id, "fate": fate, "step": step, "text": "2+3?"}))
                next_id += 1
        torn = '\n{"id": 999, "fate": "acc' if iteration == 2 else "\n"
        (run_dir / "instructions" / f"iter_{iteration:04d}.jsonl").write_text("\n".join(records) + torn)
    return run_dir


def assert_real_png(path: Path) -> None:
    image = imread(path)  # raises on a file that is not a PNG
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    rgb = image[..., :3]
    ink = np.mean(np.any(rgb < 0.9, axis=-1))  # share of pixels that are not (near) white
    assert 0.02 < ink < 0.9, f"{path.name}: {ink:.3f} of pixels carry ink"
    colours = (rgb * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    assert len(np.unique(colours)) > 20  # lines, text and colours, not a flat fill


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs") / "demo-run")


@pytest.fixture(scope="module")
def report_paths(run_dir: Path) -> dict[str, Path]:
    return write_report(run_dir)


def test_load_run_ignores_torn_lines_nan_and_stray_files(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert [r["step"] for r in run.steps] == list(range(1, 11))
    assert len(run.instructions) == 5 * 7 + 5 * 7 + 3  # the torn iter_0002 line is dropped
    assert run.evals == {name: {s: EVAL_FILES[s][name] for s in EVAL_FILES} for name in ("gsm8k", "math500")}
    assert any("metrics.jsonl: ignored 1 torn" in note for note in run.notes)
    assert run.config["preset"] == "cpu-demo"


def test_summary_numbers_match_hand_computed(run_dir: Path) -> None:
    s = summarize(load_run(run_dir))
    assert (s["steps"], s["last_step"], s["iterations"]) == (10, 10, 2)
    assert s["mean_reward"] == pytest.approx(0.52)
    assert s["mean_majority_ratio"] == pytest.approx(0.665)
    assert s["mean_label_accuracy"] == pytest.approx(0.35)  # the NaN at step 3 is skipped, not averaged in
    assert s["kept_ratio"] == pytest.approx(38 / 100)
    assert s["total_time_s"] == pytest.approx(210.0)
    # eval_s is logged on steps 5 and 10; step 0's evaluation has no metrics line
    phases = {"generate": 30, "rollout": 100, "reward": 10, "train": 60, "eval": 10, "save": 0.5}
    assert s["time_by_phase_s"] == pytest.approx(phases)
    # step 10 gets 2 of 50 questions right that step 0 missed and loses none: the interval's low end is 0, since
    # (48/50)^50 = 13 % of resamples draw neither (above the 2.5 % tail)
    delta, low, high = s["eval"]["math500"].pop("delta_ci")
    assert (delta, low) == (pytest.approx(0.04), 0.0) and 0.08 <= high <= 0.1
    assert s["eval"]["math500"] == pytest.approx(
        {"initial": 0.20, "final": 0.24, "final_step": 10, "best": 0.26, "best_step": 5, "delta": 0.04}
    )
    assert s["eval"]["gsm8k"] == pytest.approx(
        {
            "initial": 0.40,
            "final": 0.46,
            "final_step": 10,
            "best": 0.46,
            "best_step": 10,
            "delta": 0.06,
            "delta_ci": None,
        }
    )
    assert s["fates"] == {
        "accepted": 20,
        "kept": 10,
        "trained": 10,
        "rejected:rule:length": 10,
        "rejected:novelty": 10,
        "rejected:difficulty": 10,
        "expired": 1,
        "rejected:contamination": 1,
        "rejected:other": 1,
    }
    assert s["counts"]["filter/groups_kept"] == 38
    assert s["counts"]["selfinstruct/rejected_rule:length"] == 10
    assert s["mean_train_reward"] == pytest.approx(0.5)
    assert s["kept_pool"] == 20 and "selfinstruct/kept_pool" not in s["counts"]
    assert s["contaminated_share"] == pytest.approx(5 / 70) and "selfinstruct/contaminated_share" not in s["counts"]
    assert s["counts"]["selfinstruct/contaminated"] == 5
    assert s["near_held_out_share"] == pytest.approx(12 / 70) and "selfinstruct/near_held_out_share" not in s["counts"]


def test_report_writes_plots_summary_and_html(run_dir: Path, report_paths: dict[str, Path]) -> None:
    assert set(report_paths) == {"html", "summary"} | PLOT_NAMES
    for name in PLOT_NAMES:
        assert report_paths[name] == run_dir / "report" / f"{name}.png"
        assert_real_png(report_paths[name])
    summary = report_paths["summary"].read_text()
    for row in (
        "| run | demo-run |",
        "| steps | 10 (last step 10) |",
        "| iterations | 2 |",
        "| mode / algorithm | serl / reinforce |",
        "| mean majority-vote reward | 0.520 |",
        "| mean label accuracy | 0.350 |",
        "| kept ratio (kept / scored groups) | 0.380 |",
        "| total time | 3m 30s |",
        "| math500 | 0.200 | 0.240 (step 10) | 0.260 (step 5) | +0.040 |",
        "| gsm8k | 0.400 | 0.460 (step 10) | 0.460 (step 10) | +0.060 |",
        "| accepted | 20 |",
        "| rejected:rule:length | 10 |",
    ):
        assert row in summary, row
    page = report_paths["html"].read_text()
    assert page.count('<img src="data:image/png;base64,') == len(PLOT_NAMES)
    assert "no data" not in page
    assert "advantage_estimator: reinforce" in page  # the config is shown
    assert not list((run_dir / "report").glob("*.tmp"))  # atomic writes leave no temp files


def test_cli_prints_the_report_path(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "cli-run")
    done = subprocess.run(
        [sys.executable, "-m", "serl", "report", str(run_dir), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "out" / "report.html")
    assert_real_png(tmp_path / "out" / "eval.png")


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None], ids=["empty-dir", "missing-dir"])
def test_cli_error_is_one_clear_line(tmp_path: Path, make) -> None:
    target = tmp_path / "nothing"
    make(target)
    done = subprocess.run(
        [sys.executable, "-m", "serl", "report", str(target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_single_step_run_without_eval_or_instructions(tmp_path: Path) -> None:
    run_dir = tmp_path / "one-step"
    run_dir.mkdir()
    record = {"step": 1, "iteration": 1, "train/reward": 0.5, "train/kl": math.nan, "train/entropy": 1.1}
    record["time/step_s"] = 12.0  # a whole-step time without any phase times
    (run_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    paths = write_report(run_dir)
    assert set(paths) == {"html", "summary", "rewards", "training", "time"}  # KL is all-NaN: no panel for it
    for name in ("rewards", "training", "time"):
        assert_real_png(paths[name])
    page = paths["html"].read_text()
    assert page.count("no data") == len(PLOT_NAMES) - 3
    assert "no config.yaml" in page
    s = summarize(load_run(run_dir))
    assert (s["steps"], s["iterations"], s["mean_reward"], s["kept_ratio"]) == (1, 1, None, None)
    assert "| mean majority-vote reward | – |" in paths["summary"].read_text()


def test_regenerating_removes_a_stale_plot_and_bad_files_become_notes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "report").mkdir()
    (run_dir / "report" / "eval.png").write_bytes(b"left by an earlier report")
    (run_dir / "eval" / "step_000003.json").write_text("{not json")
    (run_dir / "eval" / "step_000004.json").write_text('{"step": 4}')  # no "metrics"
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "train/entropy": 1.0}\n{"no_step": true}\n')
    (run_dir / "config.yaml").write_text("model: [unclosed\n")
    paths = write_report(run_dir)
    assert set(paths) == {"html", "summary", "training"}
    assert not (run_dir / "report" / "eval.png").exists()
    notes = load_run(run_dir).notes
    assert notes[0] == "metrics.jsonl: ignored a record without an integer 'step'"
    assert notes[1].startswith("eval/step_000003.json: ignored (JSONDecodeError: ")
    assert notes[2] == "eval/step_000004.json: ignored (KeyError: 'metrics')"
    assert notes[3].startswith("config.yaml: not valid YAML (")
    page = paths["html"].read_text()
    assert all(html.escape(note) in page for note in notes)
    assert "model: [unclosed" in page  # the config text is still shown


def test_only_instruction_files_is_enough(tmp_path: Path) -> None:
    run_dir = tmp_path / "early"
    (run_dir / "instructions").mkdir(parents=True)
    (run_dir / "instructions" / "iter_0001.jsonl").write_text('{"id": 0, "fate": "accepted", "step": 1}\n')
    paths = write_report(run_dir)
    assert set(paths) == {"html", "summary", "fates"}
    assert "| accepted | 1 |" in paths["summary"].read_text()


def test_fate_group_names() -> None:
    assert fate_group("kept") == "kept"
    assert fate_group("rejected:rule:length") == "rejected:rule:length"
    assert fate_group("rejected:rule:length", by_rule=False) == "rejected:rule"
    assert fate_group("rejected:toxicity") == "rejected:other"
    assert fate_group("recycled") == "recycled"
    assert fate_group(None) == fate_group("") == "unknown"


def test_library_error_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nothing to report"):
        write_report(tmp_path)


def test_moving_average_is_trailing() -> None:
    assert _moving_average([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]


def test_long_run_draws_smoothed_curves_and_stacked_areas(tmp_path: Path) -> None:
    run_dir = tmp_path / "long"
    (run_dir / "instructions").mkdir(parents=True)
    steps = range(1, 201)  # past both the smoothing and the bars-to-areas thresholds
    noisy = {s: (s * 7919) % 100 / 100 for s in steps}
    rows = [
        {"step": s, "reward/majority_voting_reward": reward, "train/lr": 1e-6, "time/train_s": 2.0}
        for s, reward in noisy.items()
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fates = {s: "kept" if reward > 0.5 else "rejected:difficulty" for s, reward in noisy.items()}
    events = [{"id": s, "fate": fate, "step": s} for s, fate in fates.items()]
    (run_dir / "instructions" / "iter_0001.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    paths = write_report(run_dir)
    for name in ("rewards", "training", "fates", "time"):
        assert_real_png(paths[name])
