"""SFT: the loss reaches assistant tokens only, a tiny run learns its answers, and a run resumes exactly."""

import json

import pytest
import torch

import herd
from herd.generation import generate_tokens
from herd.post.batches import pack_chats
from herd.post.sft import SFTConfig, sft
from herd.train.losses import next_token_loss
from herd.train.packing import IGNORE_INDEX
from tests.test_run_dir import crash_mid_write
from tests.tiny import QA, chat_records, make_model, write_jsonl


def sft_config(tmp_path, model_dir, **changes) -> SFTConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_records())
    fields = {"out_dir": str(tmp_path / "run"), "model": str(model_dir), "data": str(data), "val_data": str(data), "steps": 200,
                  "batch_size": 2, "seq_len": 64, "device": "cpu", "progress": False, "checkpoint_interval": 0}
    fields.update(changes)
    config = SFTConfig(**fields)
    config.optim.lr = 1e-2
    return config


def test_loss_gradient_reaches_assistant_tokens_only(tok):
    """d loss / d logits is nonzero exactly where the next token is one the chat format trains (assistant content
    and its end of turn; test_post_data checks those targets against encode_dialog_with_mask): prompts, system
    text and headers contribute nothing, whatever their logits."""
    dialogs = [r["messages"] for r in chat_records()]
    rows = pack_chats(tok, dialogs, seq_len=96)
    assert len(rows) < len(dialogs)  # several dialogs share a row
    batch = rows.batch(range(len(rows)))
    model = make_model(tok)
    captured = {}

    def forward(tokens, doc_ids):
        captured["logits"] = logits = model(tokens, doc_ids=doc_ids)
        logits.retain_grad()
        return logits

    out = next_token_loss(forward, batch)
    out.total.backward()
    touched = captured["logits"].grad.abs().sum(-1) > 0
    trained = batch[1] != IGNORE_INDEX
    assert torch.equal(touched, trained)
    assert out.count == sum(sum(tok.encode_dialog_with_mask(d)[1]) for d in dialogs)


def test_tiny_sft_learns_the_answers(tmp_path, tiny_model_dir):
    result = sft(sft_config(tmp_path, tiny_model_dir))
    assert result.figures["dialogs"] == len(QA) and result.figures["truncated_dialogs"] == 0
    records = [r for r in herd.train.metrics.read_records(result.run_dir / "metrics.jsonl") if "loss" in r]
    assert records[-1]["loss"] < 0.05 * records[0]["loss"]
    assert result.figures["val_loss"] < 0.05
    model, tok = herd.load(result.model_dir)
    prompts = [tok.encode_dialog(r["messages"][:2]) for r in chat_records()]
    outputs = generate_tokens(model, prompts, max_new_tokens=8, stop_ids=[tok.eot_id])
    answers = [tok.decode(o.tokens) for o in outputs]
    assert answers == [a for _, a in QA]


def test_sft_resumes_to_the_same_weights(tmp_path, tiny_model_dir):
    constant = {"steps": 6, "checkpoint_interval": 3, "val_data": None}
    first = sft_config(tmp_path / "b", tiny_model_dir, **{**constant, "steps": 3})
    first.optim.min_lr_ratio = 1.0
    sft(first)
    again = sft_config(tmp_path / "b", tiny_model_dir, **constant)
    again.optim.min_lr_ratio = 1.0
    resumed = sft(again)
    reference = sft_config(tmp_path / "c", tiny_model_dir, **constant)
    reference.optim.min_lr_ratio = 1.0
    straight = sft(reference)
    assert resumed.steps == 6 and straight.steps == 6
    assert json.loads((resumed.run_dir / "manifest.json").read_text())["resumed_from_step"] == 3
    a, _ = herd.load(resumed.model_dir)
    b, _ = herd.load(straight.model_dir)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert sft(again).run_dir == resumed.run_dir  # a finished run with the same config is skipped


def test_crash_while_writing_the_manifest_leaves_a_run_that_finishes(tmp_path, tiny_model_dir, monkeypatch):
    """A crash half-way through the manifest must not leave a file the rerun chokes on or trusts: it finishes."""
    config = sft_config(tmp_path, tiny_model_dir, steps=2, val_data=None)
    crash_mid_write(monkeypatch, config.run_dir / "manifest.json")
    with pytest.raises(OSError, match="simulated crash"):
        sft(config)
    monkeypatch.undo()
    result = sft(config)
    assert result.steps == 2 and json.loads((result.run_dir / "manifest.json").read_text())["complete"]
