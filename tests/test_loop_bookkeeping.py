"""The loop's bookkeeping in-process and in seconds: batch filling over rollout attempts, carry-over (keep and
expire), the attempt cap, iteration ends and resume. The loop gets a stand-in engine (canned responses) and a
stand-in scorer (rewards scripted per rollout attempt), and real everything else: the dataset source, a tiny randomly
initialised Llama trained by the real PolicyTrainer, the embedded tokenizer, checkpoints and run files. The
real-process tests (test_train_loop, test_train_resume) run the same loop end to end with the embedded model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from presets import LOOP_PRESET
from serl.config import load_config
from serl.data import Problem
from serl.io import read_jsonl
from serl.reward.scorer import Scores
from serl.rollout.base import Completion
from serl.rundir import RunDir
from serl.trainer.build import TrainingParts, make_policy_trainer, optimizer_steps_per_iteration
from serl.trainer.checkpoint import find_resumable
from serl.trainer.logger import RunLogger
from serl.trainer.loop import SerlTrainer
from serl.trainer.sources import DatasetSource, StalledError

N = 4  # responses per problem
NEED = 2  # train.rollout_batch_size
PASS, FAIL = [1.0, 0.0, 0.0, 0.0], [0.0] * N  # mean 0.25 is inside [0.2, 0.8]; mean 0 is not


@pytest.fixture(scope="module")
def tokenizer():
    from serl.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CannedEngine:
    """A rollout engine that answers every prompt with the same n short responses; it records each call."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[str], int | None]] = []
        self.synced = 0

    def generate(self, prompts, params, n=1):
        self.calls.append((list(prompts), params.seed))
        out = []
        for p, prompt in enumerate(prompts):
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for k in range(n):
                text = f"The answer is {k}."
                response_ids = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], 2]
                out.append(Completion(p, k, prompt_ids, response_ids, text, "eos"))
        return out

    def sleep(self) -> None:
        pass

    def update_weights(self, source) -> None:
        self.synced += 1


class ScriptedScorer:
    """Scores each rollout attempt from a script: per attempt, per problem, pass (mean 0.25) or fail (0)."""

    def __init__(self, script: list[list[bool]]):
        self.script = list(script)

    def score(self, prompts, labels, groups):
        verdicts = self.script.pop(0) if self.script else [False] * len(groups)
        return Scores(rewards=[PASS if ok else FAIL for ok in verdicts], gt_rewards=[None] * len(groups))


class RecordingSource(DatasetSource):
    """The real dataset source, keeping what the loop told it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.fates: list[tuple[int, str, str]] = []
        self.iterations: list[int] = []

    def observe(self, step, fates):
        self.fates.extend((step, f.fate, f.problem.uid) for f in fates)

    def start_iteration(self, iteration):
        self.iterations.append(iteration)


def tiny_policy(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def make_trainer(run_dir: Path, tokenizer, script: list[list[bool]], overrides: list[str] = ()) -> SerlTrainer:
    cfg = load_config(
        LOOP_PRESET,
        [
            "train.mode=maj",
            f"rollout.n_samples_per_prompt={N}",
            "rollout.prompt_format=raw",
            "algo.kl_coef=0",
            f"train.rollout_batch_size={NEED}",
            "train.train_batch_size=8",
            "train.micro_train_batch_size=4",
            "train.instructions_per_iteration=4",  # 2 steps per iteration
            "train.num_iterations=2",
            "train.max_steps=3",
            "train.save_every=1",
            "train.max_attempts_per_step=3",
            "train.lr_warmup_ratio=0",
            "eval.at_start=false",
            "log.tensorboard=false",
            *overrides,
        ],
    )
    problems = [Problem(id=f"q{i}", prompt=f"What is {i} + {i}?", label=None) for i in range(12)]
    model = tiny_policy(len(tokenizer))
    engine = CannedEngine(tokenizer)
    policy = make_policy_trainer(
        cfg, model, None, pad_token_id=tokenizer.pad_token_id, total_optimizer_steps=optimizer_steps_per_iteration(cfg)
    )
    trained: list[list[str]] = []
    train = policy.train

    def recording_train(experience):
        trained.append([tokenizer.decode(ids) for ids in experience.prompt_ids[::N]])
        return train(experience)

    policy.train = recording_train
    parts = TrainingParts(
        model=model,
        tokenizer=tokenizer,
        engine=engine,
        sync_weights=lambda: engine.update_weights(model),
        source=RecordingSource(problems, cfg.train.seed),
        scorer=ScriptedScorer(script),
        policy=policy,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(run_dir, "quiet", total_steps=0, tensorboard=False, wandb_cfg=None)
    trainer = SerlTrainer(cfg, run_dir, logger, parts)
    trainer.trained = trained  # type: ignore[attr-defined]
    return trainer


def rollouts(run_dir: Path, step: int) -> list[dict]:
    return read_jsonl(RunDir(run_dir).rollout_file(step))[0]


def test_a_step_rolls_out_until_its_batch_is_full_and_trains_on_exactly_that(tmp_path: Path, tokenizer) -> None:
    # attempt 1: one of two passes; attempt 2: the other one passes
    trainer = make_trainer(tmp_path, tokenizer, [[True, False], [False, True]])
    metrics = trainer.train_step()
    assert metrics["attempts"] == 2
    assert (metrics["filter/groups_scored"], metrics["filter/groups_kept"]) == (4, 2)
    assert metrics["filter/groups_rejected_difficulty"] == 2 and metrics["filter/kept_ratio"] == 0.5
    records = rollouts(tmp_path, 1)
    assert [(r["attempt"], r["reward_mean"]) for r in records] == [(1, 0.25), (1, 0.0), (2, 0.0), (2, 0.25)]
    passed = [records[0]["problem"], records[3]["problem"]]
    assert trainer.trained == [passed]  # the two passing groups, in the order they passed
    seeds = [seed for _, seed in trainer.engine.calls]
    assert len(set(seeds)) == 2  # each attempt samples with its own seed
    fates = trainer.source.fates
    assert [f for _, f, _ in fates] == [
        "kept",
        "rejected:difficulty",
        "rejected:difficulty",
        "kept",
        "trained",
        "trained",
    ]
    assert trainer.engine.synced == 1 and trainer.step == 1 and not trainer.carried


def test_keep_trains_an_extra_passing_group_at_the_next_step(tmp_path: Path, tokenizer) -> None:
    # step 1: attempt 1 passes one, attempt 2 passes both (one too many); step 2: one more passes at once
    trainer = make_trainer(tmp_path, tokenizer, [[True, False], [True, True], [True, False]], ["train.carryover=keep"])
    trainer.train_step()
    (extra,) = trainer.carried
    assert extra.passed_at_step == 1
    metrics = trainer.train_step()
    assert metrics["attempts"] == 1 and metrics["filter/groups_scored"] == 2
    new = rollouts(tmp_path, 2)[0]["problem"]
    assert trainer.trained[1] == [extra.problem.text, new]
    assert not any(fate == "expired" for _, fate, _ in trainer.source.fates)


def test_expire_drops_the_extra_group_with_a_log_line_and_a_fate(tmp_path: Path, tokenizer, caplog) -> None:
    trainer = make_trainer(tmp_path, tokenizer, [[True, False], [True, True], [True, True]])
    trainer.train_step()
    (extra,) = trainer.carried
    with caplog.at_level(logging.INFO, logger="serl"):
        metrics = trainer.train_step()
    assert "step 2: 1 passing group(s) from step 1 expired" in caplog.messages
    assert (2, "expired", extra.problem.uid) in trainer.source.fates
    assert metrics["attempts"] == 1 and extra.problem.text not in trainer.trained[1]


def test_the_attempt_cap_stops_with_a_saved_state_that_resumes(tmp_path: Path, tokenizer) -> None:
    # three attempts (the cap) pass one group in all: the step stops, its one passing group saved with the state
    trainer = make_trainer(tmp_path, tokenizer, [[False, False], [True, False], [False, False]])
    with pytest.raises(StalledError, match=r"step 1: only 1/2 problems passed the difficulty filter .* after 3"):
        trainer.train_step()
    checkpoints = RunDir(tmp_path).checkpoints
    assert (checkpoints / "latest").read_text().strip() == "step_000000"
    saved = trainer.carried[0].problem

    # resumed with a kinder scorer: the saved group counts (same step, so it never expires) and one more is needed
    resumed = make_trainer(tmp_path, tokenizer, [[True, False]])
    resumed.resume(find_resumable(resumed.run.checkpoints, resumed.STATE_ENTRIES))
    assert [g.problem for g in resumed.carried] == [saved] and resumed.carried[0].passed_at_step == 1
    metrics = resumed.train_step()
    assert metrics["attempts"] == 1 and resumed.trained[0][0] == saved.text


def test_resume_restores_the_bookkeeping_and_cuts_files_back(tmp_path: Path, tokenizer) -> None:
    script = [[True, True], [True, False], [True, True], [True, True]]  # step 2 ends with one group carried over
    straight = make_trainer(tmp_path / "straight", tokenizer, script, ["train.carryover=keep"])
    straight.fit()
    assert straight.step == 3 and straight.iteration == 2 and straight.source.iterations == [2]
    assert (RunDir(tmp_path / "straight").hf_export(1) / "config.json").exists()  # iteration 1 ended at step 2

    run_dir = tmp_path / "killed"
    first = make_trainer(run_dir, tokenizer, script[:3], ["train.carryover=keep", "train.max_steps=2"])
    first.fit()  # steps 1-2 and the checkpoint at the iteration end; then "killed" after more output
    with open(RunDir(run_dir).metrics, "a") as handle:
        handle.write('{"step": 3, "torn": tr')
    resumed = make_trainer(run_dir, tokenizer, script[3:], ["train.carryover=keep"])
    resumed.resume(find_resumable(resumed.run.checkpoints, resumed.STATE_ENTRIES))
    assert (resumed.step, resumed.iteration, resumed.step_in_iteration) == (2, 1, 2)
    assert resumed.source.state_dict() == first.source.state_dict()
    assert [g.problem for g in resumed.carried] == [g.problem for g in first.carried] and resumed.carried
    assert torch.equal(resumed.carried[0].experience.advantages, first.carried[0].experience.advantages)
    assert len(read_jsonl(RunDir(run_dir).metrics)[0]) == 2 and read_jsonl(RunDir(run_dir).metrics)[1] == 0
    assert resumed.policy.optimizer_steps == first.policy.optimizer_steps
    resumed.fit()
    assert resumed.iteration == 2 and resumed.source.iterations == [2]
    ours, theirs, initial = (
        resumed.model.state_dict(),
        straight.model.state_dict(),
        tiny_policy(len(tokenizer)).state_dict(),
    )
    assert any(not torch.equal(theirs[k], initial[k]) for k in theirs), "no update: the comparison would be vacuous"
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "the resumed run trained differently"
    assert read_jsonl(RunDir(run_dir).metrics)[0][-1]["train/lr"] == read_jsonl(straight.run.metrics)[0][-1]["train/lr"]


@pytest.mark.parametrize("reset", [True, False])
def test_an_iteration_starts_with_fresh_adam_moments_when_asked(tmp_path: Path, tokenizer, reset: bool) -> None:
    overrides = [f"train.reset_optimizer_each_iteration={str(reset).lower()}", "train.save_every=0"]
    trainer = make_trainer(tmp_path, tokenizer, [[True, True]] * 3, overrides)
    moments_at_step: dict[int, int] = {}
    train = trainer.policy.train

    def recording_train(experience):
        moments_at_step[trainer.step + 1] = len(trainer.policy.optimizer.state)
        return train(experience)

    trainer.policy.train = recording_train
    trainer.fit()
    assert moments_at_step[2] > 0  # within iteration 1 the moments carry on
    assert (moments_at_step[3] == 0) is reset  # step 3 opens iteration 2
