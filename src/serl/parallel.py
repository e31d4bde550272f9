"""Everything a parallel strategy changes, in one place: accelerate (DDP, FSDP, DeepSpeed ZeRO) for the policy update,
and sharded parameters for whoever needs whole weights (the rollout engine's weight sync, checkpoints, HF exports).

`Parallel(None)` is a plain single process and calls nothing from accelerate; the algorithm code (`serl.rl`) asks a
`Parallel` to prepare the model, to run one optimizer step's backward passes, and to sum figures over ranks, and
never looks at the strategy itself. accelerate, DeepSpeed and the FSDP classes are imported only when used.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Module names that wrappers insert into parameter names (FSDP1, torch.compile, activation checkpointing).
WRAPPER_NAMES = frozenset({"_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module"})


def world_of(accelerator: Any | None) -> tuple[int, int]:
    """(rank, world size); (0, 1) without an accelerator."""
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def _is(accelerator: Any | None, *names: str) -> bool:
    """Whether ACCELERATOR's distributed type is one of NAMES (members of accelerate's `DistributedType`)."""
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in tuple(getattr(DistributedType, name) for name in names)


def shards_parameters(accelerator: Any | None) -> bool:
    """Whether the strategy may split parameters over ranks (FSDP, DeepSpeed), so no rank holds the full model."""
    return _is(accelerator, "FSDP", "DEEPSPEED")


def is_sharded_model(model: nn.Module) -> bool:
    """FSDP2 (DTensor parameters) or FSDP1 (wrapped modules): no rank holds whole tensors."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters()) or _has_fsdp1(model)


def _has_fsdp1(module: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return False
    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


class Parallel:
    """How the policy update runs: one plain process (`accelerator` None), or over the ranks of an accelerate launch.

    The model and optimizer are prepared by accelerate (DDP, FSDP or DeepSpeed per the launch config). Every rank
    then receives the same experience; log-prob passes split its rows over the ranks (`rank`, `world`), and each
    optimizer step's micro-batches are dealt out to the ranks, so the update equals a single process's."""

    def __init__(self, accelerator: Any | None = None):
        self.accelerator = accelerator
        self.rank, self.world = world_of(accelerator)

    @property
    def wraps_model(self) -> bool:
        """The prepared model is a DDP / FSDP / DeepSpeed wrapper: log-probs must go through its own forward."""
        return self.accelerator is not None and not _is(self.accelerator, "NO")

    @property
    def deepspeed(self) -> bool:
        return _is(self.accelerator, "DEEPSPEED")

    @property
    def shards_parameters(self) -> bool:
        return shards_parameters(self.accelerator)

    def offloads_optimizer(self) -> bool:
        """Whether the launch config puts DeepSpeed's optimizer states on the CPU (ZeRO-Offload)."""
        if not self.deepspeed:
            return False
        zero = self.accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
        return zero.get("offload_optimizer", {}).get("device", "none") == "cpu"

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, micro_batch_size: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The model and optimizer as the strategy wraps them (unchanged in a plain process)."""
        if self.accelerator is None:
            return model, optimizer
        if self.deepspeed:  # no dataloader for accelerate to read it from: its documented alternative is to set it here
            config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            config["train_micro_batch_size_per_gpu"] = micro_batch_size
        return self.accelerator.prepare(model, optimizer)

    def device(self, fallback: torch.device) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else fallback

    def forward_batches(self, order: list[int], batch_size: int) -> list[tuple[list[int], bool]]:
        """This rank's gradient-free forward passes over the rows in ORDER, as (rows, counted) batches: strided over
        the order (similar work on every rank), plus throwaway batches (rows ``order[:1]``, counted False) so that
        every rank makes the same number of forward calls, as sharded weights (FSDP, ZeRO-3) need."""
        mine = order[self.rank :: self.world]
        batches = [(mine[i : i + batch_size], True) for i in range(0, len(mine), batch_size)]
        rounds = math.ceil(math.ceil(len(order) / self.world) / batch_size)
        return batches + [(order[:1], False)] * (rounds - len(batches))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """TENSOR summed over the ranks (itself in a plain process)."""
        if self.world == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction="sum")

    def backward_step(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        micro_batches: Sequence[list[int]],
        loss_of: Callable[[list[int], bool], torch.Tensor],
        max_norm: float,
    ) -> torch.Tensor:
        """The gradients of one optimizer step, clipped to MAX_NORM; returns the gradient norm before clipping.

        `loss_of(rows, counted)` gives a micro-batch's share of the step loss (`counted` False for a rank's filler).
        In a plain process every micro-batch is this rank's. Over ranks each takes micro-batches rank, rank + world,
        ... of the step; the wrapper averages gradients over ranks, so each loss is scaled by the world size to sum,
        like one process, the shares of all micro-batches. A rank with fewer micro-batches runs a zero-weight one,
        keeping the collectives matched."""
        if self.accelerator is None:
            for micro in micro_batches:
                loss_of(micro, True).backward()
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        accelerator = self.accelerator
        mine = micro_batches[self.rank :: self.world]
        rounds = math.ceil(len(micro_batches) / self.world)
        for k in range(rounds):
            last = k == rounds - 1
            real = k < len(mine)
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync:
                loss = loss_of(mine[k] if real else micro_batches[0], real)
                if self.deepspeed:  # DeepSpeed steps inside backward() at the boundary; accumulate() sets this too
                    accelerator.gradient_state._set_sync_gradients(last)
                accelerator.backward(loss * (self.world if real else 0.0))
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
        if grad_norm is None:  # DeepSpeed clipped and stepped already; its optimizer.step() is a no-op
            grad_norm = accelerator.deepspeed_engine_wrapped.get_global_grad_norm() or 0.0
        return torch.as_tensor(grad_norm, dtype=torch.float32).cpu()


# ---------------------------------------------------------------------------------------------------------------------
# Whole weights out of sharded ones.


def full_parameters(source: nn.Module | dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) pairs under the unwrapped model's parameter names, gathering sharded parameters as they
    are drawn: a collective under FSDP1, FSDP2 and ZeRO-3, so every rank must draw all pairs in order.

    A sharded tensor is valid only until the next pair is drawn (FSDP1 and ZeRO-3 free the gathered storage when
    their gather context exits): use it inside the loop, or clone it (`gathered_state_dict`). Only one parameter
    (ZeRO-3, FSDP2) or the FSDP1 units enclosing the current one are gathered at a time, never the whole model."""
    if isinstance(source, dict):
        yield from source.items()
    elif _has_fsdp1(source):
        yield from _fsdp1_parameters(source, "", set())
    else:
        for name, param in source.named_parameters():
            name = unwrapped_name(name)
            if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3 partition
                import deepspeed

                with deepspeed.zero.GatheredParameters([param]):
                    yield name, param.data
            elif hasattr(param.data, "full_tensor"):  # FSDP2 / DTensor shard
                yield name, _full_dtensor(param.data)
            else:
                yield name, param.data


def gathered_state_dict(source: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full parameters as a dict of copies, each cloned while it is gathered (valid after every gather ends).
    A collective under FSDP / ZeRO-3. Holds one whole extra copy: prefer streaming `full_parameters`."""
    return {name: tensor.detach().clone() for name, tensor in full_parameters(source)}


def unwrapped_name(name: str) -> str:
    """A parameter name without the components that FSDP1, DDP/DeepSpeed (`module.`) or torch.compile insert."""
    parts = [part for part in name.split(".") if part not in WRAPPER_NAMES]
    if parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def _fsdp1_parameters(module: nn.Module, prefix: str, seen: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """FSDP1: each unit gathers only its own parameters (`recurse=False`) while its inner units are walked, so the
    units on the path from the root are full at once, never the whole model. Entering the root first runs FSDP's lazy
    initialization as a forward pass would (summoning an inner unit first breaks it)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    unit = isinstance(module, FSDP)
    gathered = FSDP.summon_full_params(module, recurse=False, writeback=False) if unit else contextlib.nullcontext()
    with gathered:
        for child_name, child in module.named_children():
            yield from _fsdp1_parameters(child, f"{prefix}{child_name}.", seen)
        if unit:
            for name, param in module.named_parameters():
                full_name = unwrapped_name(prefix + name)
                if full_name in seen or full_name.endswith("_flat_param"):  # an inner unit's, already yielded
                    continue
                seen.add(full_name)
                yield full_name, param.data


def _full_dtensor(tensor: Any) -> torch.Tensor:
    """All-gather a DTensor into a new plain tensor (its own storage), on the mesh's device (FSDP2 CPU offload)."""
    device_type = tensor.device_mesh.device_type
    if tensor.device.type != device_type:
        tensor = tensor.to(device_type)
    return tensor.full_tensor()


def full_state_dict(accelerator: Any | None, wrapped: nn.Module, unwrapped: nn.Module) -> dict:
    """The model's full, unwrapped state dict: gathered from the shards under FSDP / ZeRO-3 (a collective: call it
    on every rank; under FSDP only rank 0 may receive it), the module's own otherwise."""
    if not shards_parameters(accelerator):
        return unwrapped.state_dict()
    return accelerator.get_state_dict(wrapped)


def load_full_state_dict(wrapped: nn.Module, unwrapped: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (as `full_state_dict` saved it): under FSDP every rank passes the whole dict and keeps
    its shard; otherwise into the unwrapped module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if is_sharded_model(wrapped):
        set_model_state_dict(wrapped, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        unwrapped.load_state_dict(state, strict=False)


def export_sharded(accelerator: Any, wrapped: nn.Module, tokenizer: Any, target: Path) -> None:
    """HF export of a sharded (FSDP / ZeRO-3) policy, accelerate's documented way: every rank joins the gather,
    rank 0 writes a temp folder and renames it into place."""
    state = accelerator.get_state_dict(wrapped)
    if accelerator.is_main_process:
        tmp = target.parent / f".tmp-{target.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(wrapped).save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    accelerator.wait_for_everyone()
