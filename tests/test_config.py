"""Config: presets resolve, overrides parse, unknown keys suggest the closest valid one, paper values match §7.3-7.4."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serl.config import ConfigError, dump_yaml, list_presets, load_config


def test_packaged_presets_all_resolve() -> None:
    assert {"cpu-demo", "paper-llama32-3b", "paper-qwen25-7b"} <= set(list_presets())
    for name in list_presets():
        assert load_config(name).preset == name


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
        ("algo.kl_coef=-0.001", "algo.kl_coef: must be >= 0"),  # a negative coefficient would reward drifting away
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
