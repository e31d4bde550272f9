"""One GRPO step of `serl train` against TRL's GRPOTrainer on the same job, in the same session.

The peer anchor is ``../shared/bench/trl_grpo_cpu.py`` (TRL GRPOTrainer on CPU): 8 prompts × 4 generations, 64 new
tokens, one optimizer update per generation batch of 32, lr 1e-6, beta 0, reward 1.0 when the completion contains
"\\boxed". It runs in its own interpreter (``--trl-python``, a venv with trl; ours must not have its torch or
transformers changed) on the embedded SmolLM2-135M-Instruct, materialised as an HF directory.

Our side is the real trainer, ``serl train`` as a subprocess in ``gt`` mode on a JSONL of the same 8 prompts, labelled
"\\boxed" and scored with ``reward.gt_match=contains`` (the same reward), GRPO advantages, kl_coef 0, the chat
template (as TRL's conversational prompts), no difficulty filtering (TRL has none), and its per-step wall time
(``time/step_s`` in metrics.jsonl, rollout + reward + update + engine sync) against TRL's per-step callback time.

    flock /tmp/serl_bench.lock .venv/bin/python benchmarks/bench_vs_trl.py [--steps 4] [--ablate]

The last line is JSON: {"trl_step_s", "serl_step_s", "ratio" (serl / trl), ...}; medians over the steps.
``--ablate`` also runs our side with each speed-up switched off in turn (ablations are ours only: TRL's runs once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / ".." / "shared" / "bench" / "trl_grpo_cpu.py"
# The anchor's prompts (its `qs`), in its order.
PAIRS = [(12, 35), (7, 8), (60, 2), (100, 37), (14, 27), (9, 9), (45, 45), (81, 19)]
QUESTION = "What is {a} + {b}? Put your final answer within \\boxed{{}}."
LABEL = "\\boxed"  # the anchor's reward: 1.0 when this occurs in the completion


def trl_run(python: str, model_dir: str, steps: int, workdir: Path) -> dict:
    """The anchor script as is, in workdir (it writes trl_out/ there); its last stdout line is its JSON."""
    started = time.perf_counter()
    proc = subprocess.run(
        [python, str(ANCHOR), model_dir, str(steps)], cwd=workdir, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"TRL anchor failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def serl_overrides(
    data: Path, steps: int, micro_batch: int, rollout_dtype: str | None, defer: bool, share: bool
) -> list[str]:
    """The anchor's job as serl config: sizes, reward, optimizer and sampling as in trl_grpo_cpu.py."""
    return [
        "train.mode=gt",
        f"data.seed_path={data}",
        f"data.train_path={data}",
        "data.input_key=problem",
        "data.label_key=answer",
        "reward.gt_match=contains",
        "reward.difficulty_low=0.0",  # TRL trains on every group
        "reward.difficulty_high=1.0",
        "rollout.n_samples_per_prompt=4",
        "rollout.max_new_tokens=64",
        "rollout.prompt_format=chat",  # TRL's conversational prompt: the chat template with the generation header
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=-1",
        f"rollout.dtype={rollout_dtype or 'null'}",
        "algo.advantage_estimator=grpo",
        "algo.kl_coef=0.0",
        "algo.loss_agg=token_mean_global",  # TRL's default loss_type (dapo): token mean over the whole batch
        "train.rollout_batch_size=8",
        "train.train_batch_size=32",  # one optimizer update per rollout batch of 8 × 4
        f"train.micro_train_batch_size={micro_batch}",
        "train.max_epochs=1",
        "train.learning_rate=1e-6",
        "train.lr_warmup_ratio=0.0",
        "train.adam_betas=[0.9, 0.999]",  # transformers' AdamW defaults
        "train.weight_decay=0.0",
        "train.max_grad_norm=1.0",
        f"train.instructions_per_iteration={8 * steps}",
        "train.num_iterations=1",
        f"train.max_steps={steps}",
        "train.save_every=0",  # TRL: save_strategy "no"
        # `expire` lets the trainer skip the old-log-prob forward (nothing carries over); with `keep` it scores
        # them at rollout time. Every group passes and a step needs exactly 8, so nothing is carried either way.
        f"train.carryover={'expire' if defer else 'keep'}",
        f"train.share_prompts={str(share).lower()}",
        "eval.datasets=[]",
        "eval.at_start=false",
        "log.tensorboard=false",  # TRL: report_to []
    ]


def serl_run(overrides: list[str], run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "serl", "train", "--run-dir", str(run_dir), "--quiet", "--no-report"]
    for item in overrides:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"serl train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "time/step_s" in r]
    phases = sorted({k for r in steps for k in r if k.startswith("time/") and k != "time/step_s"})
    return {
        "steps": len(steps),
        "step_s": [r["time/step_s"] for r in steps],
        "median_step_s": statistics.median(r["time/step_s"] for r in steps),
        "median_phase_s": {k[5:-2]: statistics.median(r.get(k, 0.0) for r in steps) for k in phases},
        "reward": [round(r.get("reward/ground_truth_ratio", float("nan")), 3) for r in steps],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    default_trl = ROOT / ".venv-trl" / "bin" / "python"
    parser.add_argument("--trl-python", default=str(default_trl) if default_trl.exists() else None)
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--micro-batch", type=int, default=8, help="train.micro_train_batch_size (divides 32)")
    parser.add_argument("--rollout-dtype", default="bfloat16", help="rollout.dtype; 'none' = the policy's (fp32)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (OMP_NUM_THREADS)")
    parser.add_argument("--skip-trl", action="store_true", help="our side only (ratio left out)")
    parser.add_argument("--ablate", action="store_true", help="also run ours with each speed-up switched off")
    args = parser.parse_args()
    if not args.skip_trl and (args.trl_python is None or not ANCHOR.exists()):
        raise SystemExit(f"need --trl-python (a venv with trl) and the anchor at {ANCHOR}; or pass --skip-trl")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # both children inherit it; torch reads it at start
    dtype = None if args.rollout_dtype.lower() in ("none", "null", "fp32", "float32") else args.rollout_dtype

    from serl.models import materialize

    model_dir, gguf = materialize(args.model)
    if gguf is not None:
        raise SystemExit(f"{args.model} is a GGUF file; TRL needs an HF model directory")
    ours = {"micro_batch": args.micro_batch, "rollout_dtype": dtype, "defer": True, "share": True}
    variants = {"serl": ours}
    if args.ablate:
        variants |= {
            "serl, fp32 rollout": {**ours, "rollout_dtype": None},
            "serl, old-logprob forward": {**ours, "defer": False},
            "serl, no prompt sharing": {**ours, "share": False},
            "serl, micro-batch 32": {**ours, "micro_batch": 32},
            "serl, none of these (micro-batch 4)": {
                "micro_batch": 4,
                "rollout_dtype": None,
                "defer": False,
                "share": False,
            },
        }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_vs_trl-") as tmp:
        work = Path(tmp)
        data = work / "prompts.jsonl"
        data.write_text(
            "".join(json.dumps({"problem": QUESTION.format(a=a, b=b), "answer": LABEL}) + "\n" for a, b in PAIRS)
        )
        if not args.skip_trl:
            print(f"TRL GRPOTrainer: {args.steps} steps ...", file=sys.stderr)
            results["trl"] = trl_run(args.trl_python, model_dir, args.steps, work)
        for i, (name, v) in enumerate(variants.items()):
            print(f"{name}: {args.steps} steps ...", file=sys.stderr)
            overrides = serl_overrides(data, args.steps, **v)
            results[name] = serl_run([f"model.policy={args.model}", *overrides], work / f"run{i}")

    trl = results.get("trl")
    print(f"{'run':38} {'median step s':>13} {'vs TRL':>7}  per-step s / phases (median s)")
    for name, r in results.items():
        ratio = f"{r['median_step_s'] / trl['median_step_s']:.2f}" if trl else "-"
        detail = ", ".join(f"{k} {v:.2f}" for k, v in r.get("median_phase_s", {}).items())
        steps = " ".join(f"{s:.1f}" for s in r.get("step_s", [])) or f"{r['steps']} steps"
        print(f"{name:38} {r['median_step_s']:13.2f} {ratio:>7}  [{steps}] {detail}")
    serl = results["serl"]
    summary = {
        "trl_step_s": round(trl["median_step_s"], 3) if trl else None,
        "serl_step_s": round(serl["median_step_s"], 3),
        "ratio": round(serl["median_step_s"] / trl["median_step_s"], 3) if trl else None,
        "steps": args.steps,
        "serl_phase_s": {k: round(v, 3) for k, v in serl["median_phase_s"].items()},
        "serl_reward": serl["reward"],
        "micro_batch": args.micro_batch,
        "rollout_dtype": dtype,
        "threads": args.threads,
    }
    if args.ablate:
        summary["ablations_step_s"] = {k: round(r["median_step_s"], 3) for k, r in results.items() if k != "trl"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
