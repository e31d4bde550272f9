"""Does SeRL make the model better? The same base model, the same budget (trained problems per arm) and the same
held-out set, five arms:

    base     no training: the initial policy (step 0 of the first training arm's evaluation)
    serl     self-instruction + majority-vote reward (the product)
    maj      TTRL-style: majority-vote reward on the seed problems, labels hidden
    gt       ground-truth reward on the seed problems (the paper's RL-GT upper bound)
    shuffle  the serl run with the kept groups' rewards permuted across them (same reward mean, no signal)

Each training arm is `serl train --preset PRESET` with the arm's overrides, run as a child process one after the other
(each gets the whole machine), evaluated in training every `eval.every` steps with greedy pass@1 on the preset's
held-out set (the curve), and at its end on a slice with n samples (mean@n, maj@n, pass@n, via `serl eval`). Each
arm's final pass@1 is compared with base question by question: the paired bootstrap 95 % CI of the difference.
Where an arm trains on labelled problems (maj, gt), it also reports how often the majority answer equalled the hidden
label and a response's self-reward its ground-truth reward (means over steps).
It also counts the seeds that the serl arm's contamination check (selfinstruct.contamination_threshold) would drop:
maj and gt train on the seeds unscreened, so a high count means serl is barred from problems the others train on.

    .venv/bin/python benchmarks/bench_selfplay.py [--preset cpu-learn] [--arms serl,maj,gt,shuffle] [--out DIR]
        [--heldout-slice START:END] [--seeds S1,S2,...] [--set KEY=VALUE ...]

--heldout-slice evaluates on other questions of the preset's held-out set than its first eval.max_samples: a setting
chosen by looking at one slice's curves is then measured on questions that played no part in choosing it.

--seeds runs every arm once per training seed (train.seed), under OUT/seed-S, and judges the targets on the gains
pooled over the seeds, with a bootstrap that resamples seeds and questions. Runs that differ only in the training
seed can land far apart (on level 1 at 8 steps the shuffled control moved 23 points between seeds on the same 300
questions), and the per-run interval covers only the questions.

Interrupted, the same command goes on where it stopped: finished arms are read back, a started one resumes from
its last checkpoint (`serl train --resume`). An arm's checkpoints (about 2 GB) are removed once its figures are
recorded, unless --keep-checkpoints. Deterministic for a given preset and seed (train.seed): every sample is
drawn from a seed derived from it. What varies between runs: nothing on the same machine and thread count; across
CPUs, bf16 and fp32 kernels round differently, so samples (and hence figures) differ a little.

Prints one line per arm, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARMS: dict[str, list[str]] = {
    "serl": [],
    "maj": ["train.mode=maj"],
    "gt": ["train.mode=gt"],
    "shuffle": ["reward.control=shuffle"],
}
TRAINING_ORDER = ("serl", "gt", "maj", "shuffle")


def run_child(cmd: list[str], log: Path) -> float:
    """Run CMD with its output appended to LOG; its wall time. A failure stops the benchmark, naming the log."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as sink:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); see {log}:\n{tail}")
    return time.perf_counter() - started


def train_arm(name: str, preset: str, overrides: list[str], out: Path, evaluate_start: bool) -> dict[str, Any]:
    """Train one arm to its end (resuming a started run); its wall time over every invocation."""
    run_dir, state_file = out / name, out / f"{name}.state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"wall_s": 0.0, "invocations": 0}
    if state.get("done"):
        return state
    cmd = [sys.executable, "-m", "serl", "train", "--quiet", "--no-report"]
    if (run_dir / "checkpoints" / "latest").exists():
        cmd += ["--resume", str(run_dir)]  # the config is the run's own
    else:
        if run_dir.exists():  # stopped before its first checkpoint: start over
            shutil.rmtree(run_dir)
        cmd += ["--preset", preset, "--run-dir", str(run_dir)]
        for item in [*overrides, f"eval.at_start={str(evaluate_start).lower()}"]:
            cmd += ["--set", item]
    print(f"{name}: training ({'resumed' if '--resume' in cmd else 'new run'}) -> {run_dir}", file=sys.stderr)
    state["wall_s"] += run_child(cmd, out / f"{name}.log")
    state["invocations"] += 1
    state["done"] = True
    write_json(state_file, state)
    return state


def sampled_eval(name: str, cfg: Any, out: Path, n: int, questions: int) -> dict[str, float]:
    """mean@n, maj@n, pass@n on the first QUESTIONS held-out questions, sampled as the preset's sampled eval: of
    the base model, or of a training arm's last export (recorded once, so read back after its checkpoints went)."""
    target = out / f"{name}-sampled"
    if not (target / "metrics.json").exists():
        run_child(sampled_eval_command(name, cfg, target, n, questions), out / f"{name}.log")
    (per_set,) = json.loads((target / "metrics.json").read_text()).values()
    return {f"{k}@{n}": round(per_set[f"{k}@{n}"], 4) for k in ("mean", "maj", "pass")}


def sampled_eval_command(name: str, cfg: Any, target: Path, n: int, questions: int) -> list[str]:
    out = target.parent
    if name == "base":
        model = cfg.model.policy
    elif exports := sorted((out / name / "checkpoints").glob("iter_*_hf")):
        model = str(exports[-1])
    else:
        raise SystemExit(f"{name}: no export under {out / name / 'checkpoints'} to evaluate; delete {out / name}*")
    print(f"{name}: sampled eval, {questions} questions x {n}", file=sys.stderr)
    e, r = cfg.eval, cfg.rollout
    cmd = [
        sys.executable, "-m", "serl", "eval", e.datasets[0], "--model", model, "--out", str(target), "--quiet",
        "--format", e.prompt_format or r.prompt_format, "--n", str(n), "--temperature", str(e.sample_temperature),
        "--top-p", str(e.sample_top_p), "--max-new-tokens", str(e.max_new_tokens), "--max-samples", str(questions),
        "--seed", str(cfg.train.seed),
    ]  # fmt: skip
    return cmd + (["--dtype", r.dtype] if r.dtype else [])


def seed_contamination(cfg: Any) -> dict[str, Any]:
    """How many seed problems the serl arm's contamination check would drop: the share of seeds whose ROUGE-L F
    against a held-out question exceeds selfinstruct.contamination_threshold. The maj and gt arms train on the seeds
    unscreened, so a high share means the serl arm is held to a stricter standard than they are."""
    from serl.data import load_problems
    from serl.selfinstruct.novelty import NoveltyIndex
    from serl.trainer.evals import load_eval_sets

    d, threshold = cfg.data, cfg.selfinstruct.contamination_threshold
    seeds = load_problems(d.seed_path, d.input_key, d.label_key, max_samples=d.max_samples, max_chars=d.max_chars)
    eval_sets, canary = load_eval_sets(cfg)
    held_out = NoveltyIndex(threshold=threshold)
    held_out.add_many(
        enumerate(dict.fromkeys(p.prompt for problems in [*eval_sets.values(), canary] for p in problems))
    )
    flagged = sum(not held_out.score(p.prompt).novel for p in seeds)
    return {"threshold": threshold, "seeds": len(seeds), "flagged": flagged, "share": round(flagged / len(seeds), 4)}


def heldout_slice(cfg: Any, span: str, out: Path) -> list[str]:
    """Overrides that make questions START:END of the preset's held-out set the held-out set, written to a JSONL
    file under OUT: a slice that was not looked at when a setting was chosen from another slice's curves."""
    from serl.data import load_problems
    from serl.io import atomic_write_text

    start, _, end = span.partition(":")
    e = cfg.eval
    problems = load_problems(e.datasets[0], e.input_key, e.label_key)[int(start or 0) : int(end) if end else None]
    if not problems:
        raise SystemExit(f"--heldout-slice {span}: no questions in {e.datasets[0]} ({len(problems)} there)")
    path = out / f"heldout-{span.replace(':', '-')}.jsonl"
    rows = [{"id": p.id, "problem": p.prompt, "answer": p.label} for p in problems]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return [
        f"eval.datasets=[{path}]",
        "eval.input_key=problem",
        "eval.label_key=answer",
        f"eval.max_samples={len(rows)}",
    ]


def write_json(path: Path, value: Any) -> None:
    from serl.io import atomic_write_json

    atomic_write_json(path, value)


def measure(args: argparse.Namespace, arms: list[str], training: list[str], overrides: list[str], out: Path) -> dict:
    """Train every arm under OUT (or read back the finished ones) and compare each with base on the held-out set:
    the run's summary, and the per-question answers (base and each arm's last evaluation) that pooling needs."""
    from serl.config import load_config
    from serl.evaluation.metrics import paired_bootstrap
    from serl.report.reading import load_run
    from serl.trainer.evals import set_name

    out.mkdir(parents=True, exist_ok=True)
    if args.heldout_slice:
        overrides = [*overrides, *heldout_slice(load_config(args.preset, overrides), args.heldout_slice, out)]
    cfg = load_config(args.preset, overrides)
    dataset = set_name(cfg.eval.datasets[0])

    results: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(training):
        state = train_arm(name, args.preset, [*overrides, *ARMS[name]], out, evaluate_start=i == 0)
        results[name] = {"wall_s": round(state["wall_s"], 1), "invocations": state["invocations"]}

    first = load_run(out / training[0])
    answers = first.answers.get(dataset, {})
    if 0 not in answers:
        raise SystemExit(f"{training[0]}: no step-0 evaluation of {dataset} in {out / training[0]}")
    base = answers[0]
    questions = sorted(base)
    summary: dict[str, Any] = {"preset": args.preset, "dataset": dataset, "questions": len(questions)}
    summary["train_seed"] = cfg.train.seed
    summary["seed_contamination"] = seed_contamination(cfg)
    summary["base"] = {"pass@1": round(sum(base.values()) / len(base), 4)}
    if "base" in arms:
        summary["base"] |= sampled_eval("base", cfg, out, args.sample_n, args.sample_questions)
    finals: dict[str, dict[str, float]] = {}  # each arm's last held-out answers, question by question
    for name in training:
        run = load_run(out / name)
        steps = sorted(run.answers[dataset])
        final = finals[name] = run.answers[dataset][steps[-1]]
        diff = paired_bootstrap([base[q] for q in questions], [final[q] for q in questions])
        curve = [[s, round(sum(run.answers[dataset][s].values()) / len(run.answers[dataset][s]), 4)] for s in steps]
        if steps[0] != 0:
            curve.insert(0, [0, summary["base"]["pass@1"]])
        results[name] |= {
            "steps": steps[-1],
            "pass@1": round(sum(final.values()) / len(final), 4),
            **rounded(diff),
            "curve": curve,
            **vote_accuracy(run),
            **sampled_eval(name, cfg, out, args.sample_n, args.sample_questions),
        }
        checkpoints = out / name / "checkpoints"
        if not args.keep_checkpoints and checkpoints.exists():  # ~2 GB an arm: a six-seed bench would fill a disk
            shutil.rmtree(checkpoints)
            print(f"{name}: figures recorded; removed {checkpoints} (--keep-checkpoints keeps them)", file=sys.stderr)
    summary["arms"] = results
    if "serl" in finals and "shuffle" in finals:
        paired = paired_bootstrap([finals["shuffle"][q] for q in questions], [finals["serl"][q] for q in questions])
        summary["serl_minus_shuffle"] = rounded(paired)
    return {"summary": summary, "base": base, "finals": finals, "questions": questions}


def vote_accuracy(run: Any) -> dict[str, float | None]:
    """Where the training problems have labels (maj and gt arms), the means over steps of how often the majority
    answer equals the hidden label and a response's self-reward its ground-truth reward (TTRL's two figures)."""
    from serl import rundir as names
    from serl.report.reading import mean, series

    figures = {"label_accuracy": names.LABEL_ACCURACY, "reward_accuracy": names.REWARD_ACCURACY}
    return {k: None if (m := mean(series(run, key)[1])) is None else round(m, 4) for k, key in figures.items()}


def rounded(diff: Any) -> dict[str, Any]:
    return {"delta": round(diff.difference, 4), "ci95": [round(diff.low, 4), round(diff.high, 4)]}


def judge(gains: dict[str, dict[str, Any]], serl_minus_shuffle: dict[str, Any] | None, serl_wall_s: float | None):
    """The issue's targets from each arm's gain over base ({"delta", "ci95"}), the serl − shuffle difference and
    the serl arm's wall time (the longest one, over seeds)."""
    targets: dict[str, bool] = {}
    serl, gt, shuffle = (gains[a]["delta"] if a in gains else None for a in ("serl", "gt", "shuffle"))
    if serl is not None:
        targets["serl_gain_at_least_5_points_ci_above_0"] = serl >= 0.05 and gains["serl"]["ci95"][0] > 0
        targets["serl_within_45_min"] = serl_wall_s is not None and serl_wall_s <= 45 * 60
    if serl is not None and gt is not None:
        targets["serl_gain_at_least_half_of_gt"] = gt > 0 and serl >= gt / 2
    if shuffle is not None:
        below_serl = serl_minus_shuffle is not None and serl_minus_shuffle["ci95"][0] > 0
        targets["shuffle_no_significant_gain"] = gains["shuffle"]["ci95"][0] <= 0 or below_serl
    return targets


def print_run(summary: dict[str, Any]) -> None:
    print(f"train.seed={summary['train_seed']}")
    print(
        f"{'arm':8} {'steps':>5} {'pass@1':>7} {'Δ vs base':>9} {'95 % CI':>17} {'wall min':>8}  curve (step: pass@1)"
    )
    print(f"{'base':8} {0:5d} {summary['base']['pass@1']:7.3f}")
    for name, r in summary["arms"].items():
        ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
        curve = " ".join(f"{s}:{a:.3f}" for s, a in r["curve"])
        print(
            f"{name:8} {r['steps']:5d} {r['pass@1']:7.3f} {r['delta']:+9.3f} {ci:>17} {r['wall_s'] / 60:8.1f}  {curve}"
        )
    c = summary["seed_contamination"]
    print(
        f"seeds the serl arm's contamination check would drop (ROUGE-L F > {c['threshold']} against a held-out "
        f"question): {c['flagged']}/{c['seeds']}; the maj and gt arms train on them unscreened"
    )


def pool_seeds(runs: dict[int, dict]) -> dict[str, Any]:
    """Each arm's gain over base and serl − shuffle, pooled over the training seeds with the seed × question
    bootstrap: the interval covers what a different seed would have given, not only different questions."""
    from serl.evaluation.metrics import seed_question_bootstrap

    seeds = list(runs)
    questions = runs[seeds[0]]["questions"]
    for seed, run in runs.items():
        if run["questions"] != questions:
            raise SystemExit(f"train.seed={seed} was evaluated on other questions than train.seed={seeds[0]}")

    def pooled(minuend: str, subtrahend: str | None) -> dict[str, Any]:
        rows = []
        for run in runs.values():
            later = run["finals"][minuend]
            earlier = run["finals"][subtrahend] if subtrahend else run["base"]
            rows.append([later[q] - earlier[q] for q in questions])
        per_seed = [round(sum(row) / len(row), 4) for row in rows]
        return rounded(seed_question_bootstrap(rows)) | {"per_seed": per_seed}

    arms = list(runs[seeds[0]]["finals"])
    result: dict[str, Any] = {"seeds": seeds, "arms": {name: pooled(name, None) for name in arms}}
    for name in arms:
        walls = [run["summary"]["arms"][name]["wall_s"] for run in runs.values()]
        result["arms"][name] |= {"wall_s_max": max(walls), "wall_s_mean": round(sum(walls) / len(walls), 1)}
    if "serl" in arms and "shuffle" in arms:
        result["serl_minus_shuffle"] = pooled("serl", "shuffle")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-learn")
    parser.add_argument(
        "--arms", default="base,serl,maj,gt,shuffle", help="comma-separated, of base and " + ",".join(ARMS)
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="an override for every arm")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-selfplay")
    parser.add_argument("--sample-n", type=int, default=8, help="samples per question of the final sampled eval")
    parser.add_argument("--sample-questions", type=int, default=50, help="held-out questions in the sampled eval")
    parser.add_argument(
        "--heldout-slice",
        metavar="START:END",
        help="evaluate on these questions of the preset's held-out set instead of its first eval.max_samples",
    )
    parser.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        help="training seeds (train.seed): every arm runs once per seed under OUT/seed-S, and the targets are judged "
        "on the gains pooled over seeds, with a bootstrap over seeds and questions",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each arm's checkpoints (about 2 GB an arm); by default they go once its figures are recorded",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every child (OMP_NUM_THREADS)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - {"base", *ARMS})
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; use base and {', '.join(ARMS)}")
    training = [a for a in TRAINING_ORDER if a in arms]
    if not training:
        raise SystemExit("name at least one training arm: base is step 0 of the first one's evaluation")
    seeds = parse_seeds(args.seeds) if args.seeds else []

    if not seeds:
        run = measure(args, arms, training, args.overrides, args.out)
        summary = run["summary"]
        print_run(summary)
        serl_wall = summary["arms"]["serl"]["wall_s"] if "serl" in summary["arms"] else None
        summary["targets"] = judge(summary["arms"], summary.get("serl_minus_shuffle"), serl_wall)
    else:
        runs = {}
        for seed in seeds:  # seed by seed, so that a stopped bench has whole seeds to show
            runs[seed] = measure(
                args, arms, training, [*args.overrides, f"train.seed={seed}"], args.out / f"seed-{seed}"
            )
            print_run(runs[seed]["summary"])
        pooled = pool_seeds(runs)
        summary = {k: runs[seeds[0]]["summary"][k] for k in ("preset", "dataset", "questions", "seed_contamination")}
        summary |= {"per_seed": {str(s): run["summary"] for s, run in runs.items()}, "pooled": pooled}
        serl_wall = pooled["arms"]["serl"]["wall_s_max"] if "serl" in pooled["arms"] else None
        summary["targets"] = judge(pooled["arms"], pooled.get("serl_minus_shuffle"), serl_wall)
        print(f"pooled over train.seed in {seeds} (bootstrap over seeds and questions)")
        rows = [*pooled["arms"].items()] + (
            [("serl-shuffle", pooled["serl_minus_shuffle"])] if "serl_minus_shuffle" in pooled else []
        )
        for name, r in rows:
            per_seed = " ".join(f"{d:+.3f}" for d in r["per_seed"])
            print(f"{name:12} Δ {r['delta']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]  per seed: {per_seed}")
    print("targets:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in summary["targets"].items()))
    write_json(args.out / "summary.json", summary)
    print(json.dumps(summary))


def parse_seeds(text: str) -> list[int]:
    """'42,1,2' -> [42, 1, 2]; each seed once, in the order given."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--seeds {text!r}: give comma-separated integers, e.g. 42,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r}: give at least one seed, each once")
    return seeds


if __name__ == "__main__":
    main()
