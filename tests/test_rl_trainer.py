"""PolicyTrainer on a small randomly initialised Llama (the real HF model class, just tiny): gradient accumulation,
clipping with shifted old log-probs, KL placement, reference handling, whitening scope, schedule and exact resume."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from serl.config import AlgoConfig, TrainConfig
from serl.rl import Experience, PolicyTrainer, build_sequences, lr_multiplier, masked_mean, response_logprobs

PAD = 2
# 2 prompts × 4 samples, ragged responses; the EOS (2) ends some of them
PROMPTS = [[5, 6, 7]] * 4 + [[8, 9]] * 4
RESPONSES = [[10, 11, 2], [12], [13, 14, 15, 16, 2], [17, 18], [19, 2], [20, 21, 22], [23], [24, 25, 26, 27, 28, 2]]
REWARDS = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run faster on one thread, and far faster when the machine's cores are contended."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


# The trainer's own keyword arguments; the others name fields of AlgoConfig or TrainConfig (a few by short names).
TRAINER_OPTIONS = ("pad_token_id", "total_optimizer_steps", "temperature", "reference_context", "defer_old_logprobs")
SHORT_NAMES = {"lr": "learning_rate", "warmup_ratio": "lr_warmup_ratio", "micro_batch_size": "micro_train_batch_size"}


def make_trainer(model, ref=None, **overrides) -> PolicyTrainer:
    algo = AlgoConfig(kl_coef=0.0)
    train = TrainConfig(learning_rate=1e-3, lr_warmup_ratio=0.0, micro_train_batch_size=2, train_batch_size=8, seed=0)
    options = {"pad_token_id": PAD, "total_optimizer_steps": 100}
    for key, value in overrides.items():
        key = SHORT_NAMES.get(key, key)
        if key in TRAINER_OPTIONS:
            options[key] = value
        else:
            assert hasattr(algo, key) or hasattr(train, key), key
            setattr(algo if hasattr(algo, key) else train, key, value)
    return PolicyTrainer(model, ref, algo=algo, train=train, **options)


def grads_at_step(trainer: PolicyTrainer) -> list[list[torch.Tensor]]:
    """Records every parameter's gradient just before each optimizer step."""
    seen: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(lambda *_: seen.append([p.grad.clone() for p in trainer.params]))
    return seen


@pytest.mark.parametrize("loss_agg", ["token_mean_global", "seq_mean_token_mean"])
def test_gradient_accumulation_equals_one_big_batch(loss_agg):
    model = tiny_llama()
    experience = make_trainer(model).make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    recorded = {}
    for micro in (1, 2, 8):
        trainer = make_trainer(copy.deepcopy(model), micro_batch_size=micro, loss_agg=loss_agg)
        recorded[micro] = grads_at_step(trainer)
        trainer.train(experience)
    for micro in (1, 2):
        assert len(recorded[micro]) == 1  # 8 sequences, one optimizer step
        for small, big in zip(recorded[micro][0], recorded[8][0], strict=True):
            assert torch.allclose(small, big, atol=1e-6, rtol=1e-4)


def test_token_mean_micro_is_the_reference_per_micro_batch_mean():
    # with ragged lengths the reference's per-micro-batch token mean is not the global token mean: the test above
    # would fail for it, which shows that test can tell the modes apart
    model = tiny_llama()
    experience = make_trainer(model).make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    grads = {}
    for micro in (1, 8):
        trainer = make_trainer(copy.deepcopy(model), micro_batch_size=micro, loss_agg="token_mean_micro")
        grads[micro] = grads_at_step(trainer)
        trainer.train(experience)
    differences = [(a - b).abs().max().item() for a, b in zip(grads[1][0], grads[8][0], strict=True)]
    assert max(differences) > 1e-4


@pytest.mark.parametrize(("shift", "clipped_sign"), [(0.5, -1), (-0.5, 1)])
def test_clip_fraction_with_shifted_old_logprobs(shift, clipped_sign):
    # old = logp + shift → ρ = e^{−shift}. With ρ = 0.61 tokens with A < 0 are clipped, with ρ = 1.65 those with A > 0.
    model = tiny_llama()
    trainer = make_trainer(model, micro_batch_size=2, train_batch_size=8)
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    experience.old_logprobs = (experience.old_logprobs + shift) * experience.action_mask
    metrics = trainer.train(experience)  # one optimizer step: every ratio is computed before the update
    mask = experience.action_mask
    expected = ((experience.advantages * clipped_sign > 0) & mask).sum() / mask.sum()
    assert metrics["clip_frac"] == pytest.approx(expected.item(), abs=1e-6)
    assert 0 < metrics["clip_frac"] < 1
    assert metrics["ratio"] == pytest.approx(torch.exp(torch.tensor(-shift)).item(), rel=1e-4)


def test_unshifted_first_step_has_ratio_one_and_no_clipping():
    model = tiny_llama()
    trainer = make_trainer(model, train_batch_size=8)
    metrics = trainer.train(trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4))
    assert metrics["clip_frac"] == 0 and metrics["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["optimizer_steps"] == 1 and metrics["grad_norm"] > 0
    assert metrics["response_length"] == pytest.approx(sum(map(len, RESPONSES)) / 8)
    assert metrics["reward"] == pytest.approx(0.5) and abs(metrics["adv_mean"]) < 1e-6
    assert metrics["adv_std"] == pytest.approx(1.0, abs=1e-4) and metrics["entropy"] > 0


class CountingContext:
    """A reference context that records how often the trainer enters it."""

    def __init__(self) -> None:
        self.entered = 0

    @contextlib.contextmanager
    def __call__(self):
        self.entered += 1
        yield


def test_kl_coef_zero_skips_the_reference_forward():
    context = CountingContext()
    trainer = make_trainer(tiny_llama(), reference_context=context, kl_coef=0.0)
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    assert context.entered == 0 and not experience.kl.any() and experience.ref_logprobs is None
    trainer = make_trainer(tiny_llama(), reference_context=context, kl_coef=0.1)
    trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    assert context.entered == 1


# δ = logp − logp_ref written out per estimator (serl-reference §4.2), independently of serl.rl.kl
KL_BY_HAND = {
    "k1": lambda delta: delta,
    "k2": lambda delta: delta**2 / 2,
    "k3": lambda delta: torch.exp(-delta) - 1 + delta,
}


@pytest.mark.parametrize("estimator", sorted(KL_BY_HAND))
def test_kl_in_reward_uses_the_reference_model(estimator: str):
    policy, reference = tiny_llama(0), tiny_llama(1)
    trainer = make_trainer(policy, reference, kl_coef=0.5, kl_estimator=estimator, advantage_estimator="grpo")
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    batch = build_sequences(PROMPTS, RESPONSES, pad_token_id=PAD)
    with torch.no_grad():
        ref_logprobs, _ = response_logprobs(reference, batch)
    expected_kl = KL_BY_HAND[estimator](experience.old_logprobs - ref_logprobs) * batch.action_mask
    assert torch.allclose(experience.kl, expected_kl, atol=1e-5)
    # grpo: A_t = r̃ − β·Σ_{t' ≥ t} kl_t' with r̃ = ±0.5/±1.5 (no whitening)
    tail_kl = expected_kl.flip(-1).cumsum(-1).flip(-1)
    shaped = torch.tensor([0.5, -1.5, 0.5, 0.5, -0.5, -0.5, 1.5, -0.5])[:, None]
    assert torch.allclose(experience.advantages, (shaped - 0.5 * tail_kl) * batch.action_mask, atol=1e-5)


@pytest.mark.parametrize("estimator", sorted(KL_BY_HAND))
def test_kl_as_loss_keeps_kl_out_of_the_reward_and_reports_the_sequence_mean(estimator: str):
    policy, reference = tiny_llama(0), tiny_llama(1)
    trainer = make_trainer(
        policy, reference, kl_coef=0.1, kl_estimator=estimator, use_kl_loss=True, advantage_estimator="grpo"
    )
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    shaped = torch.tensor([0.5, -1.5, 0.5, 0.5, -0.5, -0.5, 1.5, -0.5])[:, None]
    assert torch.allclose(experience.advantages, shaped * experience.action_mask, atol=1e-6)
    assert experience.ref_logprobs is not None
    delta = (experience.old_logprobs - experience.ref_logprobs) * experience.action_mask
    assert torch.allclose(experience.kl, KL_BY_HAND[estimator](delta) * experience.action_mask, atol=1e-6)
    assert experience.kl.abs().sum() > 0
    metrics = trainer.train(experience)  # one step: the current policy still equals the rollout policy
    expected = masked_mean(experience.kl, experience.action_mask, dim=-1).mean()
    assert metrics["kl_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert metrics["loss"] == pytest.approx(metrics["policy_loss"] + 0.1 * metrics["kl_loss"], rel=1e-5)


def test_lora_reference_is_the_base_model_with_the_adapter_disabled():
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    base_copy = copy.deepcopy(base)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # make the adapter change the outputs
    trainer = make_trainer(model, reference_context=model.disable_adapter, kl_coef=0.1)
    assert all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    batch = build_sequences(PROMPTS, RESPONSES, pad_token_id=PAD)
    with torch.no_grad():
        base_logprobs, _ = response_logprobs(base_copy, batch)
    assert torch.allclose(experience.old_logprobs - experience.kl, base_logprobs, atol=1e-5)
    assert experience.kl.abs().max() > 1e-3
    metrics = trainer.train(experience)
    assert metrics["grad_norm"] > 0


def test_whiten_scope_train_whitens_the_kept_groups_only():
    model = tiny_llama()
    trainer = make_trainer(model, whiten_scope="train", advantage_estimator="reinforce_baseline")
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    assert experience.whiten_pending
    kept = experience.select_groups([1], group_size=4)
    assert kept.advantages[2, 0].item() == pytest.approx(0.75)  # r − mean, not yet whitened
    metrics = trainer.train(kept)
    assert metrics["adv_mean"] == pytest.approx(0.0, abs=1e-6) and metrics["adv_std"] == pytest.approx(1.0, abs=1e-4)
    rollout = make_trainer(tiny_llama(), advantage_estimator="reinforce_baseline")
    kept_rollout = rollout.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4).select_groups([1])
    assert abs(masked_mean(kept_rollout.advantages, kept_rollout.action_mask).item()) > 0.05


def test_schedule_steps_per_optimizer_step_and_resets():
    trainer = make_trainer(tiny_llama(), lr=1e-3, total_optimizer_steps=8, warmup_ratio=0.25, train_batch_size=2)
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    metrics = trainer.train(experience)  # 4 optimizer steps of 2 sequences
    assert metrics["optimizer_steps"] == 4
    multiplier = {"warmup_steps": 2, "total_steps": 8, "min_lr_ratio": 0.1}
    assert metrics["lr"] == pytest.approx(1e-3 * lr_multiplier(3, **multiplier))  # the lr of the last step
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_multiplier(4, **multiplier))
    trainer.reset_schedule(10)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # a fresh warmup starts at 0, as the reference's
    trainer.train(experience)
    fresh = {"warmup_steps": 3, "total_steps": 10, "min_lr_ratio": 0.1}
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_multiplier(4, **fresh))


def test_state_dict_gives_an_exact_resume():
    model = tiny_llama()
    trainer = make_trainer(model, micro_batch_size=2, train_batch_size=4, total_optimizer_steps=10, warmup_ratio=0.2)
    first = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    trainer.train(first)
    saved_model = copy.deepcopy(model.state_dict())
    saved_state = copy.deepcopy(trainer.state_dict())
    second = trainer.make_experience(PROMPTS, RESPONSES, [0.0, 1, 0, 1, 1, 1, 0, 0], group_size=4)
    trainer.train(second)

    resumed_model = tiny_llama(seed=123)
    resumed_model.load_state_dict(saved_model)
    resumed = make_trainer(
        resumed_model, micro_batch_size=2, train_batch_size=4, total_optimizer_steps=10, warmup_ratio=0.2, seed=99
    )
    resumed.load_state_dict(saved_state)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(trainer_lr_at(saved_state))
    resumed.train(second)
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def trainer_lr_at(state: dict) -> float:
    return state["scheduler"]["_last_lr"][0]


def test_bad_inputs_give_clear_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="reference model or a reference_context"):
        make_trainer(model, kl_coef=0.1)
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        make_trainer(model, micro_batch_size=3, train_batch_size=8)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        make_trainer(model, loss_agg="sum")
    trainer = make_trainer(model)
    with pytest.raises(ValueError, match="finite"):
        trainer.make_experience(PROMPTS, RESPONSES, [float("nan"), *REWARDS[1:]], group_size=4)
    with pytest.raises(ValueError, match="groups of 3"):
        trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=3)
    with pytest.raises(ValueError, match="as many prompts"):
        trainer.make_experience(PROMPTS, RESPONSES[:-1], REWARDS, group_size=4)
    with_kl_loss = make_trainer(model, tiny_llama(1), kl_coef=0.1, use_kl_loss=True)
    with pytest.raises(ValueError, match="reference log-probs"):
        with_kl_loss.train(trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4))
    with pytest.raises(ValueError, match="empty experience"):
        trainer.train(trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4).select([]))


def test_nonfinite_gradients_skip_the_update():
    model = tiny_llama()
    trainer = make_trainer(model)
    experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    experience.advantages[0, 0] = float("inf")
    before = copy.deepcopy(model.state_dict())
    metrics = trainer.train(experience)
    assert metrics["nonfinite_steps"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_experiences_from_two_rollouts_train_together():
    trainer = make_trainer(tiny_llama(), advantage_estimator="rloo")
    first = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    second = trainer.make_experience(
        PROMPTS[:4], [[30, 31, 32, 33, 34, 35, 36, 2], *RESPONSES[1:4]], REWARDS[:4], group_size=4
    )
    batch = Experience.concat([first.select_groups([0]), second.select_groups([0])])
    assert batch.action_mask.shape == (8, 8)
    metrics = trainer.train(batch)
    assert metrics["optimizer_steps"] == 1 and torch.isfinite(torch.tensor(metrics["loss"]))


@pytest.mark.parametrize("train_batch_size", [8, 4])  # one optimizer step (detached forward) | two (scored first)
def test_deferred_old_logprobs_give_the_same_updates(train_batch_size):
    model = tiny_llama()
    runs = {}
    for defer in (False, True):
        trainer = make_trainer(copy.deepcopy(model), train_batch_size=train_batch_size, defer_old_logprobs=defer)
        grads = grads_at_step(trainer)
        experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
        assert (experience.old_logprobs is None) == defer
        runs[defer] = (trainer.train(experience), grads)
    (eager, eager_grads), (deferred, deferred_grads) = runs[False], runs[True]
    assert len(eager_grads) == len(deferred_grads) == 8 // train_batch_size
    for step_eager, step_deferred in zip(eager_grads, deferred_grads, strict=True):
        for a, b in zip(step_eager, step_deferred, strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert deferred["ratio"] == pytest.approx(eager["ratio"], abs=1e-5)
    assert deferred["loss"] == pytest.approx(eager["loss"], abs=1e-6)


def test_deferred_old_logprobs_refuse_a_stale_experience_and_need_kl_coef_zero():
    trainer = make_trainer(tiny_llama(), defer_old_logprobs=True)
    stale = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    trainer.train(trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4))
    with pytest.raises(ValueError, match="deferred old log-probs"):
        trainer.train(stale)
    fresh = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
    with pytest.raises(ValueError, match="different policies"):
        Experience.concat([stale, fresh])
    with_kl = make_trainer(tiny_llama(), ref=tiny_llama(1), kl_coef=0.1, defer_old_logprobs=True)
    assert with_kl.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4).old_logprobs is not None


def test_shared_prompt_pass_equals_the_padded_batch():
    from serl.rl.logprobs import plain_output_weight
    from serl.rl.prefix import shared_prompt_logprobs

    model = tiny_llama()
    order = [3, 5, 0, 7, 1, 4, 2, 6]  # rows of both prompts interleaved, ragged prompt and response lengths
    prompts, responses = [PROMPTS[i] for i in order], [RESPONSES[i] for i in order]
    scale = torch.linspace(0.5, 1.5, max(map(len, responses)))
    batch = build_sequences(prompts, responses, pad_token_id=PAD)
    padded, padded_entropy = response_logprobs(model, batch, temperature=0.7, with_entropy=True)
    (padded * scale).sum().backward()
    padded_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared, shared_entropy, mask = shared_prompt_logprobs(
        model, plain_output_weight(model), prompts, responses, pad_token_id=PAD, temperature=0.7, with_entropy=True
    )
    (shared * scale).sum().backward()
    assert torch.equal(mask, batch.action_mask)
    assert torch.allclose(shared, padded, atol=1e-5) and torch.allclose(shared_entropy, padded_entropy, atol=1e-5)
    for a, b in zip(padded_grads, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss_agg", ["token_mean_global", "token_mean_micro"])
def test_prompt_sharing_gives_the_same_update(loss_agg):
    model = tiny_llama()
    recorded = {}
    for share in (False, True):
        trainer = make_trainer(copy.deepcopy(model), micro_batch_size=4, loss_agg=loss_agg, share_prompts=share)
        recorded[share] = grads_at_step(trainer)
        trainer.train(trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4))
    for a, b in zip(recorded[False][0], recorded[True][0], strict=True):
        # token_mean_micro keeps the row shuffle (composition matters there), so it must match as well as the
        # whole-group micro-batches of token_mean_global do
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_the_output_projection_and_softmax_stay_fp32_under_autocast():
    from serl.rl.logprobs import chunked_token_logprobs

    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(6, 32).to(torch.bfloat16), torch.randn(64, 32), torch.arange(1, 7)
    expected, _ = chunked_token_logprobs(hidden.float(), weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast, _ = chunked_token_logprobs(hidden, weight, targets)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, expected)


def test_autocast_dtype_runs_the_update_in_bf16_with_nearly_the_same_gradient():
    model = tiny_llama()
    flat, logprobs = {}, {}
    for dtype in (None, "bfloat16"):
        trainer = make_trainer(copy.deepcopy(model), autocast_dtype=dtype)
        grads = grads_at_step(trainer)
        experience = trainer.make_experience(PROMPTS, RESPONSES, REWARDS, group_size=4)
        trainer.train(experience)
        flat[dtype] = torch.cat([g.flatten() for g in grads[0]])
        logprobs[dtype] = experience.old_logprobs
    assert all(g.dtype == torch.float32 for g in flat.values())  # fp32 master weights and gradients
    assert not torch.equal(flat[None], flat["bfloat16"])  # the decoder did run in bf16
    assert torch.nn.functional.cosine_similarity(flat[None], flat["bfloat16"], dim=0) > 0.99
    assert logprobs["bfloat16"].dtype == torch.float32 and not torch.equal(logprobs[None], logprobs["bfloat16"])
    assert torch.allclose(logprobs[None], logprobs["bfloat16"], atol=0.05)
    with pytest.raises(ValueError, match="autocast dtype"):
        make_trainer(tiny_llama(), autocast_dtype="int8")
