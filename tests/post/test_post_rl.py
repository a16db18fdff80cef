"""PPO and GRPO: GAE and the clipped losses against hand-computed values (GRPO's loss against TRL's), the KL
penalty, rollout resume state, and tiny runs that raise the reward (GRPO) and fit the value model (PPO)."""

import json
import math
from collections import defaultdict
from types import SimpleNamespace

import random

import pytest
import torch

import herd
from herd.corpus.math import add_steps, addition_question
from herd.errors import HerdError
from herd.eval.task import Sample
from herd.post.grpo import GRPOConfig, group_advantages, grpo, grpo_token_losses
from herd.post.ppo import PPOConfig, clipped_policy_loss, clipped_value_loss, gae, ppo, whiten
from herd.post.rewards import arithmetic_questions, arithmetic_reward, encode_prompts, make_scorer
from herd.post.rollout import RLConfig, RolloutStream, kl_penalty, sample_rollout
from herd.eval.tasks.synthetic import SynthAddition
from herd.train.config import FaultConfig
from tests.tiny import make_model, write_jsonl

PROMPTS = ["what is the sky", "what is grass", "what is snow", "what is coal"]


def starts_with_a_vowel(prompt: str, completion: str) -> float:
    """The tiny task's verifiable reward: 1 when the completion's first letter is a vowel (about 3% of a random
    tiny model's samples, most of which are special tokens or stray bytes)."""
    text = completion.lstrip()
    return float(text[:1] in tuple("aeiou"))


def text_length(prompt: str, completion: str) -> float:
    """A dense reward for fitting the value model: the completion's length in characters / 10."""
    return len(completion) / 10


# --- the pieces against hand-computed values ---------------------------------------------------------------
def test_gae_matches_a_hand_computation():
    # One row: a prompt position (masked out), three completion tokens, one padding position.
    mask = torch.tensor([[False, True, True, True, False]])
    rewards = torch.tensor([[9.0, 0.1, -0.2, 1.0, 9.0]])
    values = torch.tensor([[5.0, 0.5, 0.4, 0.3, 5.0]])
    gamma, lam = 0.9, 0.8
    d3 = 1.0 - 0.3  # the last token: V after it is 0
    d2 = -0.2 + gamma * 0.3 - 0.4
    d1 = 0.1 + gamma * 0.4 - 0.5
    a3 = d3
    a2 = d2 + gamma * lam * a3
    a1 = d1 + gamma * lam * a2
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(advantages, torch.tensor([[0.0, a1, a2, a3, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[0.0, a1 + 0.5, a2 + 0.4, a3 + 0.3, 0.0]]))
    # gamma = lam = 1: the advantage is the reward-to-go minus the value
    advantages, _ = gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(advantages[0, 1:4], torch.tensor([0.9 - 0.5, 0.8 - 0.4, 1.0 - 0.3]))


def test_whiten_over_the_mask():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    x = torch.tensor([[1.0, 2.0, 50.0], [3.0, 7.0, 7.0]])
    out = whiten(x, mask)
    assert torch.allclose(out[mask], (torch.tensor([1.0, 2.0, 3.0]) - 2.0) / 1.0, atol=1e-6)
    assert (out[~mask] == 0).all()


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(4)
    logps = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))  # ratios 1.5, 1.5, 0.5, 0.5
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = clipped_policy_loss(logps, old, advantages, 0.2)
    # A > 0: min(1.5, 1.2) = 1.2 -> -1.2; A < 0: max(1.5, 1.2) = 1.5 -> 1.5 (no clip on the pessimistic side)
    # A > 0, r = 0.5: min(0.5, 0.8) = 0.5 -> -0.5; A < 0, r = 0.5: -max(-0.5, -0.8) = 0.8
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8]))
    # gradient flows only where the ratio is not clipped
    logps.requires_grad_(True)
    clipped_policy_loss(logps, old, advantages, 0.2).sum().backward()
    assert torch.allclose(logps.grad, torch.tensor([0.0, 1.5, -0.5, 0.0]))


def test_clipped_value_loss_by_hand():
    old = torch.tensor([0.0, 0.0, 1.0])
    values = torch.tensor([1.0, 0.1, 0.5])
    returns = torch.tensor([2.0, 1.0, 0.0])
    loss = clipped_value_loss(values, old, returns, 0.2)
    # (V - R)^2 vs (clipped V - R)^2: clipped V = 0.2, 0.1, 0.8
    assert torch.allclose(loss, 0.5 * torch.tensor([max(1.0, 1.8**2), max(0.81, 0.81), max(0.25, 0.64)]))


def test_group_advantages_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    out = group_advantages(scores, 4)
    std = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    assert torch.allclose(out[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert (out[4:] == 0).all()  # a group with one reward has no signal
    assert torch.allclose(group_advantages(scores, 4, "none")[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_kl_estimators():
    logps, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert torch.allclose(kl_penalty(logps, ref, "k1"), torch.tensor([0.5, -1.0]))
    r = torch.exp(ref - logps)
    assert torch.allclose(kl_penalty(logps, ref, "k3"), r - torch.log(r) - 1)
    assert (kl_penalty(logps, ref, "k3") >= 0).all()


def test_grpo_loss_equals_trl():
    """Herd's GRPO per-token loss averaged over the tokens equals TRL GRPOTrainer._compute_loss with
    loss_type="bnpo" (token-level mean), beta and the k3 KL, on the same log-probs."""
    trl = pytest.importorskip("trl")
    torch.manual_seed(0)
    n, length = 4, 5
    logps, old, ref = (torch.randn(n, length) * 0.3 - 2 for _ in range(3))
    mask = torch.ones(n, length)
    mask[1, 3:] = 0
    mask[3, 1:] = 0
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    losses, _ = grpo_token_losses(logps, old, ref, advantages, 0.2, 0.04, "k3")
    ours = (losses * mask).sum() / mask.sum()

    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=0.04,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type="bnpo", epsilon_low=0.2,
        epsilon_high=0.2, use_vllm=False, model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(reduce=lambda x, reduction: x, gather=lambda x: x),
    )
    inputs = {"prompt_ids": torch.zeros(n, 1, dtype=torch.long), "prompt_mask": torch.ones(n, 1),
              "completion_ids": torch.zeros(n, length, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref}
    theirs = trl.GRPOTrainer._compute_loss(fake, None, inputs)
    assert abs(float(ours) - float(theirs)) < 1e-6


def test_arithmetic_reward():
    assert arithmetic_reward("What is 12 + 30?", " 42, I think") == 1.0
    assert arithmetic_reward("what is 12 + 30?", "It is 42 or 41") == 0.0  # the last number counts, as in the evals
    assert arithmetic_reward("What is 2 + 2?", "four") == 0.0
    questions = arithmetic_questions(20, seed=1, max_operand=9)
    assert len(questions) == 20 and questions == arithmetic_questions(20, seed=1, max_operand=9)
    a, b = map(int, questions[0][0]["content"].removeprefix("What is ").removesuffix("?").split(" + "))
    assert arithmetic_reward(questions[0][0]["content"], f"{a + b}") == 1.0
    with pytest.raises(HerdError, match="What is A \\+ B"):
        arithmetic_reward("hello", "3")


def test_arithmetic_reward_credits_the_speedrun_models_answers_as_its_eval_does():
    """The speedrun's model answers "What is A + B?" with worked columns, then "#### N" (herd.corpus.math): the
    first integer of such a reply is A, so reading it gave 0 to every correct reply. The reward now reads the final
    answer with the scorer of the speedrun's synth_addition eval, and agrees with it on every reply."""
    rng = random.Random(0)
    task = SynthAddition(chat=True)
    for _ in range(20):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problem = addition_question(a, b)  # the SFT reply the speedrun trains on
        right = [problem.solution, f"{add_steps(a, b)} The answer is {a + b}.", f"\\boxed{{{a + b}}}", f"{a + b}"]
        wrong = [problem.solution.replace(f"#### {a + b}", f"#### {a + b + 1}"), f"{a} + {b} = {a + b - 10}",
                 f"The answer is {a + b + 10}. So {a + b}", "I am not sure."]
        for reply, reward in [(r, 1.0) for r in right] + [(r, 0.0) for r in wrong]:
            assert arithmetic_reward(problem.question, reply) == reward, reply
            sample = Sample(problem.question, problem.solution, gold=str(a + b))
            assert task.score(sample, reply)[1]["exact_match"] == reward, reply


# --- rollouts --------------------------------------------------------------------------------------------
def rl_config(cls, tmp_path, model_dir, **changes):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    fields = {"out_dir": str(tmp_path / "run"), "model": str(model_dir), "prompts": str(prompts),
              "reward": "tests.post.test_post_rl:starts_with_a_vowel", "seq_len": 64, "max_new_tokens": 2,
              "device": "cpu", "progress": False, "checkpoint_interval": 0}
    config = cls(**{**fields, **changes})
    config.optim.lr = 3e-3
    return config


def test_kl_is_zero_when_the_policy_is_the_reference(tmp_path, tok):
    model = make_model(tok)
    config = rl_config(RLConfig, tmp_path, "unused", batch_size=4, max_new_tokens=4)
    prompts = encode_prompts(tok, [[{"role": "user", "content": p}] for p in PROMPTS])
    scorer = make_scorer(config.reward, "", tok, torch.device("cpu"), 4)
    rollout = sample_rollout(model, model, prompts, scorer, config, tok, seed=0)
    assert rollout.mask.any(1).all() and rollout.scores.shape == (4,)
    assert (rollout.logps[rollout.mask] < 0).all() and (rollout.logps[~rollout.mask] == 0).all()
    for estimator in ("k1", "k3"):
        assert kl_penalty(rollout.logps, rollout.ref_logps, estimator).abs().max() == 0
    other = sample_rollout(model, make_model(tok, seed=3), prompts, scorer, config, tok, seed=0)
    assert kl_penalty(other.logps, other.ref_logps, "k3")[other.mask].mean() > 0
    assert torch.equal(other.tokens, rollout.tokens)  # same seed, same policy: the same samples


def test_rollout_stream_resumes_at_the_same_minibatch():
    config = RLConfig(prompts="p", reward="x:y", prompts_per_rollout=2, group_size=3, batch_size=2, epochs=2)
    calls = []

    def collect(indices, index):
        calls.append(index)
        rows = torch.tensor([i for i in indices for _ in range(3)]) + 100 * index
        return rows, rows * 2

    stream = RolloutStream(collect, 5, config)
    for _ in range(4):
        next(stream)
    state = stream.state_dict()
    ahead = [next(stream)[0].tolist() for _ in range(6)]
    resumed = RolloutStream(collect, 5, config)
    resumed.load_state_dict(state)
    assert [next(resumed)[0].tolist() for _ in range(6)] == ahead
    assert calls == [0, 1, 1]  # 6 sequences x 2 epochs / 2 = 6 minibatches per rollout; resumed, rollout 0 is not redrawn


def test_config_errors():
    with pytest.raises(HerdError, match="reward_model"):
        PPOConfig(prompts="p")
    with pytest.raises(HerdError, match="prompts is empty"):
        PPOConfig(reward="mod:fn")
    with pytest.raises(HerdError, match="group_size must be at least 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(HerdError, match="batch_size x grad_accum"):
        GRPOConfig(group_size=3, prompts_per_rollout=3, batch_size=2)
    with pytest.raises(HerdError, match="spike_factor"):
        GRPOConfig(faults=FaultConfig(spike_factor=2.0))


# --- outcomes --------------------------------------------------------------------------------------------
def step_means(run_dir, key, per):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] / r[per] for r in records if key in r]


def test_grpo_raises_the_reward(tmp_path, tiny_model_dir):
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": "what is a rose"}, {"prompt": "what is the sun"}])
    config = rl_config(GRPOConfig, tmp_path, tiny_model_dir, steps=20, group_size=8, prompts_per_rollout=4,
                       batch_size=32, kl_coef=0.0, val_prompts=str(val))
    result = grpo(config)
    rewards = step_means(config.run_dir, "reward_sum", "sequences")
    before, after = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    print(f"GRPO mean reward per rollout: {[round(r, 3) for r in rewards]}")
    assert before < 0.15 and after > 0.6
    assert result.figures["val_reward"] == 1.0  # greedy replies to unseen prompts start with a vowel
    model, tok = herd.load(result.model_dir)  # the exported policy samples vowels first too
    samples = herd.generate(model, tok, PROMPTS, max_new_tokens=2, temperature=1.0, chat=True)
    assert sum(starts_with_a_vowel("", s) for s in samples) >= 2
    assert grpo(config) == result  # a finished run is skipped


def test_ppo_fits_the_value_model(tmp_path, tiny_model_dir):
    """Each rollout is one minibatch seen for 4 epochs: the value loss on it falls from epoch to epoch."""
    config = rl_config(PPOConfig, tmp_path, tiny_model_dir, steps=8, prompts_per_rollout=8, batch_size=8, epochs=4,
                       value_coef=1.0, reward="tests.post.test_post_rl:text_length")
    result = ppo(config)
    value_losses = step_means(config.run_dir, "value_loss_sum", "completion_tokens")
    print(f"PPO value loss per step: {[round(v, 4) for v in value_losses]}")
    per_rollout = [value_losses[i : i + 4] for i in range(0, 8, 4)]
    assert all(losses[3] < losses[2] < losses[1] < losses[0] for losses in per_rollout)
    assert (config.run_dir / "value" / "config.json").is_file() and (result.model_dir / "config.json").is_file()


def test_grpo_resumes_mid_rollout_to_the_same_weights(tmp_path, tiny_model_dir):
    """2 optimizer steps per rollout; the first run stops after step 3, inside the second rollout."""
    def config(run, steps):
        c = rl_config(GRPOConfig, tmp_path, tiny_model_dir, out_dir=str(tmp_path / run), steps=steps, group_size=4,
                      prompts_per_rollout=1, batch_size=2, checkpoint_interval=3)
        c.optim.min_lr_ratio = 1.0
        return c

    grpo(config("b", 3))
    resumed = grpo(config("b", 4))
    straight = grpo(config("c", 4))
    assert json.loads((resumed.run_dir / "manifest.json").read_text())["resumed_from_step"] == 3
    a, _ = herd.load(resumed.model_dir)
    b, _ = herd.load(straight.model_dir)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_grpo_on_generated_arithmetic_questions_runs(tmp_path, tiny_model_dir):
    config = GRPOConfig(out_dir=str(tmp_path / "run"), model=str(tiny_model_dir), questions=8, steps=1, group_size=4,
                        prompts_per_rollout=2, batch_size=8, max_new_tokens=3, seq_len=64, device="cpu",
                        progress=False, checkpoint_interval=0)
    result = grpo(config)
    assert result.steps == 1 and result.figures["prompts"] == 8
    record = json.loads((config.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["sequences"] == 8 and 0 <= record["reward_sum"] <= 8
