"""The SeRL loop on several processes through accelerate (DDP, FSDP, DeepSpeed ZeRO), launched by `accelerate launch`.

Every rank holds the same loop state. Generation (self-instruction rounds and rollouts) is shared out: each rank
generates a contiguous slice of the prompts, so the n samples of a prompt (one majority-vote group) never span ranks,
and the completions are all-gathered in prompt order. Scoring, the difficulty filter and the carry-over buffer then
run identically everywhere; PolicyTrainer splits the log-prob passes and each optimizer step's micro-batches over the
ranks. Rank 0 alone writes the run's files (other ranks write their logs to a scratch folder), and checkpoints hold
unwrapped weights and world-size-free state, so a run resumes on any number of processes.

A plain single process (no launcher, no GPU) gets no Accelerator at all: the loop runs exactly as without this module.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from serl.parallel import world_of
from serl.rollout.base import Completion, SamplingParams
from serl.rundir import RunDir
from serl.seeding import derive_seed


def make_accelerator(mixed_precision: str | None = None) -> Any | None:
    """An `accelerate.Accelerator` when launched on several processes or when a GPU is present; None for a plain
    single CPU process, which then pays no accelerate overhead. The strategy (DDP, FSDP, DeepSpeed) and mixed
    precision come from the `accelerate launch` config."""
    gpu = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not gpu:
        return None
    from accelerate import Accelerator

    options: dict[str, Any] = {} if gpu else {"cpu": True}  # cpu=True: gloo processes (accelerate's MULTI_CPU)
    if mixed_precision:
        options["mixed_precision"] = mixed_precision
    return Accelerator(**options)


def rank_slice(count: int, rank: int, world: int) -> slice:
    """Contiguous slice of COUNT items for RANK; slice sizes differ by at most one, earlier ranks get the extra."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def reset_rank_dir(run_dir: Path, rank: int) -> Path:
    """An empty scratch folder for a rank > 0 (its logs from an earlier launch are stale), the run dir for rank 0."""
    folder = RunDir(run_dir).rank_dir(rank)
    if rank > 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return folder


def mirror_instructions(run_dir: Path, rank: int) -> None:
    """Give a rank > 0 a copy of rank 0's instruction log (after rank 0 cut it back on resume), from which that
    rank's self-instruction pools are rebuilt, identical to rank 0's."""
    if rank == 0:
        return
    run = RunDir(run_dir)
    source, target = run.instructions, RunDir(run.rank_dir(rank)).instructions
    shutil.rmtree(target, ignore_errors=True)
    if source.exists():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)


class ShardedEngine:
    """A rollout engine over all ranks: each generates its contiguous slice of the prompts (all n samples of each),
    with its own seed derived from the call's, and every rank gets all completions in prompt order."""

    def __init__(self, engine: Any, accelerator: Any):
        self.engine = engine
        self.accelerator = accelerator

    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams, n: int = 1) -> list[Completion]:
        from accelerate.utils import gather_object

        rank, world = world_of(self.accelerator)
        part = rank_slice(len(prompts), rank, world)
        local: list[Completion] = []
        if part.stop > part.start:
            seed = None if params.seed is None else derive_seed(params.seed, "rank", rank)
            local = self.engine.generate(prompts[part], replace(params, seed=seed), n=n)
            for completion in local:
                completion.prompt_index += part.start
        return gather_object(local)  # ranks' lists concatenated in rank order = prompt order

    def update_weights(self, source: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        self.engine.update_weights(source)

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()

    def __getattr__(self, name: str) -> Any:  # engine extras (tokenizer, max_batch_size, ...) read through
        return getattr(self.engine, name)


def run_on_main(accelerator: Any | None, fn: Any) -> Any:
    """FN() on rank 0 only, its result handed to every rank; an exception there is raised on every rank, so a bad
    run dir stops all processes instead of leaving the others waiting in a collective."""
    if accelerator is None or accelerator.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if accelerator.is_main_process:
        try:
            box = [("ok", fn())]
        except Exception as err:  # any failure: re-raised on every rank below
            box = [("error", err)]
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
