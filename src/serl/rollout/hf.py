"""Rollouts with a Hugging Face causal LM, on CPU or GPU, through a hand-written decode loop.

The loop calls the model's forward directly (no `generate`): rows are bucketed by prompt length, the n samples of a
prompt share one prefill, and rows that finish leave the batch so later steps only pay for live rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from serl.rollout.base import Completion, FinishReason, SamplingParams
from serl.rollout.formats import encode_prompts
from serl.rollout.sampling import apply_presence_penalty, sample_next_tokens, token_logprobs
from serl.rollout.stopping import StopChecker, cut_at_stop, decode

DEFAULT_BATCH_ROWS = {"cpu": 256, "cuda": 512}


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"


class HFEngine:
    """A rollout engine over a Hugging Face causal LM.

    The model may be the trainer's own policy object: generation only reads it (eval mode and no autograd for the call),
    and `update_weights(model)` with that same object is then free. Pass a different module or a state dict to copy
    weights in. Determinism: the same `params.seed` on the same batch gives the same completions.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ):
        if device is not None:
            model = model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size or DEFAULT_BATCH_ROWS.get(self.device.type, 256)
        self.progress = progress
        self.eos_ids = _eos_ids(model, tokenizer)
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

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
        used as is. See `serl.rollout.stopping` for how stop strings cut `text` and `response_ids`.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if params.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        seed = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        generator = torch.Generator(device=self.device).manual_seed(seed)

        # Length bucketing: similar prompt lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        rows = [_Row(i, s, prompt_ids[i]) for i in order for s in range(n)]
        show = self.progress if progress is None else progress
        with _progress(show, len(rows)) as advance, torch.inference_mode(), _eval_mode(self.model):
            for start in range(0, len(rows), self.max_batch_size):
                self._decode_batch(rows[start : start + self.max_batch_size], params, generator, advance)

        rows.sort(key=lambda r: (r.prompt_index, r.sample_index))
        return [self._completion(row, params) for row in rows]

    def update_weights(self, source: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        """Sync with the trainer. The engine's own model object: a no-op. Another module or a state dict: copied in."""
        if source is self.model:
            return
        state = source.state_dict() if isinstance(source, torch.nn.Module) else source
        with torch.no_grad():
            result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"update_weights: keys not in the rollout model: {result.unexpected_keys[:5]}")

    def sleep(self) -> None:
        """Free cached accelerator memory. The engine holds no buffers between calls, and a shared model stays put."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake(self) -> None:
        """Nothing to restore: buffers are allocated per generate() call."""

    # ------------------------------------------------------------------------------------------------ decoding
    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,  # only the last position feeds the next token; skips the LM head elsewhere
            **{self._cache_kwarg: cache},
        )
        return out.logits[:, -1, :]

    def _decode_batch(
        self, rows: list[_Row], params: SamplingParams, generator: torch.Generator, advance: Callable[[int], None]
    ) -> None:
        device = self.device
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):  # left padding: every row's next token lands in the same column
            input_ids[b, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention_mask[b, width - len(row.prompt_ids) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, attention_mask, position_ids, cache)
        position_ids = position_ids[:, -1:]

        live = list(range(len(rows)))  # rows[live[b]] is batch row b
        generated = torch.zeros((len(rows), logits.shape[-1]), dtype=torch.bool, device=device)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        stop_checker = StopChecker(self.tokenizer, params.stop)
        for step in range(params.max_new_tokens):
            penalized = apply_presence_penalty(logits, generated, params.presence_penalty)
            tokens = sample_next_tokens(
                penalized, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, generator=generator
            )
            logps = token_logprobs(logits, tokens, params.temperature).tolist() if params.logprobs else None
            if params.presence_penalty:
                generated[torch.arange(len(live), device=device), tokens] = True
            finished = torch.isin(tokens, eos)
            token_list, finished_list = tokens.tolist(), finished.tolist()
            for b, row_index in enumerate(live):
                row = rows[row_index]
                row.tokens.append(token_list[b])
                if logps is not None:
                    row.logprobs.append(logps[b])
                if finished_list[b]:
                    row.finish_reason = "eos"
                elif stop_checker and stop_checker.hit(row.tokens):
                    row.finish_reason = "stop"
                    finished_list[b] = True
            if step == params.max_new_tokens - 1:
                advance(len(live))
                break
            keep = [b for b, done in enumerate(finished_list) if not done]
            if len(keep) < len(live):  # drop finished rows from the batch
                advance(len(live) - len(keep))
                if not keep:
                    break
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention_mask, position_ids, generated = attention_mask[index], position_ids[index], generated[index]
                tokens = tokens[index]
                live = [live[b] for b in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=1)
            position_ids = position_ids + 1
            logits = self._forward(tokens[:, None], attention_mask, position_ids, cache)

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


class _eval_mode:
    """Eval mode for the duration of a generate() call, restoring the caller's mode (the trainer's policy) after."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


class _progress:
    """A rich progress bar over completed rows when asked for, else a silent no-op."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda _count: None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task("rollout", total=self.total)
        return lambda count: self.bar.advance(task, count)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
