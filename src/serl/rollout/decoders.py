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


SEGMENT_OVERHEAD = 256  # cost of one more attention segment per decode step, in (row x cache position) units
SEGMENTS = True  # switch for benchmarks/bench_rollout.py's ablation: False keeps one cache for the whole batch


def split_by_length(lengths: list[int], copies: list[int], reserve: int) -> list[tuple[int, int]]:
    """Contiguous ranges of prompts (sorted by length) that get a KV cache each, chosen to minimise the cache
    positions the decode steps read: sum over ranges of rows x (longest prompt + reserve / 2), plus SEGMENT_OVERHEAD
    per range. Exact, by dynamic programming over the split points (a batch holds a few hundred prompts at most).

    One cache for a whole batch pads every row to its longest prompt; with chat prompts of 60 to 400 tokens most of
    the attention would then read padding.
    """
    count = len(lengths)
    if not SEGMENTS or count <= 1:
        return [(0, count)]
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest split of prompts[:j]
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        rows, longest = 0, 0
        for i in range(j - 1, -1, -1):  # the last range is prompts[i:j]
            rows, longest = rows + copies[i], max(longest, lengths[i])
            cost = best[i] + rows * (longest + reserve / 2) + SEGMENT_OVERHEAD
            if cost < best[j]:
                best[j], cut[j] = cost, i
    ranges, j = [], count
    while j > 0:
        ranges.append((cut[j], j))
        j = cut[j]
    return ranges[::-1]


class _Segment:
    """The KV cache of a contiguous block of rows whose prompts have similar lengths."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, length: int):
        self.keys, self.values = keys, values  # [layers, rows, kv_heads, capacity, head_dim]
        self.valid = valid  # [rows, capacity]: the keys each row may attend to (left padding is not)
        self.length = length  # columns written so far, the same for all rows of the segment

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    def select(self, index: torch.Tensor) -> None:
        self.keys, self.values, self.valid = self.keys[:, index], self.values[:, index], self.valid[index]

    def make_room(self) -> None:
        """Mark the next column valid, growing the cache by CACHE_BLOCK positions when it is full."""
        if self.length == self.keys.shape[3]:
            pad = (0, 0, 0, CACHE_BLOCK)  # F.pad starts from the last dim: head_dim by 0, positions by one block
            self.keys, self.values = F.pad(self.keys, pad), F.pad(self.values, pad)
            self.valid = F.pad(self.valid, (0, CACHE_BLOCK))
        self.valid[:, self.length] = True


class StaticLlamaDecoder:
    """Llama-family forward over pre-allocated KV caches, grown by CACHE_BLOCK positions when full.

    The rows of a batch are split into segments of similar prompt length (`split_by_length`), each with its own
    cache: the projections, MLPs and LM head run on all rows at once (large matmuls), attention runs per segment over
    that segment's cache only. The fused projection weights are built when the decoder is (once per batch), so a
    model that the trainer updates in place is always current.
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
        self.segments: list[_Segment] = []
        self.positions = torch.empty(0)  # the next RoPE position of every row

    def prefill(self, prompts: list[list[int]], copies: list[int], pad_id: int) -> torch.Tensor:
        logits, positions = [], []
        for lo, hi in split_by_length([len(p) for p in prompts], copies, self.reserve):
            segment_logits, segment_positions = self._prefill_segment(prompts[lo:hi], copies[lo:hi], pad_id)
            logits.append(segment_logits)
            positions.append(segment_positions)
        self.positions = torch.cat(positions)
        return torch.cat(logits)

    def _prefill_segment(
        self, prompts: list[list[int]], copies: list[int], pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.model.lm_head.weight.device
        input_ids, mask = left_pad(prompts, pad_id, device)
        width = input_ids.shape[1]
        expand = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(copies, device=device))
        shape = (len(self.layers), len(expand), self.kv_heads, width + self.reserve, self.head_dim)
        dtype = self.model.lm_head.weight.dtype
        segment = _Segment(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
            F.pad(mask[expand], (0, self.reserve)),
            width,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        # A pad query attends to itself: no all-masked softmax rows, whose NaNs would leak into the cache.
        attend = (causal & mask[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        hidden = self._run(input_ids, positions, prefill=(segment, expand, attend[:, None]))
        self.segments.append(segment)
        return self._logits(hidden[expand, -1]), positions[expand, -1] + 1

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        for segment in self.segments:
            segment.make_room()
        hidden = self._run(tokens[:, None], self.positions[:, None])
        self.positions = self.positions + 1
        for segment in self.segments:
            segment.length += 1
        return self._logits(hidden[:, -1])

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows at INDEX (ascending, as the engine passes them), segment by segment."""
        kept, start = [], 0
        for segment in self.segments:
            inside = index[(index >= start) & (index < start + segment.rows)] - start
            start += segment.rows
            if len(inside):
                segment.select(inside)
                kept.append(segment)
        self.segments = kept
        self.positions = self.positions[index]

    def _run(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        prefill: tuple[_Segment, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Hidden states after the last layer. Prefill (one segment's prompts, each once) stores every position's
        keys and values for the segment's rows (`expand` maps rows to prompts); a decode step stores one column per
        segment and attends over each segment's cache."""
        backbone = self.model.model
        hidden = backbone.embed_tokens(input_ids)
        cos, sin = backbone.rotary_emb(hidden, positions)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        batch, width, _ = hidden.shape
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for index, (layer, (qkv_weight, qkv_bias), (gate_up_weight, gate_up_bias)) in enumerate(self.layers):
            attention = layer.self_attn
            q, k, v = F.linear(layer.input_layernorm(hidden), qkv_weight, qkv_bias).split(
                (q_size, kv_size, kv_size), dim=-1
            )
            q = q.view(batch, width, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            if prefill is not None:
                segment, expand, attend = prefill
                segment.keys[index, :, :, :width], segment.values[index, :, :, :width] = k[expand], v[expand]
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=attend, scale=attention.scaling, enable_gqa=True
                )
            else:  # the query heads sharing a KV head become that head's query rows
                q = q.reshape(batch, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
                out = torch.cat(self._decode_attention(index, q, k, v, attention.scaling))
            out = out.reshape(batch, self.heads, width, self.head_dim)
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, width, q_size))
            gate, up = F.linear(layer.post_attention_layernorm(hidden), gate_up_weight, gate_up_bias).chunk(2, dim=-1)
            hidden = hidden + layer.mlp.down_proj(F.silu(gate) * up)
        return hidden

    def _decode_attention(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> list[torch.Tensor]:
        """One decode step's attention, segment by segment: write this step's key and value, attend over the cache."""
        outputs, start = [], 0
        for segment in self.segments:
            rows, column = slice(start, start + segment.rows), segment.length
            start += segment.rows
            segment.keys[layer, :, :, column : column + 1] = k[rows]
            segment.values[layer, :, :, column : column + 1] = v[rows]
            keys, values = segment.keys[layer, :, :, : column + 1], segment.values[layer, :, :, : column + 1]
            attend = segment.valid[:, None, None, : column + 1]
            outputs.append(F.scaled_dot_product_attention(q[rows], keys, values, attn_mask=attend, scale=scale))
        return outputs

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
