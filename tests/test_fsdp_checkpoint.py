"""FSDP checkpoints resume on any world size: 2 gloo processes shard a small model with FSDP2 (`fully_shard`, as
accelerate's FSDP2 plugin does), train a step, save weights and optimizer state as the loop does, and train a second
step. Resuming that checkpoint on FSDP again and on one plain process must give the same second step.

accelerate runs FSDP only on GPUs, but torch's FSDP2 runs on CPU over gloo, so the save and load helpers the loop
uses under FSDP are exercised here for real. This file is also the worker: `torchrun` runs it as a script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from dist_worker import exit_without_teardown
from serl.parallel import load_full_state_dict
from serl.rl.optim import load_optimizer_state, make_optimizer, optimizer_state

LR = 1e-2


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 8, generator=generator), torch.randn(8, 4, generator=generator)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, rank: int = 0, world: int = 1) -> None:
    """Mean-squared error on this rank's equal share of the batch: FSDP averages the gradients, so the update equals
    one process's on the whole batch."""
    x, y = _batch(step)
    rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _worker(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gather = StateDictOptions(full_state_dict=True, cpu_offload=True)  # what accelerate's get_state_dict does

    def sharded(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = _model(seed)
        for layer in (model[0], model[2]):
            fully_shard(layer)
        fully_shard(model)
        return model, make_optimizer(list(model.parameters()), lr=LR)

    model, optimizer = sharded(seed=0)
    _train_step(model, optimizer, 1, rank, world)
    weights, state = get_model_state_dict(model, options=gather), optimizer_state(model, optimizer)  # collectives
    if rank == 0:
        torch.save({"weights": weights, "optimizer": state}, out / "checkpoint.pt")
    _train_step(model, optimizer, 2, rank, world)
    after = get_model_state_dict(model, options=gather)
    dist.barrier()  # the checkpoint file is complete

    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    resumed, resumed_optimizer = sharded(seed=1)  # other initial weights: all must come from the checkpoint
    load_full_state_dict(resumed, resumed, checkpoint["weights"])
    load_optimizer_state(resumed, resumed_optimizer, checkpoint["optimizer"])
    _train_step(resumed, resumed_optimizer, 2, rank, world)
    after_resume = get_model_state_dict(resumed, options=gather)
    if rank == 0:
        torch.save({"after": after, "after_resume": after_resume}, out / "weights.pt")
    exit_without_teardown(dist)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_an_fsdp_checkpoint_resumes_on_fsdp_and_on_one_process(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    weights = torch.load(tmp_path / "weights.pt", weights_only=False)

    # Whole tensors keyed by parameter name: nothing in the checkpoint depends on the world size.
    assert set(checkpoint["optimizer"]["state"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert checkpoint["optimizer"]["state"]["0.weight"]["exp_avg"].shape == (32, 8)
    assert torch.equal(weights["after_resume"]["0.weight"], weights["after"]["0.weight"])
    assert _max_diff(weights["after_resume"], weights["after"]) == 0.0

    # The sharded run matches one process on the whole batch, step 1 (the checkpoint) and step 2.
    plain = _model(seed=0)
    plain_optimizer = make_optimizer(list(plain.parameters()), lr=LR)
    _train_step(plain, plain_optimizer, 1)
    assert _max_diff(plain.state_dict(), checkpoint["weights"]) < 1e-6

    # Resume on one process from the FSDP checkpoint: same weights, Adam moments and step count as the FSDP run.
    single = _model(seed=1)
    single_optimizer = make_optimizer(list(single.parameters()), lr=LR)
    load_full_state_dict(single, single, checkpoint["weights"])
    load_optimizer_state(single, single_optimizer, checkpoint["optimizer"])
    assert float(single_optimizer.state[single[0].weight]["step"]) == 1.0
    before = {k: v.clone() for k, v in single.state_dict().items()}
    _train_step(single, single_optimizer, 2)
    assert _max_diff(single.state_dict(), before) > 1e-3, "step 2 barely moved: the comparison would be vacuous"
    assert _max_diff(single.state_dict(), weights["after"]) < 1e-6


def test_no_optimizer_state_is_saved_before_the_first_step() -> None:
    """torch's helper would create the state with a zero step, which Adam would count in its bias correction."""
    model = _model(seed=0)
    optimizer = make_optimizer(list(model.parameters()), lr=LR)
    assert optimizer_state(model, optimizer) is None
    load_optimizer_state(model, optimizer, None)
    assert not optimizer.state


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
