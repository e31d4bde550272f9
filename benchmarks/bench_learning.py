"""Does the RL core learn? A few PolicyTrainer steps of each advantage estimator on the embedded model, with a
verifiable toy reward (1 when the response contains ``\\boxed{``), must raise the mean reward on the same prompts.

Every estimator starts from the same weights and sees the same first rollout (same sampling seed). The mean reward
is measured before and after on the training prompts with a fixed sampling seed and more samples than a rollout.
Too slow for the test suite on 2 CPU cores (generation dominates), so it lives here.

    .venv/bin/python benchmarks/bench_learning.py [--estimators reinforce,grpo --steps 4 --lr 3e-5]

Prints a line per step, then one JSON line: {"baseline_reward", "estimators": {name: {"before", "after",
"delta", "seconds", "train_rewards"}}, "all_improved"}.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from serl.config import AlgoConfig, TrainConfig
from serl.models import load_policy
from serl.rl import ESTIMATORS, PolicyTrainer
from serl.rollout import SamplingParams, make_engine

QUESTION = "Compute {a} + {b}. Write only the final answer inside \\boxed{{}}, like \\boxed{{10}}."
PAIRS = [(3, 4), (12, 5), (7, 8), (20, 22), (9, 6), (15, 3), (31, 11), (6, 6), (14, 9), (8, 27), (40, 2), (5, 13)]


def reward(text: str) -> float:
    return 1.0 if "\\boxed{" in text else 0.0


def mean_reward(engine, prompts: list[str], samples: int, max_new_tokens: int, seed: int) -> float:
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
    completions = engine.generate(prompts, params, n=samples)
    return sum(reward(c.text) for c in completions) / len(completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--steps", type=int, default=4, help="rollout + train steps per estimator")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt in a rollout")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--train-batch-size", type=int, default=16, help="sequences per optimizer step")
    parser.add_argument("--eval-samples", type=int, default=16, help="samples per prompt when measuring")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    model, tokenizer = load_policy()
    engine = make_engine("hf", model, tokenizer)
    questions = [QUESTION.format(a=a, b=b) for a, b in PAIRS[: args.prompts]]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    initial_weights = copy.deepcopy(model.state_dict())
    eval_seed = args.seed + 10_000
    baseline = mean_reward(engine, prompts, args.eval_samples, args.max_new_tokens, eval_seed)
    print(f"baseline mean reward {baseline:.3f}", flush=True)

    results = {}
    for estimator in args.estimators.split(","):
        model.load_state_dict(initial_weights)
        started = time.perf_counter()
        trainer = PolicyTrainer(
            model,
            None,
            algo=AlgoConfig(advantage_estimator=estimator, kl_coef=0.0),
            train=TrainConfig(
                learning_rate=args.lr,
                lr_warmup_ratio=0.0,
                micro_train_batch_size=args.train_batch_size,
                train_batch_size=args.train_batch_size,
                seed=args.seed,
            ),
            pad_token_id=tokenizer.pad_token_id,
            total_optimizer_steps=args.steps * args.prompts * args.n // args.train_batch_size,
        )
        train_rewards = []
        for step in range(args.steps):
            params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed + step)
            completions = engine.generate(prompts, params, n=args.n)
            rewards = [reward(c.text) for c in completions]
            experience = trainer.make_experience(
                [c.prompt_ids for c in completions], [c.response_ids for c in completions], rewards, group_size=args.n
            )
            metrics = trainer.train(experience)
            train_rewards.append(sum(rewards) / len(rewards))
            print(
                f"{estimator} step {step + 1}: rollout reward {train_rewards[-1]:.3f}, loss {metrics['loss']:.4f}, "
                f"clip_frac {metrics['clip_frac']:.3f}, entropy {metrics['entropy']:.2f}",
                flush=True,
            )
        after = mean_reward(engine, prompts, args.eval_samples, args.max_new_tokens, eval_seed)
        seconds = time.perf_counter() - started
        results[estimator] = {
            "before": round(baseline, 4),
            "after": round(after, 4),
            "delta": round(after - baseline, 4),
            "seconds": round(seconds, 1),
            "train_rewards": [round(r, 4) for r in train_rewards],
        }
        print(f"{estimator}: {baseline:.3f} -> {after:.3f} in {seconds:.0f} s", flush=True)
    summary = {
        "baseline_reward": round(baseline, 4),
        "estimators": results,
        "all_improved": all(r["after"] > r["before"] for r in results.values()),
        "config": vars(args),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
