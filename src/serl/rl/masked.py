"""Reductions over the action tokens only (mask = 1), as OpenRLHF's ``masked_mean``."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over masked positions; along ``dim`` a row with no action tokens gives 0 rather than NaN."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, *, std_norm: bool = True) -> torch.Tensor:
    """(x − mean) · rsqrt(max(var, 1e-8)) over all masked tokens (population variance); padding comes back as 0."""
    mean = masked_mean(values, mask)
    centred = values - mean
    if std_norm:
        var = masked_mean(centred**2, mask)
        centred = centred * var.clamp(min=1e-8).rsqrt()
    return centred * mask.to(values.dtype)
