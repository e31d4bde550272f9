"""Rollout throughput: plain `model.generate` against serl's HFEngine, interleaved in one run, plus the matmul ceiling.

    .venv/bin/python benchmarks/bench_rollout.py                # 64 prompts x 4 samples x 128 new tokens, sampling
    .venv/bin/python benchmarks/bench_rollout.py --variant kv_cache=dynamic --variant max_batch_size=64
    .venv/bin/python benchmarks/bench_rollout.py --no-baseline --variant hf.SHARE_PREFILL=0 --variant dtype=bfloat16
    python benchmarks/bench_rollout.py --device cuda --prompts 128 --samples 8 --new-tokens 256 --rows 1024

A variant is comma-separated HFEngine settings (`dtype=bfloat16,num_threads=1`) and `hf.NAME=value` switches of
`serl.rollout.hf` (BUCKET_BY_LENGTH, SHARE_PREFILL, DROP_FRACTION; 0 turns a switch off, DROP_FRACTION=2 never drops)
or `decoders.SEGMENTS=0` (one KV cache for the whole batch instead of one per length segment).

Both sides sample at temperature 1 (no top-k/top-p) with the same rows per batch; tokens are counted up to and
including the EOS. The ceiling is the measured fp32 matmul rate (2048^3, the same threads) divided by the FLOPs of
one decoded token (2 x parameters + attention over the mean context); `ceiling_bf16_tok_s` does the same with the
bf16 matmul rate, the ceiling of a `--dtype bfloat16` engine. The last line printed is one JSON object.

`--device cuda` loads the policy in bf16 (serl's default on a GPU) and measures the matmul rates on the GPU (8192^3;
`engine_over_ceiling_bf16` is then the fraction of the GPU's measured bf16 matmul rate); per-CPU-second figures
mean nothing there and are null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from serl.data import load_problems
from serl.models import load_policy
from serl.rollout import SamplingParams, decoders, format_prompt, hf
from serl.rollout.hf import HFEngine

SEED_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math" / "seed_math_train_500.jsonl"


def matmul_gflops(
    size: int = 2048, seconds: float = 2.0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[float, float]:
    """GFLOP per wall second and per second of this process's CPU time."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    a @ b  # warm-up
    sync()
    reps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if reps % 8 == 0:
            sync()  # on a GPU the launches run ahead of the clock; settle every few
    sync()
    flops = 2 * size**3 * reps / 1e9
    return flops / (time.perf_counter() - start), flops / (time.process_time() - cpu)


def flops_per_token(model: torch.nn.Module, mean_context: float) -> float:
    config = model.config
    params = sum(p.numel() for p in model.parameters())  # a tied embedding counts once: as the LM head's matmul
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * mean_context
    return 2 * params + attention


def run_generate(model, tokenizer, prompts: list[str], samples: int, new_tokens: int, rows: int, seed: int) -> int:
    """Plain model.generate, `rows // samples` prompts per call; returns the tokens generated up to each EOS."""
    torch.manual_seed(seed)
    per_call = max(1, rows // samples)
    eos = tokenizer.eos_token_id
    tokens = 0
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        batch = tokenizer(chunk, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=new_tokens,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in out[:, batch["input_ids"].shape[1] :].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens


def run_engine(engine: HFEngine, prompts: list[str], samples: int, new_tokens: int, seed: int) -> int:
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=seed)
    return sum(len(c.response_ids) for c in engine.generate(prompts, params, n=samples))


def engine_dtype(engine: HFEngine) -> torch.dtype:
    return next(engine.runner.parameters()).dtype


def parse_variant(text: str) -> dict:
    key, _, value = text.partition("=")
    return {key: None if value == "none" else float(value) if is_number(value) else value}


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


CPU_TIME_FIGURES = (
    "engine_tok_per_cpu_s",
    "speedup_cpu",
    "engine_over_ceiling_cpu",
    "engine_over_ceiling_bf16_cpu",
    "variants_tok_per_cpu_s",
)
SWITCH_MODULES = {"hf": hf, "decoders": decoders}  # --variant hf.SHARE_PREFILL=0, --variant decoders.SEGMENTS=0


@contextlib.contextmanager
def patched(switches: dict) -> Iterator[None]:
    """Set module switches (`hf.SHARE_PREFILL`, `decoders.SEGMENTS`, ...) for one run, then restore them."""
    targets = {key: (SWITCH_MODULES[key.split(".")[0]], key.split(".", 1)[1]) for key in switches}
    saved = {key: getattr(module, name) for key, (module, name) in targets.items()}
    for key, (module, name) in targets.items():
        setattr(module, name, type(saved[key])(switches[key]))
    try:
        yield
    finally:
        for key, (module, name) in targets.items():
            setattr(module, name, saved[key])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--format", default="chat_boxed", help="raw | chat | chat_boxed")
    parser.add_argument("--rows", type=int, default=256, help="rows (prompt x sample) per batch, both sides")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for everything (default: torch's)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved baseline/engine rounds")
    parser.add_argument("--no-baseline", action="store_true", help="engine variants only")
    parser.add_argument("--variant", action="append", default=[], help="extra HFEngine setting, e.g. kv_cache=dynamic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default=None, help="engine rollout dtype, e.g. bfloat16")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the policy in bf16")
    parser.add_argument("--problems", default=None, help="problem file (default: seed set, else embedded:arithmetic)")
    parser.add_argument("--matmul-seconds", type=float, default=2.0, help="length of each matmul-rate measurement")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    model, tokenizer = load_policy(device=args.device)
    model.eval()
    source = args.problems or (str(SEED_SET) if SEED_SET.is_file() else "embedded:arithmetic")
    problems = [p.prompt for p in load_problems(source, "problem", "answer", max_samples=args.prompts)]
    prompts = [format_prompt(tokenizer, problem, args.format) for problem in problems]
    prompt_lens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    engines = {"engine": HFEngine(model, tokenizer, max_batch_size=args.rows, dtype=args.dtype)}
    switches = {}  # variant -> serl.rollout.hf module switches, e.g. --variant hf.SHARE_PREFILL=0
    for text in args.variant:
        settings = {}
        for part in text.split(","):
            setting = parse_variant(part)
            key = next(iter(setting))
            if key.split(".")[0] in SWITCH_MODULES:
                switches.setdefault(text, {})[key] = setting[key]
            else:
                settings[key] = int(setting[key]) if isinstance(setting[key], float) else setting[key]
        engines[text] = HFEngine(model, tokenizer, **{"max_batch_size": args.rows, **settings})

    runs = {}
    if not args.no_baseline:
        runs["baseline"] = lambda seed: run_generate(
            model, tokenizer, prompts, args.samples, args.new_tokens, args.rows, seed
        )
    for name, engine in engines.items():

        def run(seed: int, engine: HFEngine = engine, name: str = name) -> int:
            with patched(switches.get(name, {})):
                return run_engine(engine, prompts, args.samples, args.new_tokens, seed)

        runs[name] = run

    size = 8192 if cuda else 2048

    def measure(dtype: torch.dtype) -> tuple[float, float]:
        return matmul_gflops(size, args.matmul_seconds, dtype, args.device)

    gflops, gflops_bf16 = [measure(torch.float32)], [measure(torch.bfloat16)]
    totals = {name: [0, 0.0, 0.0] for name in runs}  # name -> [tokens, wall s, cpu s], summed over rounds
    for round_index in range(args.rounds):
        for name, run in runs.items():  # interleaved, so a noisy neighbour hits every side alike
            start, cpu = time.perf_counter(), time.process_time()
            tokens = run(args.seed + round_index)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            for k, value in enumerate((tokens, seconds, cpu)):
                totals[name][k] += value
            print(
                f"round {round_index} {name}: {tokens} tokens in {seconds:.1f}s ({cpu:.1f} cpu-s) = "
                f"{tokens / seconds:.1f} tok/s",
                flush=True,
            )
    gflops.append(measure(torch.float32))
    gflops_bf16.append(measure(torch.bfloat16))

    rates = {name: tokens / seconds for name, (tokens, seconds, _) in totals.items()}
    cpu_rates = {name: tokens / cpu for name, (tokens, _, cpu) in totals.items()}
    mean_context = sum(prompt_lens) / len(prompt_lens) + args.new_tokens / 2
    per_token = flops_per_token(model, mean_context)

    def ceiling_of(measured: list[tuple[float, float]], kind: int) -> float:
        return sum(m[kind] for m in measured) / len(measured) * 1e9 / per_token

    ceiling, ceiling_bf16 = ceiling_of(gflops, 0), ceiling_of(gflops_bf16, 0)
    baseline_cpu = cpu_rates.get("baseline")
    baseline = rates.get("baseline")
    result = {
        "baseline_tok_s": round(baseline, 1) if baseline else None,
        "engine_tok_s": round(rates["engine"], 1),
        "speedup": round(rates["engine"] / baseline, 2) if baseline else None,
        "ceiling_tok_s": round(ceiling, 1),
        "engine_over_ceiling": round(rates["engine"] / ceiling, 2),
        "ceiling_bf16_tok_s": round(ceiling_bf16, 1),
        "engine_over_ceiling_bf16": round(rates["engine"] / ceiling_bf16, 2),
        "engine_dtype": str(engine_dtype(engines["engine"])),
        # per second of this process's CPU time: what other jobs on shared cores do not distort
        "engine_tok_per_cpu_s": round(cpu_rates["engine"], 1),
        "speedup_cpu": round(cpu_rates["engine"] / baseline_cpu, 2) if baseline_cpu else None,
        "engine_over_ceiling_cpu": round(cpu_rates["engine"] / ceiling_of(gflops, 1), 2),
        "engine_over_ceiling_bf16_cpu": round(cpu_rates["engine"] / ceiling_of(gflops_bf16, 1), 2),
        "matmul_gflops": [round(g[0], 1) for g in gflops],
        "matmul_bf16_gflops": [round(g[0], 1) for g in gflops_bf16],
        "gflop_per_token": round(per_token / 1e9, 3),
        "tokens": {name: int(tokens) for name, (tokens, _, _) in totals.items()},
        "variants_tok_s": {name: round(rate, 1) for name, rate in rates.items() if name not in ("baseline", "engine")},
        "variants_tok_per_cpu_s": {
            name: round(rate, 1) for name, rate in cpu_rates.items() if name not in ("baseline", "engine")
        },
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "matmul_size": size,
        "threads": torch.get_num_threads(),
        "rows": args.rows,
        "config": f"{args.prompts}x{args.samples}x{args.new_tokens} {args.format}",
    }
    if cuda:  # CPU seconds say nothing about GPU work
        result.update(dict.fromkeys(CPU_TIME_FIGURES))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
