"""Rollouts with a Hugging Face causal LM, on CPU or GPU, through a hand-written decode loop.

No `model.generate`: rows are bucketed by prompt length, the n samples of a prompt share one prefill, Llama-family
models run over a pre-allocated KV cache (`decoders.StaticLlamaDecoder`), and rows that finish leave the batch.
What each of these buys is measured in docs/benchmarks.md ("Rollout engine").
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from serl.rollout.base import Completion, FinishReason, SamplingParams
from serl.rollout.decoders import HFCacheDecoder, StaticLlamaDecoder, supports_static
from serl.rollout.formats import encode_prompts
from serl.rollout.sampling import apply_presence_penalty, sample_next_tokens, token_logprobs
from serl.rollout.stopping import StopChecker, cut_at_stop, decode

KVCache = Literal["auto", "static", "dynamic"]
MAX_BATCH_ROWS = {"cpu": 256, "cuda": 1024}  # upper bound when the engine picks the batch size itself
KV_BUDGET_BYTES = {"cpu": 4 << 30, "cuda": 8 << 30}  # KV cache one batch may allocate when the engine picks
DROP_FRACTION = 0.125  # compact the batch once this share of its rows has finished
# Switches for benchmarks/bench_rollout.py's ablation (docs/benchmarks.md); always on in normal use.
BUCKET_BY_LENGTH = True
SHARE_PREFILL = True


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    done: bool = False


class HFEngine:
    """A rollout engine over a Hugging Face causal LM.

    The model may be the trainer's own policy object: generation only reads it (eval mode and no autograd for the
    call, the caller's mode restored after), and `update_weights(model)` with that same object is free. Another
    module or a state dict is copied in. The same `params.seed` on the same inputs gives the same completions.

    max_batch_size: rows (prompt x sample) decoded together; None picks the most whose KV cache fits a budget
    (4 GiB on CPU, 8 GiB on GPU), at most 256 on CPU and 1024 on GPU.
    kv_cache: "static" (pre-allocated, Llama-family models only), "dynamic" (the model's own forward and a
    transformers DynamicCache, any model), or "auto" (static when the model supports it).
    num_threads: torch intra-op threads during generate() (restored after); None leaves torch's setting.
    dtype: compute dtype of the rollouts; None is the model's. Another dtype (bf16 on a CPU with AVX512-BF16 or AMX
    runs matmuls ~2.5x faster than fp32) decodes with a converted copy of the model, which `update_weights`
    refreshes, also when given the engine's own model object.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
        kv_cache: KVCache = "auto",
        num_threads: int | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if device is not None:
            model = model.to(device)
        if kv_cache == "static" and not supports_static(model):
            raise ValueError(f"kv_cache='static' needs a Llama-family model, not {model.config.model_type!r}")
        if kv_cache not in ("auto", "static", "dynamic"):
            raise ValueError(f"kv_cache must be auto, static or dynamic, got {kv_cache!r}")
        self.model = model
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.converted = dtype is not None and dtype != next(model.parameters()).dtype
        # The module that decodes: the model itself, or a copy in the rollout dtype.
        self.runner = copy.deepcopy(model).to(dtype).requires_grad_(False) if self.converted else model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.progress = progress
        self.static = kv_cache == "static" or (kv_cache == "auto" and supports_static(model))
        self.num_threads = num_threads
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)

    # ------------------------------------------------------------------------------------------------ interface
    def generate(
        self,
        prompts: list[str] | list[list[int]],
        params: SamplingParams,
        n: int = 1,
        *,
        progress: bool | None = None,
    ) -> list[Completion]:
        """len(prompts) * n completions: the n samples of each prompt contiguous, prompts in the given order.

        String prompts are tokenized without special tokens (the prompt format decides about BOS); token-id prompts are
        used as is. Stop strings: `response_ids` end with the token that completes the first stop string and `text`
        is cut before it (see `serl.rollout.stopping`); an EOS is kept as the last response id.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if params.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        seed = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        generator = torch.Generator(device=self.device).manual_seed(seed)

        # Length bucketing: similar prompt lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) if BUCKET_BY_LENGTH else 0)
        rows = [_Row(i, s, prompt_ids[i]) for i in order for s in range(n)]
        show = self.progress if progress is None else progress
        with (
            _progress(show, len(rows)) as advance,
            torch.inference_mode(),
            _eval_mode(self.runner),
            _threads(self.num_threads),
        ):
            size = self._batch_rows(max(len(ids) for ids in prompt_ids), params) if rows else 1
            for start in range(0, len(rows), size):
                self._decode_batch(rows[start : start + size], params, generator, advance)

        rows.sort(key=lambda r: (r.prompt_index, r.sample_index))
        return [self._completion(row, params) for row in rows]

    def update_weights(self, source: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        """Sync with the trainer. The engine's own model object: a no-op (unless a `dtype` copy needs refreshing).
        Another module or a state dict: copied in (and cast)."""
        if source is self.runner:
            return
        state = source.state_dict() if isinstance(source, torch.nn.Module) else source
        with torch.no_grad():
            result = self.runner.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"update_weights: keys not in the rollout model: {result.unexpected_keys[:5]}")

    def sleep(self) -> None:
        """Free cached accelerator memory. The engine holds no buffers between calls, and a shared model stays put."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake(self) -> None:
        """Nothing to restore: buffers are allocated per generate() call."""

    # ------------------------------------------------------------------------------------------------ decoding
    def _batch_rows(self, prompt_len: int, params: SamplingParams) -> int:
        if self.max_batch_size:
            return self.max_batch_size
        config = self.runner.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        element = next(self.runner.parameters()).element_size()
        per_row = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element
        per_row *= prompt_len + params.max_new_tokens
        budget = KV_BUDGET_BYTES.get(self.device.type, KV_BUDGET_BYTES["cpu"])
        return max(1, min(MAX_BATCH_ROWS.get(self.device.type, 256), budget // per_row))

    def _decode_batch(
        self, rows: list[_Row], params: SamplingParams, generator: torch.Generator, advance: Callable[[int], None]
    ) -> None:
        decoder = StaticLlamaDecoder(self.runner, min(params.max_new_tokens, 256)) if self.static else None
        decoder = decoder or HFCacheDecoder(self.runner)
        # Rows arrive grouped by prompt: prefill each prompt once, then copy its cache to its samples.
        prompts, copies = [], []
        for b, row in enumerate(rows):
            if b and row.prompt_index == rows[b - 1].prompt_index and SHARE_PREFILL:
                copies[-1] += 1
            else:
                prompts.append(row.prompt_ids)
                copies.append(1)
        logits = decoder.prefill(prompts, copies, self.pad_id)

        batch = list(rows)  # batch[b] is the row decoded in batch position b; finished rows linger until a compaction
        generated = torch.zeros((len(batch), logits.shape[-1]), dtype=torch.bool, device=self.device)
        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        stop_checker = StopChecker(self.tokenizer, params.stop)
        for step in range(params.max_new_tokens):
            penalized = apply_presence_penalty(logits, generated, params.presence_penalty)
            tokens = sample_next_tokens(
                penalized, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, generator=generator
            )
            logps = token_logprobs(logits, tokens, params.temperature).tolist() if params.logprobs else None
            if params.presence_penalty:
                generated[torch.arange(len(batch), device=self.device), tokens] = True
            is_eos = torch.isin(tokens, eos).tolist()
            finished = 0
            for b, (row, token) in enumerate(zip(batch, tokens.tolist(), strict=True)):
                if row.done:
                    continue
                row.tokens.append(token)
                if logps is not None:
                    row.logprobs.append(logps[b])
                if is_eos[b]:
                    row.finish_reason, row.done = "eos", True
                elif stop_checker and stop_checker.hit(row.tokens):
                    row.finish_reason, row.done = "stop", True
                elif step == params.max_new_tokens - 1:
                    row.done = True
                finished += row.done
            advance(finished)
            live = [b for b, row in enumerate(batch) if not row.done]
            if not live:
                break
            if len(batch) - len(live) >= max(1, DROP_FRACTION * len(batch)):  # drop finished rows from the batch
                index = torch.tensor(live, device=self.device)
                decoder.keep(index)
                batch, tokens, generated = [batch[b] for b in live], tokens[index], generated[index]
            logits = decoder.step(tokens)

    def _completion(self, row: _Row, params: SamplingParams) -> Completion:
        tokens, reason = row.tokens, row.finish_reason
        if params.stop:  # exact cut; a stop string ahead of an EOS wins, as it would have ended decoding there
            tokens, text, found = cut_at_stop(self.tokenizer, tokens, params.stop)
            reason = "stop" if found else reason
        else:
            text = decode(self.tokenizer, tokens)
        return Completion(
            prompt_index=row.prompt_index,
            sample_index=row.sample_index,
            prompt_ids=row.prompt_ids,
            response_ids=tokens,
            text=text,
            finish_reason=reason,
            logprobs=row.logprobs[: len(tokens)] if params.logprobs else None,
        )


def _eos_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config names an EOS token")
    return ids


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for one generate() call, then the caller's mode again (the trainer's policy may be in train mode)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar over finished rows when asked for, else a silent callback."""
    if not show:
        yield lambda _count: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("rollout", total=total)
        yield lambda count: bar.advance(task, count)
