"""Memory savers for the policy: LoRA adapters (peft) and gradient checkpointing (the 8-bit optimizer is in
serl.rl.optim; optimizer-state offload is DeepSpeed's, configs/accelerate/gpu_zero3_offload.yaml).

With LoRA the reference model is the policy with its adapter disabled, so no second copy of the weights is held;
`export_hf` (checkpoint.py) merges the adapter into a copy for export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn


def apply_lora(model: nn.Module, *, rank: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> nn.Module:
    """Wrap MODEL in a peft LoRA model: base weights frozen, only the adapter trains."""
    try:
        import peft
    except ImportError as err:
        raise RuntimeError("model.lora.rank > 0 needs peft: pip install peft") from err
    if rank <= 0:
        raise ValueError(f"LoRA rank must be > 0, got {rank}")
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    return peft.get_peft_model(model, config)


def lora_reference_context(model: nn.Module) -> Callable[[], AbstractContextManager]:
    """The reference policy of a LoRA model: the same module with the adapter switched off."""
    return model.disable_adapter  # type: ignore[attr-defined]


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass (non-reentrant, as the reference's DeepSpeed setup)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
    if hasattr(model, "config"):
        model.config.use_cache = False  # a KV cache is useless (and warned about) while checkpointing


def lora_merged_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full weights with the adapter merged in, under the base model's own parameter names (for a rollout engine
    that holds a plain copy of the model, such as vLLM). The adapter is unmerged again before returning."""
    model.merge_adapter()  # type: ignore[operator]
    try:
        base = model.get_base_model()  # type: ignore[operator]
        with torch.no_grad():
            return {
                name.replace(".base_layer", ""): tensor.detach().clone()
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
    finally:
        model.unmerge_adapter()  # type: ignore[operator]
