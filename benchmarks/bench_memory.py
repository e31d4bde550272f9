"""Peak memory (RSS) of one RL training step on the embedded model: full fine-tuning, full + gradient checkpointing,
LoRA, LoRA + gradient checkpointing. Each configuration runs in a fresh subprocess, so no peak leaks between them.

The step is what the loop does per training step: `make_experience` (policy and reference log-probs; the reference is
a second model copy for full fine-tuning, the adapter-disabled policy for LoRA) and `PolicyTrainer.train` (forward,
backward, AdamW, whose state is allocated in this first step). Peak = the process's RSS high-water mark (VmHWM,
reset after loading) during the step; `setup_rss_mb` is the RSS before it (weights, reference, Python, torch).

    flock /tmp/serl_bench.lock .venv/bin/python benchmarks/bench_memory.py [--sequences 16 --prompt-tokens 64 \
        --response-tokens 256 --micro-batch 8 --lora-rank 16]

Prints one line per configuration, then one JSON line: {"configs": {name: {"peak_rss_mb", ...}}, ...}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONFIGS = {
    "full": {"lora": False, "checkpointing": False},
    "full+gc": {"lora": False, "checkpointing": True},
    "lora": {"lora": True, "checkpointing": False},
    "lora+gc": {"lora": True, "checkpointing": True},
}


def status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Reset this process's RSS high-water mark to its current RSS (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def child(args: argparse.Namespace) -> None:
    import torch

    from serl.config import AlgoConfig, TrainConfig
    from serl.models import load_model, load_policy
    from serl.rl import PolicyTrainer
    from serl.trainer.memory import apply_lora, enable_gradient_checkpointing, lora_reference_context

    config = CONFIGS[args.child]
    torch.manual_seed(0)
    model, tokenizer = load_policy()
    if config["checkpointing"]:
        enable_gradient_checkpointing(model)
    reference, context = None, None
    if config["lora"]:
        rank = args.lora_rank
        model = apply_lora(model, rank=rank, alpha=2 * rank, dropout=0.0, target_modules=args.lora_targets)
        context = lora_reference_context(model)
    else:
        reference = load_model().eval().requires_grad_(False)
    trainer = PolicyTrainer(
        model,
        reference,
        reference_context=context,
        algo=AlgoConfig(kl_coef=1e-4),
        train=TrainConfig(learning_rate=1e-6, micro_train_batch_size=args.micro_batch, train_batch_size=args.sequences),
        pad_token_id=tokenizer.pad_token_id,
        total_optimizer_steps=10,
        forward_batch_size=args.micro_batch,
    )
    group = 4
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (args.prompt_tokens,)).tolist() for _ in range(args.sequences // group)]
    prompt_ids = [p for p in prompts for _ in range(group)]
    response_ids = [torch.randint(3, vocab, (args.response_tokens,)).tolist() for _ in range(args.sequences)]
    rewards = torch.randint(0, 2, (args.sequences,)).float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    setup_kb = status_kb("VmRSS")
    reset_peak()
    started = time.perf_counter()
    experience = trainer.make_experience(prompt_ids, response_ids, rewards, group_size=group)
    metrics = trainer.train(experience)
    seconds = time.perf_counter() - started
    peak_kb = status_kb("VmHWM")
    print(
        json.dumps(
            {
                "peak_rss_mb": round(peak_kb / 1024),
                "setup_rss_mb": round(setup_kb / 1024),
                "step_increase_mb": round((peak_kb - setup_kb) / 1024),
                "trainable_params": trainable,
                "step_s": round(seconds, 2),
                "grad_norm": round(metrics["grad_norm"], 4),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    passthrough = sys.argv[1:]
    for name in args.configs:
        proc = subprocess.run(
            [sys.executable, __file__, *passthrough, "--child", name], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:>8}: " + ", ".join(f"{k}={v}" for k, v in results[name].items()), flush=True)
    shape = {
        "sequences": args.sequences,
        "prompt_tokens": args.prompt_tokens,
        "response_tokens": args.response_tokens,
        "micro_batch": args.micro_batch,
        "lora_rank": args.lora_rank,
        "lora_targets": args.lora_targets,
    }
    if "full" in results:
        full = results["full"]["peak_rss_mb"]
        shape["peak_vs_full"] = {name: round(r["peak_rss_mb"] / full, 3) for name, r in results.items()}
    print(json.dumps({"configs": results, **shape}))


if __name__ == "__main__":
    main()
