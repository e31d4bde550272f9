"""The vLLM engine's CPU-testable parts: the missing-package error, the weight gathering that feeds `update_weights`
(a plain module here, FSDP2 over 2 gloo processes, FSDP1 on one GPU), the engine options the trainer builds, and the
engine's calls into vLLM (sleep, staged wake, weight loading) against a stand-in `vllm` module.

This file is also the worker of the distributed tests: `torchrun` runs it as a script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dist_worker import exit_without_teardown
from presets import LOOP_PRESET
from serl.config import load_config
from serl.parallel import full_parameters, gathered_state_dict, unwrapped_name
from serl.rollout import engine_options, make_engine
from serl.rollout.vllm import VLLMEngine


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))


def _assert_same(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert state.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(state[name].cpu(), tensor.cpu()), name


# ------------------------------------------------------------------------------------------------ missing vllm


def test_without_vllm_the_error_names_the_package_and_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(ImportError, match=r"needs the vllm package.*pip install 'serl-rl\[gpu\]'") as error:
        make_engine("vllm", "embedded:smollm2-135m", None)
    assert "gpu extra" in str(error.value)
    assert error.value.__cause__ is None  # one clear line, not a chained traceback


# ------------------------------------------------------------------------------------------------ gathering


def test_wrapper_components_are_dropped_from_parameter_names() -> None:
    assert unwrapped_name("_fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module.mlp.weight") == (
        "model.layers.0.mlp.weight"
    )
    assert unwrapped_name("module._orig_mod.lm_head.weight") == "lm_head.weight"
    assert unwrapped_name("model._checkpoint_wrapped_module.norm.weight") == "model.norm.weight"
    assert unwrapped_name("model.submodule.weight") == "model.submodule.weight"  # only whole components


def test_a_plain_module_gathers_to_a_snapshot_of_its_state_dict() -> None:
    model = _model()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    gathered = gathered_state_dict(model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # a training step after the sync must not reach the gathered copy
    _assert_same(gathered, reference)
    streamed = dict(full_parameters(model))  # the streamed tensors are the live parameters: no copy at all
    assert all(streamed[k].data_ptr() == v.data_ptr() for k, v in model.state_dict().items())
    assert list(full_parameters(reference)) == list(reference.items())  # a dict passes through


def _fsdp2_worker(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    model = _model()
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    assert all(hasattr(p, "full_tensor") for p in model.parameters())  # really sharded: DTensors
    gathered = gathered_state_dict(model)
    streamed = {name: tensor.clone() for name, tensor in full_parameters(model)}  # what update_weights consumes
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).square().sum().backward()
    optimizer.step()  # reuses and rewrites the shards' memory
    after_step = gathered_state_dict(model)
    if dist.get_rank() == 0:
        torch.save({"gathered": gathered, "streamed": streamed, "after_step": after_step}, out / "fsdp2.pt")
    exit_without_teardown(dist)


def _fsdp1_worker(out: Path) -> None:
    """One GPU, world size 1: FSDP1 cannot run on CPU; this still exercises per-unit summoning and the names."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    dist.init_process_group("nccl")
    torch.cuda.set_device(0)
    results = {}
    for use_orig_params in (False, True):
        model = _model().cuda()
        model[0] = FSDP(model[0], use_orig_params=use_orig_params)
        model = FSDP(model, use_orig_params=use_orig_params)
        results[use_orig_params] = {k: v.cpu() for k, v in gathered_state_dict(model).items()}
    torch.save(results, out / "fsdp1.pt")
    exit_without_teardown(dist)


def _torchrun(mode: str, processes: int, out: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node", str(processes), __file__, mode, str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_fsdp2_shards_gather_to_the_full_state_dict_and_stay_valid(tmp_path: Path) -> None:
    _torchrun("fsdp2", 2, tmp_path)
    result = torch.load(tmp_path / "fsdp2.pt", weights_only=False)
    reference = _model().state_dict()
    _assert_same(result["gathered"], reference)  # still the pre-step weights after the step and a second gather
    _assert_same(result["streamed"], reference)
    assert not torch.equal(result["after_step"]["0.weight"], reference["0.weight"])  # the step did change them


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP1 needs a CUDA device")
def test_fsdp1_units_gather_to_the_full_state_dict(tmp_path: Path) -> None:
    _torchrun("fsdp1", 1, tmp_path)
    results = torch.load(tmp_path / "fsdp1.pt", weights_only=False)
    for state in results.values():  # flat parameters and original parameters alike
        _assert_same(state, _model().state_dict())


# ------------------------------------------------------------------------------------------------ options


def test_engine_options_carry_the_vllm_keys_and_one_engine_per_rank() -> None:
    hf = load_config(LOOP_PRESET, ["rollout.max_batch_size=8"]).rollout
    assert engine_options(hf, seed=3) == {"max_batch_size": 8, "dtype": None}  # HFEngine takes no vLLM keys

    overrides = ["rollout.engine=vllm", "rollout.vllm_gpu_memory_utilization=0.35", "rollout.vllm_enable_sleep=false"]
    rollout = load_config(LOOP_PRESET, overrides).rollout
    single = engine_options(rollout, seed=3)
    assert single["gpu_memory_utilization"] == 0.35 and single["enable_sleep"] is False and single["seed"] == 3
    assert "distributed_executor_backend" not in single
    ranked = engine_options(rollout, seed=3, rank=1, world=2)
    assert ranked["distributed_executor_backend"] == "external_launcher"
    assert ranked["tensor_parallel_size"] == 1 and ranked["seed"] == 4


def test_the_trainer_builds_its_vllm_engine_with_the_config_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import serl.rollout
    from serl.trainer.build import make_rollout_engine

    calls: list[tuple[str, Any, dict[str, Any]]] = []
    monkeypatch.setattr(serl.rollout, "make_engine", lambda kind, model, tok, **kw: calls.append((kind, model, kw)))
    cfg = load_config(LOOP_PRESET, ["rollout.engine=vllm", "rollout.vllm_gpu_memory_utilization=0.4"])
    model = _model()
    make_rollout_engine(cfg, model, None, accelerator=None)
    ((kind, engine_model, options),) = calls
    assert kind == "vllm" and engine_model is model
    assert options["gpu_memory_utilization"] == 0.4 and options["enable_sleep"] is True
    assert options["seed"] == cfg.train.seed

    calls.clear()
    lora = load_config(LOOP_PRESET, ["model.lora.rank=8"])  # the HF engine: its own options only
    make_rollout_engine(lora, model, None, accelerator=None)
    assert calls == [("hf", model, {"max_batch_size": None, "dtype": None, "kv_cache": "dynamic"})]


# ------------------------------------------------------------------------------------------------ engine calls


class _FakeLLM:
    """Records what VLLMEngine asks of `vllm.LLM`; its worker model records the loaded weights."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.calls: list[tuple[str, Any]] = []
        self.loaded: dict[str, torch.Tensor] = {}
        model = types.SimpleNamespace(load_weights=lambda pairs: self.loaded.update((n, t.clone()) for n, t in pairs))
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", tags))

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache", None))


def test_sleep_update_and_wake_call_vllm_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=_FakeLLM))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    model = _model()
    model.config = types.SimpleNamespace(_name_or_path="/models/tiny")  # type: ignore[assignment]
    engine = VLLMEngine(
        model, object(), seed=5, gpu_memory_utilization=0.3, distributed_executor_backend="external_launcher"
    )
    llm = engine.llm
    assert isinstance(llm, _FakeLLM)
    assert llm.kwargs["enable_sleep_mode"] is True and llm.kwargs["gpu_memory_utilization"] == 0.3
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher" and llm.kwargs["seed"] == 5
    _assert_same(llm.loaded, model.state_dict())  # the module's weights were copied in at construction

    llm.calls.clear()
    engine.sleep()
    engine.sleep()  # already asleep: no second call
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    engine.update_weights(model)
    assert engine.sleeping  # the KV cache stays released until the next generate
    engine.wake()
    engine.wake()
    assert llm.calls == [
        ("sleep", 1),
        ("wake_up", ["weights"]),  # weights back first; then loaded, with the prefix cache reset
        ("reset_prefix_cache", None),
        ("wake_up", ["kv_cache"]),
    ]
    assert not engine.sleeping
    assert torch.equal(llm.loaded["0.weight"], model[0].weight)


if __name__ == "__main__":  # the torchrun worker
    {"fsdp2": _fsdp2_worker, "fsdp1": _fsdp1_worker}[sys.argv[1]](Path(sys.argv[2]))
