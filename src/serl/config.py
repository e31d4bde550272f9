"""Typed configuration: dataclasses per section, YAML presets shipped in the package, dotted CLI overrides.

Every paper knob has a name here, and every deliberate deviation from the reference code (serl-reference.md §9) has a
flag whose docstring comment says which value reproduces the reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# The Literal types of the named choices live with the code that branches on them; the loader checks values against
# them (so each list of valid names exists once). These modules are torch-free: reading a config stays cheap.
from serl.reward.choices import Extractor, GtMatch, MajorityMethod, NoMajority, RewardControl
from serl.rl.choices import (
    GROUPED_ESTIMATORS,
    AutocastDtype,
    Estimator,
    KLEstimator,
    LossAggregation,
    OptimizerName,
    WhitenScope,
)
from serl.rollout.choices import ComputeDtype, EngineName, PromptFormat
from serl.selfinstruct.choices import ExamplesTurn, NoveltyScope, PromptOverflow
from serl.trainer.choices import CanaryAction, Carryover, Console, TrainMode


class ConfigError(ValueError):
    """An invalid preset, key or value."""


@dataclass
class LoraConfig:
    rank: int = 0  # 0 disables LoRA
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    policy: str = "embedded:smollm2-135m"  # embedded:NAME, local HF dir, .gguf path, or hub id
    reference: str | None = None  # None: the initial policy weights
    dtype: str = "auto"  # auto = fp32 on CPU, bf16 on a GPU that has it
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    seed_path: str = "embedded:arithmetic"  # seed problems: few-shot exemplars and novelty reference (serl mode)
    train_path: str | None = None  # dataset prompts for maj/gt modes; None uses seed_path
    input_key: str = "problem"
    label_key: str | None = "answer"
    max_samples: int | None = None
    # longest record accepted, in characters (a JSONL line is read no further than this); longer is an error
    max_chars: int = 100_000


@dataclass
class RolloutConfig:
    engine: EngineName = "hf"
    n_samples_per_prompt: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 1024
    prompt_max_len: int = 1024
    prompt_format: PromptFormat = "raw"  # raw is the reference's: problem text, no template, no BOS
    stop: list[str] = field(default_factory=list)
    max_batch_size: int | None = None  # engine batch; None lets the engine choose
    # hf engine compute dtype: None = the policy's (fp32 on CPU). "bfloat16" samples with a bf16 copy of the policy,
    # synced after each step (~2.5x faster matmuls on AVX512-BF16 CPUs; sampling numerics change, training does not)
    dtype: ComputeDtype | None = None
    vllm_gpu_memory_utilization: float = 0.6
    vllm_enable_sleep: bool = True


@dataclass
class SelfInstructConfig:
    few_shot: int = 8
    max_generated_shots: int = 2  # up to this many shots come from the kept pool of generated problems
    generation_batch_size: int = 4  # generation prompts per round
    temperature: float = 0.8
    top_p: float = 0.95
    presence_penalty: float = 2.0
    max_new_tokens: int = 1024
    prompt_max_len: int = 1024
    prompt_overflow: PromptOverflow = "drop_examples"  # truncate: right-truncate the tokens, as the reference
    rouge_threshold: float = 0.7  # reject when ROUGE-L F > threshold
    novelty_scope: NoveltyScope = "all"  # reference: seeds + current batch only
    faithful_capitalize: bool = False  # True reproduces the reference's str.capitalize() (lower-cases the rest)
    min_words: int = 4
    max_words: int = 150
    # not in the reference: drop a problem that already states the value of a variable-free sum ("What is
    # 27 * 2 = 54?", rule stated_result); copying the stated value wins a majority vote without any arithmetic
    reject_stated_results: bool = False
    # JSON with "system" and "user", or a packaged prompt: question_generation (None, serl's) | reference (official)
    prompt_file: str | None = None
    # user: the numbered examples end the user message, as the reference. assistant: they open the assistant's reply
    # and the model continues the list; small models then write questions, not fragments (docs/benchmarks.md)
    examples_turn: ExamplesTurn = "user"
    # the reference clears its batch buffer after every step: accepted problems not yet rolled out expire (logged)
    expire_pending: bool = False
    # generated problems whose ROUGE-L F against an evaluation question (eval.datasets, eval.canary) exceeds
    # contamination_threshold are logged as contaminated; True also drops them (fate rejected:contamination)
    drop_contaminated: bool = True
    # 0.7, the novelty filter's bound. On short templated questions it flags every same-template question (all 500
    # embedded level-1 seeds against their disjoint test split); 0.99 flags only token-identical ones
    contamination_threshold: float = 0.7


@dataclass
class RewardConfig:
    extractor: Extractor = "math"
    score_prompt_and_response: bool = False  # True reproduces the reference (extraction over prompt + response)
    majority_method: MajorityMethod = "fast"  # fast gives the reference's rewards (property-tested), faster
    difficulty_low: float = 0.2
    difficulty_high: float = 0.8
    timeout_s: float = 5.0
    num_workers: int | None = None  # None: one per core
    # gt reward test: verify (math-verify equivalence of the label's and the response's answers, reference) |
    # contains (1.0 when the label text occurs in the response, e.g. a format reward with label "\\boxed")
    gt_match: GtMatch = "verify"
    # groups where no two responses agree: zero (every response 0.0) | first (reference: one-hot on response 0)
    no_majority: NoMajority = "zero"
    # a control experiment (bench_selfplay): shuffle the kept groups' rewards across them, or invert them; the
    # difficulty filter still decides on the true rewards, so the same problems are trained on
    control: RewardControl = "none"


@dataclass
class AlgoConfig:
    advantage_estimator: Estimator = "reinforce"
    gamma: float = 1.0
    kl_coef: float = 1e-4  # init_kl_coef (>= 0); the reference scripts used 1e-3, its README 1e-4
    kl_estimator: KLEstimator = "k1"
    use_kl_loss: bool = False  # False: KL in the per-token reward (reference default); True: KL as a loss term
    eps_clip_low: float = 0.2
    eps_clip_high: float = 0.2
    reward_clip: float = 10.0
    whiten_scope: WhitenScope = "rollout"
    advantage_std_norm: bool = True
    rloo_whiten: bool = True  # OpenRLHF v0.7.1 whitens RLOO; current OpenRLHF does not
    loss_agg: LossAggregation = "token_mean_micro"  # token_mean_micro is the reference's


@dataclass
class TrainConfig:
    mode: TrainMode = "serl"
    rollout_batch_size: int = 16  # problems per training step (after the difficulty filter)
    train_batch_size: int = 16  # sequences per optimizer step
    micro_train_batch_size: int = 1
    max_epochs: int = 1
    learning_rate: float = 5e-7
    lr_warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    instructions_per_iteration: int = 2000  # trained problems per iteration (paper: 2000 = 125 steps)
    num_iterations: int = 3
    max_steps: int | None = None  # stop after this many steps overall (None: run all iterations)
    carryover: Carryover = "expire"
    max_attempts_per_step: int = 50  # rollout rounds per step before stopping with a saved state
    # fresh Adam moments at each iteration start, as the paper's restart from the last HF export gave
    reset_optimizer_each_iteration: bool = False
    seed: int = 42
    save_every: int = 50  # steps between resumable checkpoints (also saved at every iteration end)
    keep_checkpoints: int = 3
    # adamw (torch, fused where it can) | adamw_8bit (bitsandbytes, GPU only). Optimizer-state offload to CPU is a
    # DeepSpeed setting: launch with configs/accelerate/gpu_zero3_offload.yaml.
    optimizer: OptimizerName = "adamw"
    # the update's forward passes (and the log-prob passes) under torch.autocast in this dtype over fp32 weights; the
    # output projection and softmax stay fp32. For one process, e.g. a CPU with AVX512-BF16 (about 2x faster); under
    # accelerate launch, set mixed_precision in its config instead. None: the weights' dtype
    autocast_dtype: AutocastDtype | None = None
    # rows of a micro-batch that share a prompt (a group's samples) run it through the decoder once; same update.
    # Micro-batches then take whole groups where that cannot change the update (one step per epoch, loss_agg
    # not token_mean_micro). False: the padded [prompt | response] batch of every row, as before.
    share_prompts: bool = True
    # collapse guard on eval.canary: after this many canary evaluations in a row more than canary_margin below the
    # best so far, stop with a saved state (stop) or reload the best canary checkpoint and go on (rollback); 0 = off
    canary_patience: int = 0
    canary_margin: float = 0.05
    canary_action: CanaryAction = "stop"


@dataclass
class EvalConfig:
    every: int = 0  # steps between in-training evals; 0 = only at iteration ends
    datasets: list[str] = field(default_factory=lambda: ["embedded:arithmetic-test"])
    input_key: str = "problem"
    label_key: str = "answer"
    max_samples: int | None = 200
    prompt_format: PromptFormat | None = None  # None: same as rollout.prompt_format
    max_new_tokens: int = 1024
    at_start: bool = False  # evaluate the initial policy before the first step
    # also sample this many responses for the first sample_max_samples questions of each set: mean@n, maj@n, and
    # TTRL's label accuracy (the vote's answer is right) and reward accuracy (majority reward = GT reward); 0 = off
    n_samples: int = 0
    sample_max_samples: int | None = 100
    sample_temperature: float = 1.0  # the reference's maj@K sampling: T 1.0, top_p 0.95
    sample_top_p: float = 0.95
    # a labelled canary set (a path or embedded:NAME) for the collapse guard (train.canary_*): greedy pass@1 of its
    # first canary_max_samples questions every canary_every steps, and at the start
    canary: str | None = None
    canary_every: int = 1
    canary_max_samples: int | None = 100


@dataclass
class LogConfig:
    run_dir: str | None = None  # None: runs/<preset>-<timestamp>
    console: Console = "rich"
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "serl"
    rollout_keep_every: int = 1  # write every k-th group's responses to rollouts/ (1 = all)
    # keep each step's training batch and, on several processes, every rank's weights at each save under debug/
    debug_dump: bool = False


@dataclass
class SerlConfig:
    preset: str = "cpu-demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    selfinstruct: SelfInstructConfig = field(default_factory=SelfInstructConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


# The valid values of every numeric key, as written in error messages: ">= 1", "> 0", "[0, 1]", "(0, 1]", alternatives
# joined by " or " ("-1 or >= 1"). Keys whose type allows None also accept null. Floats must be finite.
RANGES: dict[str, str] = {
    "model.lora.rank": ">= 0",  # 0: no LoRA
    "model.lora.alpha": ">= 1",
    "model.lora.dropout": "[0, 1)",
    "data.max_samples": ">= 1",
    "data.max_chars": ">= 1",
    "rollout.n_samples_per_prompt": ">= 1",
    "rollout.temperature": ">= 0",  # 0: greedy
    "rollout.top_p": "(0, 1]",
    "rollout.top_k": "-1 or >= 1",  # -1: off
    "rollout.max_new_tokens": ">= 1",
    "rollout.prompt_max_len": ">= 1",
    "rollout.max_batch_size": ">= 1",
    "rollout.vllm_gpu_memory_utilization": "(0, 1]",
    "selfinstruct.few_shot": ">= 1",
    "selfinstruct.max_generated_shots": ">= 0",
    "selfinstruct.generation_batch_size": ">= 1",
    "selfinstruct.temperature": ">= 0",
    "selfinstruct.top_p": "(0, 1]",
    "selfinstruct.presence_penalty": "[-2, 2]",  # vLLM's range
    "selfinstruct.max_new_tokens": ">= 1",
    "selfinstruct.prompt_max_len": ">= 1",
    "selfinstruct.rouge_threshold": "[0, 1]",
    "selfinstruct.contamination_threshold": "[0, 1]",
    "selfinstruct.min_words": ">= 0",
    "selfinstruct.max_words": ">= 1",
    "reward.difficulty_low": "[0, 1]",
    "reward.difficulty_high": "[0, 1]",
    "reward.timeout_s": "> 0",
    "reward.num_workers": ">= 0",  # 0 or 1: in the trainer's process
    "algo.gamma": "[0, 1]",
    "algo.kl_coef": ">= 0",
    "algo.eps_clip_low": "[0, 1)",
    "algo.eps_clip_high": ">= 0",
    "algo.reward_clip": ">= 0",  # 0: no clip
    "train.rollout_batch_size": ">= 1",
    "train.train_batch_size": ">= 1",
    "train.micro_train_batch_size": ">= 1",
    "train.max_epochs": ">= 1",
    "train.learning_rate": ">= 0",
    "train.lr_warmup_ratio": "[0, 1]",
    "train.min_lr_ratio": "[0, 1]",
    "train.adam_betas": "[0, 1)",  # each of the two
    "train.weight_decay": ">= 0",
    "train.max_grad_norm": ">= 0",  # 0: no clipping
    "train.instructions_per_iteration": ">= 1",
    "train.num_iterations": ">= 1",
    "train.max_steps": ">= 1",
    "train.max_attempts_per_step": ">= 1",
    "train.seed": ">= 0",
    "train.save_every": ">= 0",  # 0: at iteration ends only
    "train.keep_checkpoints": ">= 1",
    "train.canary_patience": ">= 0",  # 0: the canary is watched, never acted on
    "train.canary_margin": "[0, 1]",
    "eval.every": ">= 0",  # 0: at iteration ends only
    "eval.max_samples": ">= 1",
    "eval.max_new_tokens": ">= 1",
    "eval.n_samples": ">= 0",  # 0 or 1: no sampled eval
    "eval.sample_max_samples": ">= 1",
    "eval.sample_temperature": "> 0",
    "eval.sample_top_p": "(0, 1]",
    "eval.canary_every": ">= 1",
    "eval.canary_max_samples": ">= 1",
    "log.rollout_keep_every": ">= 1",
}
# (smaller, larger): the first may not exceed the second
ORDERED = [
    ("reward.difficulty_low", "reward.difficulty_high"),
    ("selfinstruct.min_words", "selfinstruct.max_words"),
    ("selfinstruct.max_generated_shots", "selfinstruct.few_shot"),
    ("train.micro_train_batch_size", "train.train_batch_size"),
]


def _in_range(value: float, valid: str) -> bool:
    for option in valid.split(" or "):
        if option.startswith(">"):
            op, bound = option.split()
            if value > float(bound) or (op == ">=" and value == float(bound)):
                return True
        elif option.startswith(("[", "(")):
            low, high = (float(bound) for bound in option[1:-1].split(","))
            above = value >= low if option[0] == "[" else value > low
            below = value <= high if option[-1] == "]" else value < high
            if above and below:
                return True
        elif value == float(option):
            return True
    return False


def _check_ranges(cfg: SerlConfig) -> None:
    for key, valid in RANGES.items():
        holder, name = _holder(cfg, key)
        value = getattr(holder, name)
        if value is None:
            continue  # its annotation allows None: the values were type-checked on the way in
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if not (math.isfinite(item) and _in_range(item, valid)):
                where = key if index is None else f"{key}[{index}]"
                nullable = type(None) in typing.get_args(_field_types(type(holder))[name])
                raise ConfigError(f"{where}={item!r} is out of range; valid: {valid}{' or null' if nullable else ''}")
    for smaller, larger in ORDERED:
        low, high = (getattr(*_holder(cfg, key)) for key in (smaller, larger))
        if low > high:
            raise ConfigError(f"{smaller}={low!r} must not exceed {larger}={high!r}")


def _holder(cfg: SerlConfig, key: str) -> tuple[Any, str]:
    """The dataclass that holds dotted KEY's field, and the field's name."""
    *path, name = key.split(".")
    node: Any = cfg
    for part in path:
        node = getattr(node, part)
    return node, name


# ---------------------------------------------------------------------------------------------------------------------
# Conversion between nested dicts and dataclasses, with key suggestions and type checks.


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check (and gently coerce) a YAML/CLI value against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _looks_numeric(value):  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key '{key}'{hint}")


def all_keys(cls: type = SerlConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config tree."""
    keys = []
    for name, annotation in _field_types(cls).items():
        if dataclasses.is_dataclass(annotation):
            keys.extend(all_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    types_by_name = _field_types(type(obj))
    for name, value in values.items():
        dotted = f"{prefix}{name}"
        if name not in types_by_name:
            raise _unknown_key(dotted, all_keys())
        annotation = types_by_name[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a mapping of sub-keys, got {value!r}")
            _apply(getattr(obj, name), value, f"{dotted}.")
        else:
            setattr(obj, name, _coerce(value, annotation, dotted))


def validate(cfg: SerlConfig) -> SerlConfig:
    """Checks across fields (each field's type and choices are checked as it is read; ranges in `RANGES`)."""
    _check_ranges(cfg)
    if cfg.algo.advantage_estimator in GROUPED_ESTIMATORS and cfg.rollout.n_samples_per_prompt < 2:
        raise ConfigError(f"algo.advantage_estimator={cfg.algo.advantage_estimator} needs n_samples_per_prompt >= 2")
    if cfg.train.train_batch_size % cfg.train.micro_train_batch_size:
        raise ConfigError("train.train_batch_size must be a multiple of train.micro_train_batch_size")
    if len(cfg.train.adam_betas) != 2:
        raise ConfigError(f"train.adam_betas={cfg.train.adam_betas!r}: expected two numbers, [beta1, beta2]")
    return cfg


def from_dict(values: dict[str, Any]) -> SerlConfig:
    cfg = SerlConfig()
    _apply(cfg, values)
    return validate(cfg)


def to_dict(cfg: SerlConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------------------------
# Presets and overrides.


def list_presets() -> list[str]:
    folder = resources.files("serl") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path_or_text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: top level must be a mapping")
    return data


def load_preset_dict(name_or_path: str) -> dict[str, Any]:
    """A preset by packaged name (e.g. 'cpu-demo') or a YAML file path; 'extends: NAME' chains presets."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = _read_yaml(path.read_text(), str(path))
    elif name_or_path in list_presets():
        text = (resources.files("serl") / "presets" / f"{name_or_path}.yaml").read_text()
        data = _read_yaml(text, f"preset {name_or_path}")
    else:
        raise ConfigError(
            f"unknown preset {name_or_path!r}; packaged presets: {', '.join(list_presets())}, or a YAML path"
        )
    name = data.pop("preset", path.stem if path.suffix in (".yaml", ".yml") else name_or_path)
    parent = data.pop("extends", None)
    if parent:
        merged = load_preset_dict(parent)
        _deep_update(merged, data)
        data = merged
    data["preset"] = name
    return data


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'algo.kl_coef=1e-4' -> ('algo.kl_coef', 0.0001); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in all_keys():
        raise _unknown_key(key, all_keys())
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(preset: str = "cpu-demo", overrides: list[str] | None = None) -> SerlConfig:
    data = load_preset_dict(preset)
    for text in overrides or []:
        key, value = parse_override(text)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(data)


def dump_yaml(cfg: SerlConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
