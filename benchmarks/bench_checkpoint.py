"""Time of a resumable checkpoint of the embedded model: weights plus an AdamW-sized state (2 moments per weight).

Each variant writes ROUNDS checkpoints in a row into a fresh directory, keeping the latest one (as a run with
`train.keep_checkpoints=1` does), in its own subprocess; the variants alternate so machine noise hits both.

- `uncache` (what `save_checkpoint` does): files fsynced, then dropped from the page cache.
- `cached`: the same writes with the flush-and-drop step skipped (the page cache keeps every checkpoint).

`--memory-gb N` first touches N GB of new memory, 1 GB at a time, in a fresh process and reports the seconds per GB:
on VMs whose fresh memory is slow to get, that is what a growing page cache pays.

    flock /tmp/serl_bench.lock .venv/bin/python benchmarks/bench_checkpoint.py [--rounds 4 --repeats 2]

Prints one line per run, then one JSON line: {"uncache_s": [...], "cached_s": [...], "speedup": ...,
"fresh_memory_s_per_gb": [...]}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(variant: str, rounds: int, root: Path) -> None:
    import torch

    import serl.trainer.checkpoint as checkpoint
    from serl.models import load_policy

    if variant == "cached":
        checkpoint.flush_and_uncache = lambda path: None
    model, _ = load_policy()
    weights = model.state_dict()
    moments = {name: (torch.randn_like(w), torch.rand_like(w)) for name, w in model.named_parameters()}
    seconds = []
    for step in range(1, rounds + 1):
        started = time.perf_counter()
        checkpoint.save_checkpoint(root, step, weights, {"step": step, "adam": moments}, keep=1)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"variant": variant, "seconds": seconds}))


def touch_memory(gigabytes: int) -> None:
    import torch

    blocks, seconds = [], []
    for _ in range(gigabytes):
        started = time.perf_counter()
        blocks.append(torch.ones(256 << 20))  # 1 GB of float32, every page written
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-gb", type=int, default=0)
    parser.add_argument("--child", choices=["uncache", "cached", "memory"])
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child == "memory":
        touch_memory(args.memory_gb)
        return
    if args.child:
        child(args.child, args.rounds, args.root)
        return
    memory_s: list[float] = []
    if args.memory_gb:
        cmd = [sys.executable, __file__, "--child", "memory", "--memory-gb", str(args.memory_gb)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        memory_s = json.loads(out.strip().splitlines()[-1])["seconds"]
        print("fresh memory: " + ", ".join(f"{s:.2f}" for s in memory_s) + " s per GB")
    results: dict[str, list[float]] = {"uncache": [], "cached": []}
    for repeat in range(args.repeats):
        for variant in ("uncache", "cached") if repeat % 2 == 0 else ("cached", "uncache"):
            root = Path(tempfile.mkdtemp(prefix=f"bench_ckpt_{variant}_"))
            cmd = [sys.executable, __file__, "--child", variant, "--rounds", str(args.rounds), "--root", str(root)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            finally:
                shutil.rmtree(root, ignore_errors=True)
            seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
            results[variant].append(sum(seconds))
            print(f"{variant:8s} repeat {repeat + 1}: " + ", ".join(f"{s:.1f}" for s in seconds) + " s per save")
    uncache, cached = statistics.median(results["uncache"]), statistics.median(results["cached"])
    summary = {
        "rounds": args.rounds,
        "uncache_s": results["uncache"],
        "cached_s": results["cached"],
        "median_uncache_s": round(uncache, 2),
        "median_cached_s": round(cached, 2),
        "speedup": round(cached / uncache, 2),
        "fresh_memory_s_per_gb": [round(s, 2) for s in memory_s],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
