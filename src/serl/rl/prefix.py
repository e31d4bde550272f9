"""Response log-probs with each distinct prompt run through the decoder once.

The n samples of a group share their prompt, so a training batch of G groups × n samples spends (n − 1) / n of its
prompt compute on copies. Here the distinct prompts run once (with a KV cache), the cache is indexed out to the rows,
and the responses run on top of it; gradients flow back through the indexing into the one prompt pass, summing the
rows' contributions exactly as the copies would. Same log-probs and gradients as `response_logprobs` on the padded
``[prompt | response]`` batch, up to float summation order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from serl.rl.logprobs import chunked_token_logprobs


def shared_prompt_logprobs(
    model: nn.Module,
    weight: torch.Tensor,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(log-probs [B, R], entropy [B, R] or None, action mask [B, R]) of the responses; ``weight`` is the model's plain
    output projection (`serl.rl.logprobs.plain_output_weight`)."""
    from transformers import DynamicCache

    device = weight.device
    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = [distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids]
    prompts = list(distinct)
    prompt_lengths = torch.tensor([len(p) for p in prompts], device=device)
    width_p = int(prompt_lengths.max())
    prompt_input = torch.full((len(prompts), width_p), pad_token_id, dtype=torch.long)
    for i, prompt in enumerate(prompts):  # left padding: every prompt ends at the same position
        prompt_input[i, width_p - len(prompt) :] = torch.tensor(prompt)
    prompt_input = prompt_input.to(device)
    prompt_mask = (torch.arange(width_p, device=device) >= width_p - prompt_lengths[:, None]).long()

    lengths = torch.tensor([len(r) for r in response_ids], device=device)
    width_r = int(lengths.max())
    response_input = torch.full((len(response_ids), width_r), pad_token_id, dtype=torch.long)
    for i, response in enumerate(response_ids):
        response_input[i, : len(response)] = torch.tensor(response)
    response_input = response_input.to(device)
    action_mask = torch.arange(width_r, device=device) < lengths[:, None]

    decoder = model.get_decoder()
    cache_arg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    cache = DynamicCache(config=model.config)
    prefix = decoder(
        input_ids=prompt_input,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        **{cache_arg: cache},
    ).last_hidden_state
    index = torch.tensor(row_prompt, device=device)
    cache.reorder_cache(index)  # index_select per layer: differentiable, so the rows' gradients sum into the prefix
    row_lengths = prompt_lengths[index]
    hidden = decoder(
        input_ids=response_input,
        attention_mask=torch.cat([prompt_mask[index], action_mask.long()], dim=1),
        position_ids=row_lengths[:, None] + torch.arange(width_r, device=device),
        use_cache=True,
        **{cache_arg: cache},
    ).last_hidden_state
    # response token j is predicted from the position before it: the prompt's last for j = 0
    predicting = torch.cat([prefix[index, -1:], hidden[:, :-1]], dim=1)
    flat_logprobs, flat_entropy = chunked_token_logprobs(
        predicting[action_mask],
        weight,
        response_input[action_mask],
        temperature=temperature,
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
    )
    logprobs = torch.zeros(action_mask.shape, dtype=flat_logprobs.dtype, device=device).masked_scatter(
        action_mask, flat_logprobs
    )
    entropy = None
    if flat_entropy is not None:
        entropy = torch.zeros_like(logprobs).masked_scatter(action_mask, flat_entropy)
    return logprobs, entropy, action_mask
