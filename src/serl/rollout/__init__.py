"""Rollout engines behind one interface (`RolloutEngine`): `make_engine("hf" | "vllm", model, tokenizer, ...)`.

The other public names are imported from their submodules on first use (`serl.lazy`), so importing
`serl.rollout.choices` (as the config loader does) does not import torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from serl.lazy import lazy_exports
from serl.rollout.choices import ENGINES

if TYPE_CHECKING:
    from serl.config import RolloutConfig
    from serl.rollout.base import RolloutEngine, SamplingParams

_EXPORTS = {
    "Completion": "base",
    "FinishReason": "base",
    "RolloutEngine": "base",
    "SamplingParams": "base",
    "PROMPT_FORMATS": "choices",
    "encode_prompt": "formats",
    "format_prompt": "formats",
}
_lazy_getattr, _lazy_dir = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted([*_lazy_dir(), "ENGINES", "engine_options", "make_engine", "roll_out", "rollout_params"])


def make_engine(kind: str, model: Any, tokenizer: Any, **kwargs: Any) -> RolloutEngine:
    """Build a rollout engine. `kind` "hf": HFEngine(model, tokenizer, **kwargs); "vllm": VLLMEngine(...), GPU only."""
    if kind == "hf":
        from serl.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    if kind == "vllm":
        from serl.rollout.vllm import VLLMEngine

        if kwargs.get("dtype", "") is None:  # "the policy's dtype": vLLM's own default ("auto") picks it
            kwargs.pop("dtype")

        return VLLMEngine(model, tokenizer, **kwargs)
    raise ValueError(f"unknown rollout engine {kind!r}; expected one of {', '.join(ENGINES)}")


def engine_options(rollout: RolloutConfig, *, seed: int = 0, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """`make_engine` options from a run's rollout config, for process RANK of WORLD. vLLM also gets its GPU memory
    share, sleep mode and a per-rank seed; with WORLD > 1, vLLM's `external_launcher` backend puts one engine on each
    rank's own GPU inside the launcher's process group (no tensor parallelism), as TRL's colocate mode does."""
    options: dict[str, Any] = {"max_batch_size": rollout.max_batch_size, "dtype": rollout.dtype}
    if rollout.engine != "vllm":
        return options
    options |= {
        "gpu_memory_utilization": rollout.vllm_gpu_memory_utilization,
        "enable_sleep": rollout.vllm_enable_sleep,
        "seed": seed + rank,
    }
    if world > 1:
        options |= {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}
    return options


def rollout_params(rollout: RolloutConfig, *, seed: int | None) -> SamplingParams:
    """The sampling of a run's rollouts (`rollout.*`: temperature, top-p, top-k, length, stop strings)."""
    from serl.rollout.base import SamplingParams

    return SamplingParams(
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        max_new_tokens=rollout.max_new_tokens,
        stop=tuple(rollout.stop),
        seed=seed,
    )


def roll_out(
    engine: Any, tokenizer: Any, problems: Sequence[str], rollout: RolloutConfig, *, seed: int
) -> list[list[Any]]:
    """`rollout.n_samples_per_prompt` completions per problem, grouped per problem in order, as a training step rolls
    them out: the run's prompt format, prompts right-truncated to `rollout.prompt_max_len` tokens, its sampling."""
    from serl.rollout.formats import format_prompt, truncate_prompt

    prompts = [
        truncate_prompt(tokenizer, format_prompt(tokenizer, text, rollout.prompt_format), rollout.prompt_max_len)
        for text in problems
    ]
    n = rollout.n_samples_per_prompt
    completions = engine.generate(prompts, rollout_params(rollout, seed=seed), n=n)
    return [completions[i * n : (i + 1) * n] for i in range(len(problems))]


__all__ = sorted([*_EXPORTS, "ENGINES", "engine_options", "make_engine", "roll_out", "rollout_params"])
