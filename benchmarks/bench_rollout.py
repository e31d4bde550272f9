"""Rollout throughput: plain `model.generate` against serl's HFEngine, interleaved in one run, plus the matmul ceiling.

    .venv/bin/python benchmarks/bench_rollout.py                # 64 prompts x 4 samples x 128 new tokens, sampling
    .venv/bin/python benchmarks/bench_rollout.py --variant kv_cache=dynamic --variant max_batch_size=64

Both sides sample at temperature 1 (no top-k/top-p) with the same rows per batch; tokens are counted up to and
including the EOS. The ceiling is the measured fp32 matmul rate (2048^3, the same threads) divided by the FLOPs of
one decoded token (2 x parameters + attention over the mean context). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from serl.data import load_problems
from serl.models import load_policy
from serl.rollout import SamplingParams, format_prompt
from serl.rollout.hf import HFEngine

SEED_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math" / "seed_math_train_500.jsonl"


def matmul_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


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
        batch = tokenizer(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
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


def parse_variant(text: str) -> dict:
    key, _, value = text.partition("=")
    return {key: None if value == "none" else int(value) if value.isdigit() else value}


def main() -> None:
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
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_policy()
    model.eval()
    source = str(SEED_SET) if SEED_SET.is_file() else "embedded:arithmetic"
    problems = [p.prompt for p in load_problems(source, "problem", "answer", max_samples=args.prompts)]
    prompts = [format_prompt(tokenizer, problem, args.format) for problem in problems]
    prompt_lens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    engines = {"engine": HFEngine(model, tokenizer, max_batch_size=args.rows)}
    for text in args.variant:
        engines[text] = HFEngine(model, tokenizer, **{"max_batch_size": args.rows, **parse_variant(text)})

    runs = {}
    if not args.no_baseline:
        runs["baseline"] = lambda seed: run_generate(
            model, tokenizer, prompts, args.samples, args.new_tokens, args.rows, seed
        )
    for name, engine in engines.items():
        runs[name] = lambda seed, engine=engine: run_engine(engine, prompts, args.samples, args.new_tokens, seed)

    gflops = [matmul_gflops()]
    totals = {name: [0, 0.0] for name in runs}  # name -> [tokens, seconds], summed over rounds
    for round_index in range(args.rounds):
        for name, run in runs.items():  # interleaved, so a noisy neighbour hits every side alike
            start = time.perf_counter()
            tokens = run(args.seed + round_index)
            seconds = time.perf_counter() - start
            totals[name][0] += tokens
            totals[name][1] += seconds
            print(f"round {round_index} {name}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s")
    gflops.append(matmul_gflops())

    rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    mean_context = sum(prompt_lens) / len(prompt_lens) + args.new_tokens / 2
    per_token = flops_per_token(model, mean_context)
    ceiling = sum(gflops) / len(gflops) * 1e9 / per_token
    baseline = rates.get("baseline")
    result = {
        "baseline_tok_s": round(baseline, 1) if baseline else None,
        "engine_tok_s": round(rates["engine"], 1),
        "speedup": round(rates["engine"] / baseline, 2) if baseline else None,
        "ceiling_tok_s": round(ceiling, 1),
        "engine_over_ceiling": round(rates["engine"] / ceiling, 2),
        "matmul_gflops": [round(g, 1) for g in gflops],
        "gflop_per_token": round(per_token / 1e9, 3),
        "tokens": {name: int(tokens) for name, (tokens, _) in totals.items()},
        "variants_tok_s": {name: round(rate, 1) for name, rate in rates.items() if name not in ("baseline", "engine")},
        "threads": torch.get_num_threads(),
        "rows": args.rows,
        "config": f"{args.prompts}x{args.samples}x{args.new_tokens} {args.format}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
