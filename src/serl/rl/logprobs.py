"""Token log-probabilities (and entropy) of the response tokens without materialising full-vocabulary tensors.

The decoder runs once; the output projection, log-softmax and entropy then run over chunks of *action* tokens only
(prompt and padding positions never touch the vocabulary). A custom autograd function keeps only the hidden states
and one log-sum-exp per token for backward and recomputes each chunk's logits there, so peak memory is
O(chunk × vocab) instead of O(tokens × vocab). As the reference, logits are divided by the sampling temperature
and the softmax runs in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from serl.rl.sequences import SequenceBatch


class _ChunkedTokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_tokens: int, with_entropy: bool):
        count = hidden.shape[0]
        logprobs = hidden.new_empty(count, dtype=torch.float32)
        logsumexp = hidden.new_empty(count, dtype=torch.float32)
        entropy = hidden.new_empty(count if with_entropy else 0, dtype=torch.float32)
        for start in range(0, count, chunk_tokens):
            end = min(start + chunk_tokens, count)
            # every step in place on the one [chunk, vocab] buffer: these passes are memory-bound
            logits = _chunk_logits(hidden[start:end], weight, temperature)
            shift = logits.amax(dim=-1, keepdim=True)
            shifted = logits.sub_(shift)
            picked = shifted.gather(1, targets[start:end, None]).squeeze(1)
            if with_entropy:  # H = log Σe^z' − Σ e^z'·z' / Σ e^z'
                exps = shifted.exp()
                total = exps.sum(-1)
                entropy[start:end] = total.log() - torch.einsum("ij,ij->i", exps, shifted) / total
            else:
                total = shifted.exp_().sum(-1)
            log_total = total.log()
            logprobs[start:end] = picked - log_total
            logsumexp[start:end] = shift.squeeze(1) + log_total
        ctx.save_for_backward(hidden, weight, targets, logsumexp)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, targets, logsumexp = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk_tokens):
            end = min(start + ctx.chunk_tokens, hidden.shape[0])
            # d logp(y) / d z = onehot(y) − softmax(z), and z = (h·Wᵀ) / T brings a 1/T
            g = grad_logprobs[start:end, None].float() / ctx.temperature
            logits = _chunk_logits(hidden[start:end], weight, ctx.temperature)
            grad_logits = logits.sub_(logsumexp[start:end, None]).exp_().mul_(-g)
            grad_logits.scatter_add_(1, targets[start:end, None], g)
            grad_logits = grad_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T.float(), hidden[start:end].float())
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = (hidden @ weight.T).float()
    return logits.div_(temperature) if temperature != 1.0 else logits


def chunked_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(h·Wᵀ / T)[target] for hidden [N, H], weight [V, H], targets [N]; entropy [N] (no gradient) too."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to define log-probs, got {temperature}")
    # under autocast (train.autocast_dtype) the decoder's hidden states may be lower precision: the head and the
    # softmax still run in the weight's dtype, and in backward, which runs outside autocast, the same way
    with torch.autocast(hidden.device.type, enabled=False):
        logprobs, entropy = _ChunkedTokenLogProbs.apply(
            hidden.to(weight.dtype), weight, targets, float(temperature), int(chunk_tokens), with_entropy
        )
    return logprobs, entropy if with_entropy else None


def naive_token_logprobs(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """The textbook computation (full log-softmax), kept as the reference for tests."""
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def plain_output_weight(model: nn.Module) -> torch.Tensor | None:
    """The output projection's weight when logits are exactly hidden·Wᵀ (no bias, soft-capping or scaling)."""
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    rescales = getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
    if type(head) is nn.Linear and head.bias is None and not rescales:
        return head.weight
    return None


def response_logprobs(
    model: nn.Module,
    batch: SequenceBatch,
    *,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    with_entropy: bool = False,
    through_forward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] of the response tokens (0 on padding) and optionally their per-token entropy [B, R].

    ``through_forward``: call the model's own forward for the response logits instead of the decoder plus the chunked
    head. A distributed wrapper (DDP, FSDP, DeepSpeed) needs that: it syncs or gathers only inside its forward."""
    width_p, mask = batch.prompt_width, batch.action_mask
    targets = batch.input_ids[:, width_p:][mask]
    weight = None if through_forward else plain_output_weight(model)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    if weight is not None:
        hidden = model.get_decoder()(**inputs, use_cache=False).last_hidden_state
        # position t predicts token t+1, so response token j is predicted from position width_p − 1 + j
        action_hidden = hidden[:, width_p - 1 : -1][mask]
        flat_logprobs, flat_entropy = chunked_token_logprobs(
            action_hidden,
            weight,
            targets,
            temperature=temperature,
            chunk_tokens=chunk_tokens,
            with_entropy=with_entropy,
        )
    else:  # an unusual head: let the model compute the response logits, then reduce them in chunks
        logits = model(**inputs, use_cache=False, logits_to_keep=batch.response_width + 1).logits[:, :-1][mask]
        flat_logprobs, flat_entropy = _logprobs_from_logits(logits, targets, temperature, chunk_tokens, with_entropy)
    logprobs = torch.zeros(mask.shape, dtype=flat_logprobs.dtype, device=mask.device).masked_scatter(
        mask, flat_logprobs
    )
    if flat_entropy is None:
        return logprobs, None
    return logprobs, torch.zeros_like(logprobs).masked_scatter(mask, flat_entropy)


def _logprobs_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, chunk_tokens: int, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logprobs, entropies = [], []
    for start in range(0, logits.shape[0], chunk_tokens):
        log_softmax = torch.log_softmax(logits[start : start + chunk_tokens].float() / temperature, dim=-1)
        logprobs.append(log_softmax.gather(1, targets[start : start + chunk_tokens, None]).squeeze(1))
        if with_entropy:
            entropies.append(-(log_softmax.exp() * log_softmax).sum(-1).detach())
    entropy = torch.cat(entropies) if with_entropy else None
    return torch.cat(logprobs), entropy
