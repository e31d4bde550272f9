"""Rollouts with vLLM (GPU only), colocated with the trainer in the same process.

vllm is imported when an engine is built, never at package import, and its absence gives a one-line error. The engine
lives in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so `update_weights` hands tensors to the worker directly,
gathering each parameter first when the trainer shards them (DeepSpeed ZeRO-3, FSDP1 or FSDP2). Under a multi-process
launch each rank builds its own engine with `distributed_executor_backend="external_launcher"` (vLLM's mode for
running inside a torchrun-style process group, as TRL's colocate mode does): one engine per rank, on that rank's GPU.

Sleep mode (level 1) offloads the weights to CPU and drops the KV cache while the trainer updates the policy; the
weights come back first for `update_weights` and the KV cache only at the next `generate`, as vLLM's documentation
advises for RLHF weight updates, so the gathered trainer tensors never share the GPU with a KV cache.

Semantics match `HFEngine`: each (prompt, sample) pair is its own request with seed `params.seed + row`, as the
reference evaluation repeats prompts with n = 1; response ids end with the EOS or with the token that completes the
first stop string, and the text is cut before the stop string. One difference: vLLM reports log-probs of the raw
logits (temperature 1), the HF engine of logits / temperature; they agree at the training temperature 1.0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from serl.parallel import full_parameters
from serl.rollout.base import Completion, FinishReason, SamplingParams
from serl.rollout.formats import encode_prompts

SLEEP_TAGS = ("weights", "kv_cache")  # the GPU memory that vLLM's sleep mode releases, by its tags


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"the vllm rollout engine needs the vllm package and a CUDA GPU ({error}); install the gpu extra "
            "with pip install 'serl-rl[gpu]', or use rollout engine 'hf'"
        ) from None
    return vllm


class VLLMEngine:
    """A colocated vLLM engine. `model`: a model spec or directory, or the trainer's module (its weights are synced).
    Extra keyword arguments go to `vllm.LLM`, e.g. `distributed_executor_backend="external_launcher"`."""

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module,
        tokenizer: Any = None,
        *,
        seed: int = 0,
        max_batch_size: int | None = None,
        gpu_memory_utilization: float = 0.6,
        enable_sleep: bool = True,
        dtype: str = "auto",
        max_model_len: int | None = None,
        **llm_kwargs: Any,
    ):
        vllm = import_vllm()
        if not torch.cuda.is_available():
            raise RuntimeError("the vllm rollout engine needs a CUDA GPU; use engine 'hf' on CPU")
        from serl.models import load_tokenizer, materialize

        module = model if isinstance(model, torch.nn.Module) else None
        location = module.config._name_or_path if module is not None else materialize(os.fspath(model))[0]
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(location)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process worker: direct weight loading
        self.llm = vllm.LLM(
            model=location,
            tokenizer=location,
            seed=seed,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_batch_size or 256,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=enable_sleep,
            **llm_kwargs,
        )
        self._vllm = vllm
        self.enable_sleep = enable_sleep
        self._asleep: set[str] = set()  # SLEEP_TAGS released by sleep() and not yet woken
        if module is not None:
            self.update_weights(module)  # the trainer's weights may differ from those on disk

    @property
    def sleeping(self) -> bool:
        return bool(self._asleep)

    def generate(
        self, prompts: list[str] | list[list[int]], params: SamplingParams, n: int = 1, *, progress: bool = False
    ) -> list[Completion]:
        """len(prompts) * n completions, the n samples of each prompt contiguous, prompts in the given order."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        if not prompt_ids:
            return []
        self.wake()
        base_seed = params.seed if params.seed is not None else int(torch.randint(2**31, ()).item())
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids for _ in range(n)]
        sampling = [self._sampling_params(params, base_seed + row) for row in range(len(requests))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=progress)
        completions = []
        for row, output in enumerate(outputs):
            sample = output.outputs[0]
            completions.append(
                Completion(
                    prompt_index=row // n,
                    sample_index=row % n,
                    prompt_ids=prompt_ids[row // n],
                    response_ids=list(sample.token_ids),
                    text=sample.text,
                    finish_reason=_finish_reason(sample.finish_reason, sample.stop_reason),
                    logprobs=_sampled_logprobs(sample) if params.logprobs else None,
                )
            )
        return completions

    def update_weights(self, source: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        """Load the trainer's weights into the vLLM model, one (gathered) parameter at a time. A sharded module
        (FSDP, ZeRO-3) is gathered here: call this on every rank. A sleeping engine gets its weights back first; its
        KV cache stays released until the next generate."""
        self.wake(tags=("weights",))
        target = _worker_model(self.llm)
        with torch.no_grad():
            for name, tensor in full_parameters(source):
                target.load_weights([(name, tensor)])  # copied (and cast) into vLLM's tensor while still gathered
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights

    def sleep(self) -> None:
        """Offload the weights to CPU and drop the KV cache (vLLM sleep level 1) until the next wake/generate."""
        if self.enable_sleep and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = set(SLEEP_TAGS)

    def wake(self, tags: Iterable[str] = SLEEP_TAGS) -> None:
        """Bring back the released memory named by TAGS (default: all of it)."""
        pending = [tag for tag in SLEEP_TAGS if tag in self._asleep and tag in tags]
        if pending:
            self.llm.wake_up(tags=pending)
            self._asleep.difference_update(pending)

    def _sampling_params(self, params: SamplingParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            presence_penalty=params.presence_penalty,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=seed,
            logprobs=0 if params.logprobs else None,  # 0: only the sampled token's log-prob
            include_stop_str_in_output=False,
            skip_special_tokens=True,
        )


def _worker_model(llm: Any) -> Any:
    """The torch module inside vLLM's in-process worker (V1 engine, or the V0 layout)."""
    engine = llm.llm_engine
    executor = getattr(engine, "model_executor", None)
    if executor is None:  # V1: LLMEngine -> engine core client -> in-process engine core
        executor = engine.engine_core.engine_core.model_executor
    worker = executor.driver_worker
    worker = getattr(worker, "worker", worker)  # V1 wraps the worker
    runner = worker.model_runner
    return runner.get_model() if hasattr(runner, "get_model") else runner.model


def _finish_reason(reason: str | None, stop_reason: int | str | None) -> FinishReason:
    if reason == "length":
        return "length"
    return "stop" if isinstance(stop_reason, str) else "eos"


def _sampled_logprobs(sample: Any) -> list[float]:
    return [step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids, strict=True)]
