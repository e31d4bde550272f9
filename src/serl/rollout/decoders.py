"""Batched forward passes for the HF engine's decode loop, one per kind of KV cache.

Both decoders hold a batch of rows, and offer the same three calls:
  * `prefill(prompts, copies)`: run the prompts (each once) and return the next-token logits of every row, where
    prompt i is repeated `copies[i]` times in a row, so the n samples of a prompt share one prefill;
  * `step(tokens)`: feed one token per row, return the next-token logits;
  * `keep(index)`: keep only these rows (finished rows leave the batch).

`StaticLlamaDecoder` runs Llama-family models (Llama, Qwen2, Mistral; SmolLM2 is a Llama) from the model's own
weights over a pre-allocated KV cache, with attention on the key/value heads directly (no repeat_kv copies), the LM
head on the last position only, and fused q/k/v and gate/up projections. `HFCacheDecoder` calls the model's forward
with a transformers DynamicCache and serves every other architecture.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import DynamicCache

LLAMA_FAMILY = ("llama", "qwen2", "mistral")
CACHE_BLOCK = 128  # positions added to the static cache when it fills up


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left padded so that every row's next token lands in the same column."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for b, prompt in enumerate(prompts):
        input_ids[b, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[b, width - len(prompt) :] = True
    return input_ids.to(device), attention_mask.to(device)


def supports_static(model: torch.nn.Module) -> bool:
    """Whether StaticLlamaDecoder can run this model: a Llama-family layout with SiLU MLPs and plain RoPE attention."""
    config = model.config
    if getattr(config, "model_type", None) not in LLAMA_FAMILY or getattr(config, "hidden_act", None) != "silu":
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    layer = model.model.layers[0]
    return all(hasattr(layer.self_attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) and all(
        hasattr(layer.mlp, name) for name in ("gate_proj", "up_proj", "down_proj")
    )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _fused(*linears: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several projections of the same input: one larger matmul runs faster than several."""
    weight = torch.cat([linear.weight for linear in linears])
    if linears[0].bias is None:
        return weight, None
    return weight, torch.cat([linear.bias for linear in linears])


class StaticLlamaDecoder:
    """Llama-family forward over a KV cache allocated once per batch and grown by CACHE_BLOCK positions when full.

    The fused projection weights are built when the decoder is (once per batch), so a model that the trainer updates
    in place is always current.
    """

    def __init__(self, model: torch.nn.Module, reserve: int):
        config = model.config
        self.model = model
        self.reserve = reserve  # cache positions to allocate beyond the prompt
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = [
            (layer, _fused(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
             _fused(layer.mlp.gate_proj, layer.mlp.up_proj))
            for layer in model.model.layers
        ]  # fmt: skip
        self.keys = self.values = self.valid = self.positions = torch.empty(0)
        self.length = 0  # cache columns written so far, the same for all rows

    def prefill(self, prompts: list[list[int]], copies: list[int], pad_id: int) -> torch.Tensor:
        device = self.model.lm_head.weight.device
        input_ids, mask = left_pad(prompts, pad_id, device)
        width = input_ids.shape[1]
        expand = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(copies, device=device))
        shape = (len(self.layers), len(expand), self.kv_heads, width + self.reserve, self.head_dim)
        dtype = self.model.lm_head.weight.dtype
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = F.pad(mask[expand], (0, self.reserve))  # the keys each row may attend to
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        # A pad query attends to itself: no all-masked softmax rows, whose NaNs would leak into the cache.
        attend = (causal & mask[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        hidden = self._run(input_ids, positions, attend[:, None], expand=expand)
        self.positions = positions[expand, -1] + 1  # the next RoPE position of every row
        self.length = width
        return self._logits(hidden[expand, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.length == self.keys.shape[3]:
            self._grow()
        self.valid[:, self.length] = True
        attend = self.valid[:, None, None, : self.length + 1]
        hidden = self._run(tokens[:, None], self.positions[:, None], attend)
        self.positions = self.positions + 1
        self.length += 1
        return self._logits(hidden[:, -1])

    def keep(self, index: torch.Tensor) -> None:
        self.keys, self.values = self.keys[:, index], self.values[:, index]
        self.valid, self.positions = self.valid[index], self.positions[index]

    def _grow(self) -> None:
        pad = (0, 0, 0, CACHE_BLOCK)  # F.pad starts from the last dim: head_dim by 0, positions by one block
        self.keys, self.values = F.pad(self.keys, pad), F.pad(self.values, pad)
        self.valid = F.pad(self.valid, (0, CACHE_BLOCK))

    def _run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attend: torch.Tensor, expand: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states after the last layer. Prefill (`expand` given) stores every position's keys and values for the
        expanded rows; a decode step stores one column and attends over the cache."""
        backbone = self.model.model
        hidden = backbone.embed_tokens(input_ids)
        cos, sin = backbone.rotary_emb(hidden, positions)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        batch, width, _ = hidden.shape
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        column = self.length
        for index, (layer, (qkv_weight, qkv_bias), (gate_up_weight, gate_up_bias)) in enumerate(self.layers):
            attention = layer.self_attn
            q, k, v = F.linear(layer.input_layernorm(hidden), qkv_weight, qkv_bias).split(
                (q_size, kv_size, kv_size), dim=-1
            )
            q = q.view(batch, width, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            if expand is not None:
                self.keys[index, :, :, :width], self.values[index, :, :, :width] = k[expand], v[expand]
            else:
                self.keys[index, :, :, column : column + 1], self.values[index, :, :, column : column + 1] = k, v
                k, v = self.keys[index, :, :, : column + 1], self.values[index, :, :, : column + 1]
            if width == 1:  # a decode step: the query heads sharing a KV head become that head's query rows
                q = q.reshape(batch, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=attention.scaling, enable_gqa=True)
            out = out.reshape(batch, self.heads, width, self.head_dim)
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, width, q_size))
            gate, up = F.linear(layer.post_attention_layernorm(hidden), gate_up_weight, gate_up_bias).chunk(2, dim=-1)
            hidden = hidden + layer.mlp.down_proj(F.silu(gate) * up)
        return hidden

    def _logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm(last_hidden)).float()


class HFCacheDecoder:
    """Any causal LM through its own forward and a transformers DynamicCache (grown by concatenation each step)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        self.cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.mask = self.positions = None

    def prefill(self, prompts: list[list[int]], copies: list[int], pad_id: int) -> torch.Tensor:
        device = next(self.model.parameters()).device
        input_ids, mask = left_pad(prompts, pad_id, device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(input_ids, mask.long(), positions)
        expand = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(copies))
        self.cache.batch_select_indices(expand)
        self.mask, self.positions = mask.long()[expand], positions[expand, -1:]
        return logits[expand]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        self.positions = self.positions + 1
        return self._forward(tokens[:, None], self.mask, self.positions)

    def keep(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,  # only the last position feeds the next token
            **{self.cache_kwarg: self.cache},
        )
        return out.logits[:, -1, :].float()
