"""Config: presets resolve, overrides parse, unknown keys suggest the closest valid one, paper values match §7.3-7.4,
and every numeric value is checked against its valid range before anything is loaded."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing

import pytest

from presets import LOOP_PRESET
from serl.config import ConfigError, all_keys, dump_yaml, list_presets, load_config


def test_packaged_presets_all_resolve() -> None:
    assert {"cpu-demo", "cpu-learn", "paper-llama32-3b", "paper-qwen25-7b"} <= set(list_presets())
    for name in list_presets():
        assert load_config(name).preset == name


def test_the_demo_is_cpu_learn_cut_short() -> None:
    """`make demo` shows the measured configuration, only fewer steps and evaluations."""
    demo, learn = (dataclasses.asdict(load_config(name)) for name in ("cpu-demo", "cpu-learn"))
    changed = {
        f"{section}.{key}"
        for section in learn
        if isinstance(learn[section], dict)
        for key in learn[section]
        if demo[section][key] != learn[section][key]
    }
    assert changed == {"train.instructions_per_iteration", "train.save_every", "eval.every"}
    assert demo["train"]["instructions_per_iteration"] < learn["train"]["instructions_per_iteration"]


def test_paper_llama_preset_carries_reference_values() -> None:
    cfg = load_config("paper-llama32-3b")
    # serl-reference §7.3 (SeRL flags) and §7.4 (script values)
    assert cfg.model.policy == "meta-llama/Llama-3.2-3B-Instruct"
    assert cfg.rollout.n_samples_per_prompt == 16
    assert cfg.train.rollout_batch_size == 16
    assert cfg.train.train_batch_size == 16
    assert cfg.train.micro_train_batch_size == 1
    assert cfg.train.learning_rate == pytest.approx(5e-7)
    assert cfg.train.lr_warmup_ratio == pytest.approx(0.03)
    assert cfg.train.min_lr_ratio == pytest.approx(0.1)
    assert cfg.train.adam_betas == [0.9, 0.95]
    assert cfg.train.max_grad_norm == 1.0
    assert cfg.train.instructions_per_iteration == 2000
    assert cfg.train.seed == 42
    assert cfg.train.carryover == "expire"
    assert cfg.algo.advantage_estimator == "reinforce"
    assert cfg.algo.kl_coef == pytest.approx(1e-3)
    assert cfg.algo.kl_estimator == "k1" and not cfg.algo.use_kl_loss
    assert cfg.algo.eps_clip_low == cfg.algo.eps_clip_high == 0.2
    assert cfg.algo.reward_clip == 10.0 and cfg.algo.gamma == 1.0
    assert cfg.reward.difficulty_low == 0.2 and cfg.reward.difficulty_high == 0.8
    assert cfg.selfinstruct.few_shot == 8 and cfg.selfinstruct.max_generated_shots == 2
    assert cfg.selfinstruct.generation_batch_size == 4
    assert (cfg.selfinstruct.temperature, cfg.selfinstruct.top_p, cfg.selfinstruct.presence_penalty) == (0.8, 0.95, 2.0)
    assert cfg.selfinstruct.rouge_threshold == 0.7
    assert (cfg.selfinstruct.min_words, cfg.selfinstruct.max_words) == (4, 150)
    assert cfg.rollout.max_new_tokens == 1024 and cfg.rollout.prompt_max_len == 1024
    assert (cfg.rollout.temperature, cfg.rollout.top_p) == (1.0, 1.0)
    assert cfg.rollout.prompt_format == "raw"
    assert cfg.data.input_key == "problem" and cfg.data.label_key == "answer"
    # Faithful-replication flags are on in the paper preset.
    assert cfg.selfinstruct.faithful_capitalize and cfg.reward.score_prompt_and_response
    assert cfg.selfinstruct.novelty_scope == "reference"
    assert cfg.reward.no_majority == "first"
    assert load_config("cpu-demo").reward.no_majority == "zero"


def test_qwen_preset_extends_llama_with_its_own_model() -> None:
    cfg = load_config("paper-qwen25-7b")
    assert cfg.preset == "paper-qwen25-7b"
    assert cfg.model.policy == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.algo.kl_coef == pytest.approx(1e-3)


def test_dotted_overrides_parse_yaml_values() -> None:
    cfg = load_config("cpu-demo", ["algo.kl_coef=1e-4", "train.adam_betas=[0.9, 0.99]", "model.reference=null"])
    assert cfg.algo.kl_coef == pytest.approx(1e-4)
    assert cfg.train.adam_betas == [0.9, 0.99]
    assert cfg.model.reference is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.kl_cof=1", "did you mean 'algo.kl_coef'"),
        ("rollout.n_sample_per_prompt=4", "did you mean 'rollout.n_samples_per_prompt'"),
        ("algo.kl_coef=abc", "algo.kl_coef: expected a number"),
        ("algo.advantage_estimator=ppo", "is not one of"),
        ("train.max_epochs=1.5", "expected an integer"),
        ("nonsense", "must look like section.key=value"),
        (
            "algo.kl_coef=-0.001",
            "algo.kl_coef=-0.001 is out of range; valid: >= 0",
        ),  # a negative coefficient would reward drifting away
        ("rollout.dtype=bf16", "rollout.dtype: 'bf16' is not one of float32, bfloat16, float16"),
        ("algo.loss_agg=sum", "algo.loss_agg: 'sum' is not one of"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("cpu-demo", [override])


def test_unknown_preset_lists_the_packaged_ones() -> None:
    with pytest.raises(ConfigError, match="cpu-demo"):
        load_config("no-such-preset")


def test_yaml_file_preset_and_round_trip(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: cpu-demo\nalgo:\n  advantage_estimator: grpo\n")
    cfg = load_config(str(path))
    assert cfg.preset == "mine" and cfg.algo.advantage_estimator == "grpo"
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(str(again)).algo == cfg.algo


def test_config_show_cli_prints_resolved_values() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serl", "config", "show", "paper-llama32-3b", "--set", "algo.kl_coef=1e-4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "policy: meta-llama/Llama-3.2-3B-Instruct" in out
    assert "kl_coef: 0.0001" in out
    bad = subprocess.run(
        [sys.executable, "-m", "serl", "config", "show", "cpu-demo", "--set", "algo.kl_cof=1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "did you mean 'algo.kl_coef'" in bad.stderr


def test_each_choice_field_checks_against_its_owners_one_list() -> None:
    """The config field's Literal is the very tuple the owning code checks against: one list per set of choices."""
    import dataclasses
    import typing

    from serl.config import AlgoConfig, RewardConfig, RolloutConfig, SelfInstructConfig, TrainConfig
    from serl.reward.choices import EXTRACTORS, GT_MATCHES, MAJORITY_METHODS, NO_MAJORITY
    from serl.rl.choices import ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS, OPTIMIZERS, WHITEN_SCOPES
    from serl.rollout.choices import ENGINES, PROMPT_FORMATS
    from serl.selfinstruct.choices import NOVELTY_SCOPES

    owners = {
        (AlgoConfig, "advantage_estimator"): ESTIMATORS,
        (AlgoConfig, "kl_estimator"): KL_ESTIMATORS,
        (AlgoConfig, "loss_agg"): LOSS_AGGREGATIONS,
        (AlgoConfig, "whiten_scope"): WHITEN_SCOPES,
        (TrainConfig, "optimizer"): OPTIMIZERS,
        (RewardConfig, "extractor"): EXTRACTORS,
        (RewardConfig, "majority_method"): MAJORITY_METHODS,
        (RewardConfig, "no_majority"): NO_MAJORITY,
        (RewardConfig, "gt_match"): GT_MATCHES,
        (RolloutConfig, "engine"): ENGINES,
        (RolloutConfig, "prompt_format"): PROMPT_FORMATS,
        (SelfInstructConfig, "novelty_scope"): NOVELTY_SCOPES,
    }
    for (section, name), choices in owners.items():
        annotation = typing.get_type_hints(section)[name]
        assert typing.get_args(annotation) == choices, (section.__name__, name)
        assert any(f.name == name for f in dataclasses.fields(section))


@pytest.mark.parametrize("estimator", ["reinforce_baseline", "rloo", "grpo", "dr_grpo"])
def test_grouped_estimators_need_two_samples_per_prompt(estimator: str) -> None:
    with pytest.raises(ConfigError, match="needs n_samples_per_prompt >= 2"):
        load_config("cpu-demo", [f"algo.advantage_estimator={estimator}", "rollout.n_samples_per_prompt=1"])
    assert load_config("cpu-demo", ["rollout.n_samples_per_prompt=1"]).algo.advantage_estimator == "reinforce"


def test_reading_a_config_imports_no_torch() -> None:
    code = "import sys, serl.config; serl.config.load_config('paper-llama32-3b'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# Every numeric key of every section: a value out of range, the valid range as the error gives it, and an accepted
# value at (or next to) the edge. The coverage check below keeps new numeric keys from going unchecked.
RANGE_CASES = [
    ("model.lora.rank", -1, ">= 0", 0),
    ("model.lora.alpha", 0, ">= 1", 1),
    ("model.lora.dropout", 1.0, "[0, 1)", 0.0),
    ("data.max_samples", 0, ">= 1 or null", 1),
    ("data.max_chars", 0, ">= 1", 1),
    ("rollout.n_samples_per_prompt", 0, ">= 1", 1),
    ("rollout.temperature", -0.5, ">= 0", 0.0),
    ("rollout.top_p", 0.0, "(0, 1]", 1.0),
    ("rollout.top_k", 0, "-1 or >= 1", -1),
    ("rollout.max_new_tokens", 0, ">= 1", 1),
    ("rollout.prompt_max_len", 0, ">= 1", 1),
    ("rollout.max_batch_size", 0, ">= 1 or null", 1),
    ("rollout.vllm_gpu_memory_utilization", 1.5, "(0, 1]", 1.0),
    ("selfinstruct.few_shot", 0, ">= 1", 2),  # 2: the default max_generated_shots may not exceed it
    ("selfinstruct.max_generated_shots", -1, ">= 0", 0),
    ("selfinstruct.generation_batch_size", 0, ">= 1", 1),
    ("selfinstruct.temperature", -1.0, ">= 0", 0.0),
    ("selfinstruct.top_p", 1.5, "(0, 1]", 0.01),
    ("selfinstruct.presence_penalty", 2.5, "[-2, 2]", -2.0),
    ("selfinstruct.max_new_tokens", 0, ">= 1", 1),
    ("selfinstruct.prompt_max_len", 0, ">= 1", 1),
    ("selfinstruct.rouge_threshold", 1.5, "[0, 1]", 1.0),
    ("selfinstruct.contamination_threshold", -0.1, "[0, 1]", 0.0),
    ("selfinstruct.min_words", -1, ">= 0", 0),
    ("selfinstruct.max_words", 0, ">= 1", 4),  # 4: not below the default min_words
    ("reward.difficulty_low", -0.1, "[0, 1]", 0.0),
    ("reward.difficulty_high", 1.5, "[0, 1]", 1.0),
    ("reward.timeout_s", -1.0, "> 0", 0.01),
    ("reward.num_workers", -1, ">= 0 or null", 0),
    ("algo.gamma", 1.5, "[0, 1]", 0.0),
    ("algo.kl_coef", -0.001, ">= 0", 0.0),
    ("algo.eps_clip_low", 1.0, "[0, 1)", 0.0),
    ("algo.eps_clip_high", -0.2, ">= 0", 0.0),
    ("algo.reward_clip", -1.0, ">= 0", 0.0),
    ("train.rollout_batch_size", 0, ">= 1", 1),
    ("train.train_batch_size", 0, ">= 1", 4),  # 4: the preset's micro-batch
    ("train.micro_train_batch_size", 0, ">= 1", 1),
    ("train.max_epochs", 0, ">= 1", 1),
    ("train.learning_rate", -1e-6, ">= 0", 0.0),
    ("train.lr_warmup_ratio", 1.5, "[0, 1]", 1.0),
    ("train.min_lr_ratio", -0.1, "[0, 1]", 0.0),
    ("train.adam_betas", [0.9, 1.0], "[0, 1)", [0.0, 0.0]),
    ("train.weight_decay", -0.1, ">= 0", 0.0),
    ("train.max_grad_norm", -1.0, ">= 0", 0.0),
    ("train.instructions_per_iteration", 0, ">= 1", 1),
    ("train.num_iterations", 0, ">= 1", 1),
    ("train.max_steps", 0, ">= 1 or null", 1),
    ("train.max_attempts_per_step", 0, ">= 1", 1),
    ("train.seed", -1, ">= 0", 0),
    ("train.save_every", -1, ">= 0", 0),
    ("train.keep_checkpoints", 0, ">= 1", 1),
    ("train.canary_patience", -1, ">= 0", 0),
    ("train.canary_margin", 1.5, "[0, 1]", 0.0),
    ("eval.every", -1, ">= 0", 0),
    ("eval.max_samples", 0, ">= 1 or null", 1),
    ("eval.max_new_tokens", 0, ">= 1", 1),
    ("eval.n_samples", -1, ">= 0", 0),
    ("eval.sample_max_samples", 0, ">= 1 or null", 1),
    ("eval.sample_temperature", 0.0, "> 0", 0.01),
    ("eval.sample_top_p", 0.0, "(0, 1]", 1.0),
    ("eval.canary_every", 0, ">= 1", 1),
    ("eval.canary_max_samples", 0, ">= 1 or null", 1),
    ("log.rollout_keep_every", 0, ">= 1", 1),
]


def _numeric_keys() -> set[str]:
    numeric = {int, float, int | None, float | None, list[float]}
    config = load_config("cpu-demo")
    keys = set()
    for key in all_keys():
        *path, name = key.split(".")
        holder = config
        for part in path:
            holder = getattr(holder, part)
        if typing.get_type_hints(type(holder))[name] in numeric:
            keys.add(key)
    return keys


def test_every_numeric_key_has_a_range_case() -> None:
    assert {case[0] for case in RANGE_CASES} == _numeric_keys()


@pytest.mark.parametrize(("key", "bad", "valid", "good"), RANGE_CASES, ids=[case[0] for case in RANGE_CASES])
def test_out_of_range_values_are_refused_with_the_key_and_the_valid_range(key, bad, valid, good) -> None:
    where, shown = (f"{key}[1]", bad[1]) if isinstance(bad, list) else (key, bad)
    with pytest.raises(ConfigError) as err:
        load_config(LOOP_PRESET, [f"{key}={bad}"])
    assert str(err.value) == f"{where}={shown!r} is out of range; valid: {valid}"
    load_config(LOOP_PRESET, [f"{key}={good}"])
    if isinstance(good, float):  # no float may be NaN or infinite: a timeout of .inf is a hang
        for value in (".nan", ".inf"):
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=(nan|inf) is out of range; valid: "):
                load_config("cpu-demo", [f"{key}={value}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reward.difficulty_low=0.9"], "reward.difficulty_low=0.9 must not exceed reward.difficulty_high=0.8"),
        (["selfinstruct.min_words=200"], "selfinstruct.min_words=200 must not exceed selfinstruct.max_words=150"),
        (["selfinstruct.few_shot=1"], "selfinstruct.max_generated_shots=2 must not exceed selfinstruct.few_shot=1"),
        (
            ["train.train_batch_size=2", "train.micro_train_batch_size=4"],
            "train.micro_train_batch_size=4 must not exceed train.train_batch_size=2",
        ),
        (["train.adam_betas=[0.9]"], "train.adam_betas=[0.9]: expected two numbers, [beta1, beta2]"),
    ],
)
def test_bounds_that_come_in_pairs_must_be_ordered(overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("cpu-demo", overrides)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.train_batch_size=0", "train.train_batch_size=0 is out of range; valid: >= 1"),  # was ZeroDivisionError
        ("reward.timeout_s=-1", "reward.timeout_s=-1.0 is out of range; valid: > 0"),  # was a run that never ended
        ("train.num_iterations=0", "train.num_iterations=0 is out of range; valid: >= 1"),  # was exit 0, no word
    ],
)
def test_serl_train_refuses_a_bad_value_before_loading_anything(override, message) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serl", "train", "--set", override], capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")
