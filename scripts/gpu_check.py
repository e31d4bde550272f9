#!/usr/bin/env python3
"""serl's GPU checks as one prepared call (issue 16), with a CPU dry mode that the suite runs so they cannot rot.

    bash scripts/gpu_check.sh --prepare          # on a CPU machine with a package registry: fills .gpucheck/
    bash scripts/gpu_check.sh                    # on the GPU machine: at most 8 minutes on one H200
    bash scripts/gpu_check.sh --only train_fsdp2,train_zero3   # a rerun of some checks
    bash scripts/gpu_check.sh --dry-run --out D  # on CPU, 35-45 s on 2 busy cores: tests/test_gpu_check.py

The checks, in order: `install` (the carried wheels), `env` (versions, device, measured bf16 matmul rate), `model`,
`smoke_tests` (tests/test_gpu_smoke.py: the HF-engine tests run, the vLLM ones skip without vllm), 2-step `serl
train` runs under `accelerate launch --num_processes 1`: `train_bf16` (bf16 mixed precision), `train_fsdp2`,
`train_lora_gc` (LoRA + gradient checkpointing), then `bench_rollout` and `bench_train_step` on CUDA, and last
`train_zero3` (DeepSpeed ZeRO-3 on one GPU; skipped when deepspeed cannot be imported). Every figure goes to
OUT/gpu_check.json, rewritten after each check so that a kill keeps what was done, and every check's output to
OUT/gpu_check.log; OUT is $OUT where set, else ./gpu_check_out. Each check runs in its own process group under its
own time limit, and no check starts once the budget is spent: one failing or hanging check does not stop the others.

The GPU machine has no network and takes at most 64 MiB of files along, so .gpucheck/ (git-ignored; name it in the
device call's `carry`) holds what its image lacks: wheels of serl's and DeepSpeed's dependencies, the embedded
model's config and tokenizer, the seed set. The model's weights do not fit (fp32 safetensors 513 MiB, its GGUF
94 MiB), so there the checks run a randomly initialised model of the same architecture, written where
`embedded:smollm2-135m` resolves under the checks' own SERL_CACHE: the same shapes and FLOPs per token, right for the
mechanics and the throughput, silent on quality. The training runs use `reward.no_majority=first`, so that the
random model's answerless groups still get a one-hot reward and every update has a gradient.

The dry mode builds a tiny model of that architecture, runs `env`, `model` and `train_lora_gc` for real on the CPU,
and validates the other command lines (in this process, so the suite stays fast): `accelerate launch` argument lists
through accelerate's own parser and config loader (and the config's strategy: FSDP version 2, ZeRO stage 3), serl's
part through serl's CLI parser and config, the benchmarks' through their own argument parsers, the smoke tests by
importing them. Renamed flags, moved or broken configs and misspelt overrides fail there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
CARRY = REPO / ".gpucheck"
CARRY_LIMIT_MIB = 64  # what one device call takes along: the working tree plus the carried paths
BUDGET_S = 480  # the 8 minutes on one H200
MIN_START_S = 10  # no check starts with less of the budget left
LOG_TAIL_CHARS = 1 << 20  # of each check's output in gpu_check.log (files back from the GPU machine: <= 16 MiB each)
SEED_SET = REPO / ".." / "shared" / "data" / "math" / "seed_math_train_500.jsonl"
MODEL_NAME = "smollm2-135m"  # `embedded:smollm2-135m` resolves to SERL_CACHE/models/smollm2-135m
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
MODEL_FILES += ("chat_template.jinja",)
TINY_MODEL = {  # the dry mode's model: SmolLM2's layout (GQA, tied embedding, its tokenizer), 3.2M parameters
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}

# What the GPU image's Python 3.12 lacks (KINDS.md's package list), at the versions this repo's venv runs.
WHEELS = {
    "math-verify": "0.9.0",
    "latex2sympy2_extended": "1.11.0",
    "antlr4-python3-runtime": "4.13.2",
    "rapidfuzz": "3.14.6",
    # DeepSpeed's dependencies missing there (typing-extensions: pydantic needs >= 4.16)
    "hjson": "3.1.0",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",
}
DEEPSPEED = "0.19.8"  # a source distribution only: --prepare builds it into a pure-Python wheel (no op compiled)
# serl's dependencies (pyproject.toml) that the GPU image has, and the one not needed there
ON_GPU_IMAGE = {"torch", "transformers", "accelerate", "safetensors", "typer", "rich", "pyyaml", "tensorboard"}
ON_GPU_IMAGE |= {"numpy", "matplotlib", "pyarrow", "peft"}
NOT_NEEDED_ON_GPU = {"gguf": "reads the embedded model's GGUF, which does not travel"}
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
for _tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014", "manylinux1"):
    PIP_TARGET += ["--platform", f"{_tag}_x86_64"]

# 2 tiny steps = 1 iteration, so each run also writes the iteration's HF export and a checkpoint (gathered from the
# shards under FSDP and ZeRO-3). maj mode: dataset prompts and majority votes, no self-instruction round to stall.
TRAIN_OVERRIDES = [
    "train.mode=maj",
    "reward.no_majority=first",
    "rollout.n_samples_per_prompt=4",
    "train.rollout_batch_size=2",
    "train.train_batch_size=8",
    "train.micro_train_batch_size=4",
    "train.instructions_per_iteration=4",
    "train.num_iterations=1",
    "train.max_steps=2",
    "train.save_every=0",
    "train.max_attempts_per_step=4",
    "train.lr_warmup_ratio=0.0",
    "reward.difficulty_low=0.0",
    "reward.difficulty_high=1.0",
    "reward.num_workers=0",
    "eval.datasets=[]",
    "eval.at_start=false",
    "log.tensorboard=false",
]
LORA_GC = ["model.lora.rank=8", "model.lora.alpha=16", "model.gradient_checkpointing=true", "algo.kl_coef=0.01"]


class CheckFailed(Exception):
    """A check ran, but what it produced is wrong."""


@dataclasses.dataclass
class Check:
    name: str
    argv: list[str]
    timeout_s: float
    verify: Callable[[str], dict[str, Any]]  # the check's output -> its figures; raises CheckFailed
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    skip: Callable[[dict[str, Any]], str | None] = lambda report: None  # the report so far -> why not to run it
    validate: Callable[[list[str]], dict[str, Any]] | None = None  # set: the dry mode checks argv instead of running


# ---------------------------------------------------------------------------------------------------- the plan


def plan(dry: bool, work: Path, carry: Path, python: str) -> list[Check]:
    """The checks, most important first. The dry mode keeps every name and command line, at tiny sizes."""
    device = "cpu" if dry else "cuda"
    launch = [python, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    bf16 = [*launch, "--mixed_precision", "bf16"]
    fsdp2 = [*launch, "--config_file", "configs/accelerate/gpu_fsdp.yaml"]
    zero3 = [*launch, "--config_file", "configs/accelerate/gpu_zero3.yaml"]

    def train(name: str, launcher: list[str], extra: list[str], expect: dict[str, Any] | None) -> Check:
        """A 2-step run; EXPECT (what the launch must resolve to) set: the dry mode validates it."""
        run_dir = work / name
        argv = [*launcher, "-m", "serl", "train", "--json-log", "--no-report", "--preset", "cpu-demo"]
        argv += ["--run-dir", str(run_dir)]
        for override in [*TRAIN_OVERRIDES, f"rollout.max_new_tokens={8 if dry else 32}", *extra]:
            argv += ["--set", override]
        validate = None if expect is None else lambda argv: validate_launch(argv, expect)
        return Check(name, argv, 180, verify_train(run_dir), validate=validate)

    def bench(name: str, sizes: list[str]) -> Check:
        argv = [python, f"benchmarks/{name}.py", "--device", device, *sizes]
        return Check(name, argv, 150, last_json, validate=validate_script if dry else None)

    rollout = ["--prompts", "128", "--samples", "8", "--new-tokens", "256", "--rows", "1024"]
    step = ["--sequences", "64", "--prompt-tokens", "256", "--response-tokens", "256", "--repeats", "5"]
    if dry:
        rollout = ["--prompts", "2", "--samples", "2", "--new-tokens", "4", "--rows", "4", "--matmul-seconds", "0.05"]
        step = ["--sequences", "4", "--prompt-tokens", "8", "--response-tokens", "8", "--repeats", "1"]
        step += ["--micro-batches", "2", "--matmul-seconds", "0.05"]
    problems = carry / "data" / SEED_SET.name
    rollout += ["--problems", str(problems) if problems.is_file() else "embedded:arithmetic"]
    dry_flag = ["--dry-run"] if dry else []
    wheels = sorted((carry / "wheels").glob("*.whl"))
    install = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    install += ["--upgrade", "--target", str(work / "site"), *map(str, wheels)]
    smoke = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_smoke.py"]
    smoke += [f"--junitxml={work / 'smoke.xml'}"]
    source = carry / "model"

    checks = [
        Check("install", install, 120, lambda _: carried(wheels), skip=lambda _: install_skip(dry, wheels, carry)),
        Check("env", [python, str(SCRIPT), "--probe-env", *dry_flag], 90, verify_env(dry)),
        Check(
            "model",
            [python, str(SCRIPT), "--build-model", str(work / "cache"), "--source", str(source), *dry_flag],
            300,  # here, on a cold cache, it first converts the embedded GGUF (once; the suite needs it anyway)
            last_json,
            env={"SERL_CACHE": os.environ.get("SERL_CACHE", "")},  # the installed embedded model's cache, not ours
        ),
        Check("smoke_tests", smoke, 240, verify_smoke(work / "smoke.xml"), validate=collect_tests if dry else None),
        train("train_bf16", bf16, [], {"mixed_precision": "bf16"} if dry else None),
        train("train_fsdp2", fsdp2, [], {"distributed_type": "FSDP", "fsdp_version": 2} if dry else None),
        train("train_lora_gc", bf16, LORA_GC, None),  # runs in the dry mode too: CPU, tiny model
        bench("bench_rollout", rollout),
        bench("bench_train_step", step),
        train("train_zero3", zero3, [], {"distributed_type": "DEEPSPEED", "zero_stage": 3} if dry else None),
    ]
    checks[-1].skip = lambda report: None if dry or figure(report, "env", "packages", "deepspeed") else NO_DEEPSPEED
    return checks


NO_DEEPSPEED = "deepspeed cannot be imported: bash scripts/gpu_check.sh --prepare carries its wheel"


def install_skip(dry: bool, wheels: list[Path], carry: Path) -> str | None:
    if dry:
        return "dry run: this venv has every package"
    if not wheels:
        return f"no wheels in {carry / 'wheels'}: run --prepare where a package registry is reachable"
    return None


def carried(wheels: list[Path]) -> dict[str, Any]:
    return {"wheels": [w.name for w in wheels], "mib": round(sum(w.stat().st_size for w in wheels) / 2**20, 1)}


def figure(report: dict[str, Any], check: str, *keys: str) -> Any:
    """A figure of an earlier check in the report; None when absent."""
    for record in report["checks"]:
        if record["name"] == check:
            value: Any = record.get("figures", {})
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value
    return None


# ---------------------------------------------------------------------------------------------------- verifying


def last_json(output: str) -> dict[str, Any]:
    """The last line of the output that is a JSON object (the benchmarks' convention)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise CheckFailed("no JSON line in the output")


def verify_env(dry: bool) -> Callable[[str], dict[str, Any]]:
    def verify(output: str) -> dict[str, Any]:
        env = last_json(output)
        if not dry and not env["cuda"]:
            raise CheckFailed("torch sees no CUDA device")
        return env

    return verify


def verify_smoke(junit: Path) -> Callable[[str], dict[str, Any]]:
    """Every test passed or skipped, and at least one ran."""

    def verify(output: str) -> dict[str, Any]:
        results = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            results[case.get("name", "?")] = "passed" if outcome is None else f"{outcome.tag}: {outcome.get('message')}"
        failed = [name for name, result in results.items() if result.startswith(("failure", "error"))]
        passed = [name for name, result in results.items() if result == "passed"]
        if failed or not passed:
            raise CheckFailed(f"failed: {failed}; passed: {passed}")
        return {"tests": results, "passed": len(passed)}

    return verify


def verify_train(run_dir: Path) -> Callable[[str], dict[str, Any]]:
    """Two logged steps with finite losses and non-zero gradients, then the iteration's HF export and checkpoint."""

    def verify(output: str) -> dict[str, Any]:
        metrics_file = run_dir / "metrics.jsonl"
        if not metrics_file.is_file():
            raise CheckFailed(f"no {metrics_file}")
        metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        if [m["step"] for m in metrics] != [1, 2]:
            raise CheckFailed(f"steps logged: {[m['step'] for m in metrics]}, expected [1, 2]")
        for m in metrics:
            if not math.isfinite(m["train/loss"]) or m["train/nonfinite_steps"]:
                raise CheckFailed(f"step {m['step']}: loss {m['train/loss']}, {m['train/nonfinite_steps']} non-finite")
            if not (math.isfinite(m["train/grad_norm"]) and m["train/grad_norm"] > 0):
                raise CheckFailed(f"step {m['step']}: grad norm {m['train/grad_norm']}")
        export = run_dir / "checkpoints" / "iter_01_hf"
        if not (export / "config.json").is_file() or not any(export.glob("*.safetensors")):
            raise CheckFailed(f"no HF export in {export}")
        if not (run_dir / "checkpoints" / "step_000002").is_dir():
            raise CheckFailed("no checkpoint step_000002")
        keys = ["time/step_s", "time/rollout_s", "time/experience_s", "time/train_s", "train/loss", "train/grad_norm"]
        keys += ["train/kl", "train/response_length"]
        return {key: [m.get(key) for m in metrics] for key in keys}

    return verify


# ---------------------------------------------------------------------------------------------------- validating


def validate_launch(argv: list[str], expect: dict[str, Any]) -> dict[str, Any]:
    """An `accelerate launch ... -m serl CMD ...` line, without running it: the launch part through accelerate's own
    parser and config loader, the serl part through serl's CLI parser and config loader."""
    import typer
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    from serl.cli import app
    from serl.config import load_config

    if argv[1:3] != ["-m", "accelerate.commands.launch"]:
        raise CheckFailed(f"not an accelerate launch: {shlex.join(argv[:3])}")
    args = parse_or_fail(launch_command_parser(), argv[3:])
    found: dict[str, Any] = {"num_processes": args.num_processes, "mixed_precision": args.mixed_precision}
    if args.config_file:
        config = load_config_from_file(args.config_file)  # unknown keys are an error there
        found["distributed_type"] = config.distributed_type.value
        found["mixed_precision"] = args.mixed_precision or config.mixed_precision
        found["fsdp_version"] = (config.fsdp_config or {}).get("fsdp_version")
        found["zero_stage"] = (config.deepspeed_config or {}).get("zero_stage")
    if not args.module or args.training_script != "serl":
        raise CheckFailed(f"expected `-m serl`, got {args.training_script!r}")
    group = typer.main.get_command(app)
    name, *rest = args.training_script_args
    command = getattr(group, "commands", {}).get(name)
    if command is None:
        raise CheckFailed(f"serl has no command {name!r}")
    try:
        params = command.make_context(f"serl {name}", rest).params
    except Exception as err:  # typer's (vendored) click: a usage error names the flag
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        raise CheckFailed(f"serl {name}: {message}") from err
    cfg = load_config(params["preset"], params["set_"])  # a misspelt key or a bad value raises ConfigError
    found.update(serl=name, preset=params["preset"], overrides=len(params["set_"]), train_mode=cfg.train.mode)
    wrong = {key: found.get(key) for key, value in expect.items() if found.get(key) != value}
    if wrong:
        raise CheckFailed(f"expected {expect}; the launch resolves to {wrong}")
    return found


def validate_script(argv: list[str]) -> dict[str, Any]:
    """A `python benchmarks/NAME.py ARGS` line through the script's own argument parser."""
    return vars(parse_or_fail(load_module(REPO / argv[1]).parse_args, argv[2:]))


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise CheckFailed(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_or_fail(parser: argparse.ArgumentParser | Callable[[list[str]], argparse.Namespace], argv: list[str]):
    """argparse exits on a bad argument list; a validation wants an error naming it."""
    parse = parser.parse_args if isinstance(parser, argparse.ArgumentParser) else parser
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            return parse(argv)
    except SystemExit as err:
        lines = usage.getvalue().strip().splitlines() or [f"exit {err.code}"]
        raise CheckFailed(f"bad arguments: {lines[-1]}") from err


def collect_tests(argv: list[str]) -> dict[str, Any]:
    """The smoke tests imported, not run (an import error or a renamed API they import fails here)."""
    path = REPO / next(arg for arg in argv if arg.endswith(".py"))
    module = load_module(path)
    tests = [name for name in vars(module) if name.startswith("test_") and callable(getattr(module, name))]
    if not tests:
        raise CheckFailed(f"no tests in {path}")
    return {"collected": tests}


# ---------------------------------------------------------------------------------------------------- running


def run_checks(
    checks: list[Check], dry: bool, out: Path, work: Path, budget_s: float, header: dict[str, Any]
) -> dict[str, Any]:
    """Run CHECKS in order, each in its own process group, until the budget is spent; the JSON after each."""
    out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu_check.log"
    log_path.unlink(missing_ok=True)
    report: dict[str, Any] = {**header, "budget_s": budget_s, "checks": []}
    start = time.monotonic()
    for check in checks:
        record: dict[str, Any] = {"name": check.name, "command": shlex.join(check.argv)}
        remaining = budget_s - (time.monotonic() - start)
        reason = check.skip(report)
        if reason is None and remaining < MIN_START_S:
            reason = f"out of time: {remaining:.0f} s of the {budget_s:.0f} s budget left"
        if reason:
            record.update(status="skipped", reason=reason)
        elif dry and check.validate is not None:
            record.update(validated(check))
        else:
            record.update(execute(check, min(check.timeout_s, remaining), work, log_path))
        report["checks"].append(record)
        report["wall_s"] = round(time.monotonic() - start, 1)
        report["summary"] = {s: sum(r["status"] == s for r in report["checks"]) for s in ("pass", "fail", "skipped")}
        write_json(out / "gpu_check.json", report)
        note = record.get("error") or record.get("reason") or ""
        line = f"---- {check.name}: {record['status']} ({record.get('mode', '-')}, {record.get('wall_s', 0)} s) {note}"
        with log_path.open("a") as log:
            log.write(line + "\n")
        print(line, flush=True)
    return report


def validated(check: Check) -> dict[str, Any]:
    started = time.monotonic()
    record: dict[str, Any] = {"mode": "validated"}
    try:
        record.update(status="pass", figures=check.validate(check.argv))  # type: ignore[misc]
    except Exception as err:  # any failure of a validation is that check's failure, not the run's
        record.update(status="fail", error=f"{type(err).__name__}: {err}"[:500])
    return {**record, "wall_s": round(time.monotonic() - started, 1)}


def execute(check: Check, timeout_s: float, work: Path, log_path: Path) -> dict[str, Any]:
    output_path = work / "logs" / f"{check.name}.out"
    started = time.monotonic()
    with output_path.open("w") as output_file:
        # its own process group, so that a timeout also ends the processes a launcher started
        proc = subprocess.Popen(
            check.argv,
            cwd=REPO,
            env={**os.environ, **check.env},
            stdout=output_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
    record: dict[str, Any] = {"mode": "ran", "wall_s": round(time.monotonic() - started, 1), "returncode": returncode}
    output = output_path.read_text(errors="replace")
    with log_path.open("a") as log:
        log.write(f"==== {check.name}: {shlex.join(check.argv)}\n{output[-LOG_TAIL_CHARS:]}\n")
    if returncode is None:
        return {**record, "status": "fail", "error": f"timed out after {timeout_s:.0f} s"}
    if returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-1:] or [""]
        return {**record, "status": "fail", "error": f"exit {returncode}: {last[0][:300]}"}
    try:
        return {**record, "status": "pass", "figures": check.verify(output)}
    except (CheckFailed, KeyError, TypeError, ValueError, OSError, ET.ParseError) as err:
        return {**record, "status": "fail", "error": f"{type(err).__name__}: {err}"[:500]}


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------- sub-commands


def probe_env(dry: bool) -> dict[str, Any]:
    """Versions, the device, and the bf16 matmul rate that the benchmarks' fractions can be read against."""
    import torch

    packages = {}
    for name in ("torch", "transformers", "accelerate", "peft", "deepspeed", "vllm", "math-verify", "rapidfuzz"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {"python": sys.version.split()[0], "packages": packages, "cuda": cuda}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda_version=torch.version.cuda)
    size = 8192 if cuda and not dry else 256
    a, b = (torch.randn(size, size, dtype=torch.bfloat16, device="cuda" if cuda else "cpu") for _ in range(2))
    sync = torch.cuda.synchronize if cuda else lambda: None
    for _ in range(3):
        a @ b
    sync()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    sync()
    env.update(bf16_matmul_tflops=round(2 * size**3 * reps / (time.perf_counter() - start) / 1e12, 2), matmul_size=size)
    return env


def build_model(cache: Path, source: Path, dry: bool) -> dict[str, Any]:
    """A randomly initialised model of the embedded model's architecture (tiny in the dry mode), saved where
    `embedded:smollm2-135m` resolves under CACHE, from the carried config and tokenizer, or else the installed
    embedded model's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if not (source / "config.json").is_file():
        from serl.models import materialize

        source = Path(materialize(f"embedded:{MODEL_NAME}")[0])
    config = AutoConfig.from_pretrained(source)
    if dry:
        config.update(TINY_MODEL)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(source)
    target = cache / "models" / MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return {
        "model": "random init, SmolLM2-135M architecture" + (" (tiny)" if dry else ""),
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "config_from": str(source),
    }


def prepare(carry: Path) -> dict[str, Any]:
    """Fill CARRY with what the GPU machine lacks: the model's config and tokenizer, the seed set, the wheels."""
    from serl.models import materialize

    model_dir = Path(materialize(f"embedded:{MODEL_NAME}")[0])
    (carry / "model").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, carry / "model" / name)
    if SEED_SET.is_file():
        (carry / "data").mkdir(exist_ok=True)
        shutil.copy2(SEED_SET, carry / "data" / SEED_SET.name)
    wheels = carry / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pins = [f"{name}=={version}" for name, version in WHEELS.items()]
    subprocess.run([*pip, "download", "-q", "--no-deps", *PIP_TARGET, "-d", str(wheels), *pins], check=True)
    with tempfile.TemporaryDirectory() as sdist:
        pin = f"deepspeed=={DEEPSPEED}"
        subprocess.run([*pip, "download", "-q", "--no-deps", "--no-binary=:all:", "-d", sdist, pin], check=True)
        (tarball,) = Path(sdist).glob("deepspeed-*.tar.gz")
        # DS_ACCELERATOR=cuda records the CUDA op list, as a build on the GPU machine would; DS_BUILD_OPS=0 compiles
        # none (DeepSpeed builds an op when first used; ZeRO-3 with torch's AdamW uses none)
        env = {**os.environ, "DS_ACCELERATOR": "cuda", "DS_BUILD_OPS": "0"}
        build = [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(tarball)]
        subprocess.run(build, check=True, env=env)
    tree, carried_bytes = tree_bytes(), folder_bytes(carry)
    return {
        "tree_mib": round(tree / 2**20, 2),
        "carry_mib": round(carried_bytes / 2**20, 2),
        "total_mib": round((tree + carried_bytes) / 2**20, 2),
        "limit_mib": CARRY_LIMIT_MIB,
        "files": {str(p.relative_to(carry)): p.stat().st_size for p in sorted(carry.rglob("*")) if p.is_file()},
    }


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def tree_bytes() -> int:
    """The working tree that travels: tracked files and untracked ones that git does not ignore."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sum((REPO / name).stat().st_size for name in listing.split("\0") if name and (REPO / name).is_file())


def git_head() -> str | None:
    """The commit checked, where the tree came with its .git (a device call sends the files alone)."""
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    return found.stdout.strip() or None


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on CPU, tiny: run what the CPU can, validate the rest")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--work", type=Path, default=None, help="run dirs, logs and model cache (default: a temp dir)")
    parser.add_argument("--carry", type=Path, default=CARRY)
    parser.add_argument("--budget-s", type=float, default=BUDGET_S)
    parser.add_argument("--only", default="", help="comma-separated check names (install, env and model always run)")
    parser.add_argument("--prepare", action="store_true", help="fill the carry folder (needs a package registry)")
    parser.add_argument("--probe-env", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build-model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.probe_env:
        print(json.dumps(probe_env(args.dry_run)))
    elif args.build_model:
        print(json.dumps(build_model(args.build_model, args.source, args.dry_run)))
    elif args.prepare:
        print(json.dumps(prepare(args.carry), indent=1))
    else:
        sys.exit(run(args))


def run(args: argparse.Namespace) -> int:
    work = args.work or Path(tempfile.mkdtemp(prefix="serl-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    checks = plan(args.dry_run, work, args.carry, sys.executable)
    if args.only:
        wanted = {"install", "env", "model", *args.only.split(",")}
        unknown = wanted - {check.name for check in checks}
        if unknown:
            raise SystemExit(f"unknown checks {sorted(unknown)}; have {[check.name for check in checks]}")
        checks = [check for check in checks if check.name in wanted]
    # the carried wheels (installed by `install`) come first on every check's path, then serl's own sources
    paths = [str(work / "site"), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    env = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.dry_run:
        env["OMP_NUM_THREADS"] = "1"  # the dry mode shares a few cores with other jobs
    header = {
        "mode": "dry-run" if args.dry_run else "gpu",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_head(),
        "work": str(work),
    }
    os.environ.update(env, SERL_CACHE=str(work / "cache"))  # `model` writes the model there; `plan` kept the old one
    report = run_checks(checks, args.dry_run, args.out, work, args.budget_s, header)
    print(json.dumps(report["summary"]))
    return 1 if report["summary"]["fail"] else 0


if __name__ == "__main__":
    main()
