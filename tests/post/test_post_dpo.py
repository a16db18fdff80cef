"""DPO beyond its loss: with LoRA the reference is the base model under the adapters (no second copy), and DPO on
pairs a reward model ranked raises that reward model's score of the policy's sampled replies on held-out prompts."""

import io
import random
from types import SimpleNamespace

import pytest
import torch

import herd
import herd.checkpoint
from herd.generation import generate_tokens
from herd.post.batches import encode_pairs, pair_batch
from herd.post.data import PreferencePair
from herd.post.dpo import DPOConfig, _reference_logps, dpo
from herd.post.logps import token_logps
from herd.post.lora import LoRAConfig, WithoutAdapters, apply_lora
from herd.post.reward_model import RewardConfig, load_reward_model, train_reward_model
from herd.post.sft import SFTConfig, sft
from herd.post.stage import reference_model
from tests.post.test_post_preferences import COLORS, preference_records, run_config
from tests.tiny import make_model, write_jsonl


def test_lora_reference_is_the_base_model_sharing_its_weights(tok, tiny_model_dir):
    config = DPOConfig(data="unused", model=str(tiny_model_dir), lora=LoRAConfig(rank=4, targets=["wq", "wv", "w2"]))
    policy = apply_lora(make_model(tok), config.lora)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(0, 0.1)  # trained adapters
    reference = reference_model(config, policy, torch.device("cpu"))
    assert isinstance(reference, WithoutAdapters) and reference.model is policy  # no weights of its own
    pairs = [PreferencePair([{"role": "user", "content": f"what is {c}"}], f"good {c}", f"bad {c}") for c in COLORS[:3]]
    tokens, targets, _ = pair_batch(encode_pairs(tok, pairs, 64), [0, 1, 2], tok.eos_id)
    # both without gradients: training attention takes another kernel (herd.model.blocked_attention)
    with torch.no_grad():
        base = token_logps(make_model(tok), tokens, targets)
        assert torch.equal(token_logps(reference, tokens, targets), base)
        assert not torch.allclose(token_logps(policy, tokens, targets), base, atol=1e-3)  # adapters back on


@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_lora_dpo_loads_the_model_once(tmp_path, tiny_model_dir, monkeypatch, reference):
    loads = []
    load = herd.checkpoint.load
    monkeypatch.setattr(herd.checkpoint, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    config = run_config(DPOConfig, tmp_path, tiny_model_dir, reference=reference, steps=10,
                        lora=LoRAConfig(rank=8, targets=["wq", "wk", "wv", "wo", "w1", "w2", "w3"]))
    config.optim.lr = 1e-2
    result = dpo(config)
    assert len(loads) == 1  # the policy; the reference is its base under the adapters
    assert result.figures["val_margin"] > 0.1 and result.figures["val_accuracy"] >= 0.9


def test_reference_logps_cut_off_mid_write_are_computed_again(tmp_path, monkeypatch):
    """A run killed while caching the reference log-probs leaves no half file: its resume computes them again
    (a truncated reference_logps.pt failed torch.load on every resume)."""
    real_save, logps = torch.save, torch.arange(64, dtype=torch.float32)

    def save_half_then_crash(obj, f):  # torch writes a path from C++, past Python's open: cut its bytes here
        buffer = io.BytesIO()
        real_save(obj, buffer)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        f.write(half) if hasattr(f, "write") else open(f, "wb").write(half)
        raise OSError("simulated crash")

    monkeypatch.setitem(_reference_logps.__globals__, "sequence_logps", lambda *a: logps.clone())  # no model needed
    config = SimpleNamespace(run_dir=tmp_path / "run", batch_size=2)
    monkeypatch.setattr(torch, "save", save_half_then_crash)
    with pytest.raises(OSError, match="simulated crash"):
        _reference_logps(config, None, None, 0, "cpu")
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(_reference_logps(config, None, None, 0, "cpu"), logps)
    assert [p.name for p in config.run_dir.iterdir()] == ["reference_logps.pt"]
    assert torch.equal(torch.load(config.run_dir / "reference_logps.pt", weights_only=True), logps)


def sampled_reward(model, rm, tok, prompts, samples: int) -> float:
    """Mean reward-model score of `samples` sampled replies (temperature 1) to each prompt."""
    ids = [tok.encode_dialog([{"role": "user", "content": p}]) for p in prompts for _ in range(samples)]
    replies = generate_tokens(model, ids, max_new_tokens=6, temperature=1.0, seed=0, stop_ids=tok.stop_ids)
    return sum(rm.score([i + r.tokens + [tok.eot_id] for i, r in zip(ids, replies)], pad_id=tok.eos_id)) / len(ids)


def test_dpo_on_reward_ranked_pairs_raises_the_reward(tmp_path, tiny_model_dir):
    """Llama 3's loop in small: an SFT policy that answers "good X" or "bad X" alike; a reward model trained to
    prefer "good"; it ranks two candidate replies per prompt into DPO pairs; DPO from the SFT policy raises the
    reward model's mean score of the policy's sampled replies to held-out prompts."""
    rm_result = train_reward_model(run_config(RewardConfig, tmp_path / "rm", tiny_model_dir))
    rm, tok = load_reward_model(rm_result.model_dir)
    candidates = [preference_records(1, offset=i)[0] for i in range(28)]
    dialogs = [{"messages": [{"role": "user", "content": c["prompt"]},
                             {"role": "assistant", "content": c["chosen" if i % 2 else "rejected"]}]}
               for i, c in enumerate(candidates)]
    sft_config = SFTConfig(out_dir=str(tmp_path / "sft"), model=str(tiny_model_dir), steps=40, batch_size=4, seq_len=64,
                           data=str(write_jsonl(tmp_path / "sft.jsonl", dialogs)), device="cpu", progress=False,
                           checkpoint_interval=0)
    sft_config.optim.lr = 1e-2
    policy = sft(sft_config).model_dir
    rng, ranked = random.Random(0), []
    for c in candidates:  # the reward model, not the data, decides which reply is chosen
        a, b = rng.sample([c["chosen"], c["rejected"]], 2)
        dialogs = [[{"role": "user", "content": c["prompt"]}, {"role": "assistant", "content": r}] for r in (a, b)]
        score_a, score_b = rm.score([tok.encode_dialog_with_mask(d)[0] for d in dialogs], pad_id=tok.eos_id)
        ranked.append({"prompt": c["prompt"], "chosen": a if score_a > score_b else b,
                       "rejected": b if score_a > score_b else a})
    data = str(write_jsonl(tmp_path / "ranked.jsonl", ranked))
    result = dpo(run_config(DPOConfig, tmp_path / "dpo", policy, data=data, val_data=None, steps=20))
    held_out = [f"what is {c}" for c in ("orange", "grey", "pink", "brown")]  # colors no prompt or reply names
    before = sampled_reward(herd.load(policy)[0], rm, tok, held_out, 4)
    after = sampled_reward(herd.load(result.model_dir)[0], rm, tok, held_out, 4)
    assert after > before + 1.0, (before, after)
