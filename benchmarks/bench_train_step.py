"""One RL training step of PolicyTrainer on the embedded model, against a plain large matmul in the same run.

Default shape (issue 4): 32 sequences of 64 prompt + 64 response tokens, 4 micro-batches of 8, one optimizer step.
The step is ``PolicyTrainer.train`` (forward, chunked log-probs, PPO-clip loss, backward, grad clipping, AdamW);
the gradient-free ``make_experience`` pass before it is timed and reported separately.

FLOPs counted are the useful ones: 2·(decoder matmul weights)·tokens per forward, the causal half of the attention
score and value products, and the output projection on response tokens only; backward counts twice the forward.
The matmul rate is re-measured next to every timed step, and each step is compared with the mean of its neighbours.
Rates are per second of this process's own CPU time (``flops_fraction_of_matmul``), so other jobs sharing the cores
do not count against either side, and per wall-clock second (``..._wall``); on a quiet machine the two agree.

    .venv/bin/python benchmarks/bench_train_step.py [--sequences 32 --prompt-tokens 64 --response-tokens 64]
    python benchmarks/bench_train_step.py --device cuda --sequences 64 --prompt-tokens 256 --response-tokens 256

`--device cuda` runs the step as `serl train` does on one GPU: fp32 master weights, bf16 autocast through an
`accelerate.Accelerator(mixed_precision="bf16")`, and compares it with the GPU's measured bf16 matmul rate (8192^3)
per wall second (CPU seconds mean nothing there), so `flops_fraction_of_matmul` is then the wall-clock fraction.

Prints one line per repeat, then one JSON line:
{"step_s", "tokens_per_s", "flops_fraction_of_matmul", "peak_rss_mb", "experience_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from torch import nn

from serl.config import AlgoConfig, TrainConfig
from serl.models import load_policy
from serl.parallel import Parallel
from serl.rl import PolicyTrainer


class Clock:
    """Wall and process-CPU seconds of a block; on a GPU the block's queued work is waited for at both ends."""

    cuda = False  # set by main() for --device cuda

    def __enter__(self) -> Clock:
        self.sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.sync()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def matmul_seconds(seconds: float = 1.5) -> tuple[float, Clock]:
    """FLOPs done and the clock of a run of plain matmuls lasting about ``seconds``: fp32 2048^3 on CPU, bf16
    8192^3 on a GPU (the dtype the autocast step computes in)."""
    size, dtype, device = (8192, torch.bfloat16, "cuda") if Clock.cuda else (2048, torch.float32, "cpu")
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    reps = 0
    with Clock() as clock:
        while time.perf_counter() - clock.wall < seconds:
            a @ b
            reps += 1
            if Clock.cuda and reps % 8 == 0:
                clock.sync()  # the launches run ahead of the clock; settle every few
    return 2 * size**3 * reps, clock


def forward_flops(model: nn.Module, sequences: int, prompt_tokens: int, response_tokens: int) -> float:
    config = model.config
    decoder_weights = sum(m.weight.numel() for m in model.get_decoder().modules() if isinstance(m, nn.Linear))
    length = prompt_tokens + response_tokens
    matmuls = 2 * decoder_weights * length
    # QKᵀ and AV: 2·2·L²·(heads·head_dim) per layer, halved for the causal mask
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 2 * length * length * config.num_attention_heads * head_dim * config.num_hidden_layers
    output_head = 2 * config.hidden_size * config.vocab_size * response_tokens
    return sequences * (matmuls + attention + output_head)


def fraction(flops: float, clock: Clock, matmuls: list[tuple[float, Clock]], kind: str) -> float:
    """The block's FLOP rate over the mean rate of the matmul runs beside it, per cpu or wall second."""
    matmul_rate = statistics.fmean(f / getattr(c, kind) for f, c in matmuls)
    return flops / getattr(clock, kind) / matmul_rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kl-coef", type=float, default=0.0, help="> 0 adds the reference forward to make_experience")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: bf16 autocast, fp32 weights")
    parser.add_argument("--matmul-seconds", type=float, default=1.5, help="length of each matmul-rate measurement")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    Clock.cuda = args.device == "cuda"
    accelerator = None
    if Clock.cuda:
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision="bf16")

    model, tokenizer = load_policy(dtype="fp32", device=args.device)
    reference = None
    if args.kl_coef > 0:
        reference, _ = load_policy(dtype="fp32", device=args.device)
        reference.requires_grad_(False)
    micro = args.sequences // args.micro_batches
    trainer = PolicyTrainer(
        model,
        reference,
        algo=AlgoConfig(advantage_estimator="reinforce", kl_coef=args.kl_coef),
        train=TrainConfig(learning_rate=1e-6, micro_train_batch_size=micro, train_batch_size=args.sequences),
        pad_token_id=tokenizer.pad_token_id,
        total_optimizer_steps=100,
        forward_batch_size=micro,
        parallel=Parallel(accelerator),
    )
    low, high = 3, tokenizer.vocab_size  # ordinary tokens, no special ids
    prompts = torch.randint(low, high, (args.sequences, args.prompt_tokens)).tolist()
    responses = torch.randint(low, high, (args.sequences, args.response_tokens)).tolist()
    rewards = torch.randint(0, 2, (args.sequences,)).float()

    start = time.perf_counter()
    experience = trainer.make_experience(prompts, responses, rewards, group_size=args.sequences // 4 or 1)
    warm_experience_s = time.perf_counter() - start
    trainer.train(experience)  # warm-up: first-call allocations and the optimizer state

    kind = "wall" if Clock.cuda else "cpu"  # the fractions' clock: CPU seconds say nothing about GPU work
    flops_forward = forward_flops(model, args.sequences, args.prompt_tokens, args.response_tokens)
    step_flops = 3 * flops_forward  # backward = 2 × forward
    experience_flops = flops_forward * (2 if reference is not None else 1)
    tokens = args.sequences * (args.prompt_tokens + args.response_tokens)
    matmuls = [matmul_seconds(args.matmul_seconds)]
    steps: list[Clock] = []
    experiences: list[Clock] = []
    for repeat in range(args.repeats):
        with Clock() as clock:
            experience = trainer.make_experience(prompts, responses, rewards, group_size=args.sequences // 4 or 1)
        experiences.append(clock)
        with Clock() as clock:
            metrics = trainer.train(experience)
        steps.append(clock)
        matmuls.append(matmul_seconds(args.matmul_seconds))
        print(
            f"repeat {repeat}: step {clock.wall:.2f} s wall / {clock.cpu:.2f} s cpu "
            f"({fraction(step_flops, clock, matmuls[-2:], kind):.2f} of matmul), "
            f"experience {experiences[-1].wall:.2f} s, matmul {matmuls[-1][0] / matmuls[-1][1].cpu / 1e9:.0f} "
            f"GFLOP per cpu-s, loss {metrics['loss']:.4f}",
            flush=True,
        )

    def median_fraction(flops: float, clocks: list[Clock], kind: str) -> float:
        return round(statistics.median(fraction(flops, c, matmuls[i : i + 2], kind) for i, c in enumerate(clocks)), 3)

    step_s = statistics.median(c.wall for c in steps)
    result = {
        "step_s": round(step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "flops_fraction_of_matmul": median_fraction(step_flops, steps, kind),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "flops_fraction_of_matmul_wall": median_fraction(step_flops, steps, "wall"),
        "step_cpu_s": round(statistics.median(c.cpu for c in steps), 3),
        "experience_s": round(statistics.median(c.wall for c in experiences), 3),
        "experience_flops_fraction_of_matmul": median_fraction(experience_flops, experiences, kind),
        "matmul_gflop_per_cpu_s": round(statistics.median(f / c.cpu for f, c in matmuls) / 1e9, 1),
        "matmul_gflop_per_s": round(statistics.median(f / c.wall for f, c in matmuls) / 1e9, 1),
        "step_gflop": round(step_flops / 1e9, 1),
        "first_experience_s": round(warm_experience_s, 3),
        "sequences": args.sequences,
        "prompt_tokens": args.prompt_tokens,
        "response_tokens": args.response_tokens,
        "micro_batches": args.micro_batches,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if Clock.cuda else "cpu",
        "matmul_dtype": "bfloat16" if Clock.cuda else "float32",
        "mixed_precision": "bf16" if Clock.cuda else "no",
    }
    if Clock.cuda:
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
