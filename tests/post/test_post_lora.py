"""LoRA adapters (merged == unmerged, only adapters train, save/load alone) and checkpoint averaging."""

import pytest
import torch

import herd
from herd.errors import HerdError
from herd.post.averaging import average_checkpoints
from herd.post.lora import LoRAConfig, apply_lora, load_adapters, merge_lora, save_adapters
from tests.tiny import make_model


def trained_lora_model(tok, config: LoRAConfig):
    model = apply_lora(make_model(tok), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(0, 0.05)  # as if trained: B starts at zero
    return model


def test_only_adapters_train_and_merging_keeps_outputs(tok):
    config = LoRAConfig(rank=4, targets=["wq", "wv", "w1"])
    base = make_model(tok)
    model = apply_lora(make_model(tok), config)
    tokens = torch.randint(0, tok.n_words, (2, 12))
    assert torch.allclose(model(tokens), base(tokens), atol=1e-6)  # B = 0: the base model at the start
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_a", "lora_b")) for name in trainable)
    assert len(trainable) == 2 * 3 * 2  # (A, B) x 3 targets x 2 layers
    model(tokens).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)

    model = trained_lora_model(tok, config)
    before = model(tokens).detach()
    merged = merge_lora(model)
    assert not any("lora" in name for name in merged.state_dict())
    assert torch.allclose(merged(tokens), before, atol=1e-5)


def test_adapters_save_and_load_alone(tok, tmp_path):
    config = LoRAConfig(rank=2, alpha=4.0, targets=["wk", "wo"])
    model = trained_lora_model(tok, config)
    tokens = torch.randint(0, tok.n_words, (1, 10))
    save_adapters(model, config, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "model.safetensors"]
    restored = load_adapters(make_model(tok), tmp_path / "adapter")
    assert torch.allclose(restored(tokens), model(tokens), atol=1e-6)


def test_bad_targets_are_a_user_error(tok):
    with pytest.raises(HerdError, match="name no linear"):
        apply_lora(make_model(tok), LoRAConfig(rank=2, targets=["attention"]))


def test_average_of_checkpoints(tok, tmp_path):
    a, b = make_model(tok, seed=1), make_model(tok, seed=2)
    paths = [herd.save(a, tok, tmp_path / "a"), herd.save(b, tok, tmp_path / "b")]
    out = average_checkpoints(paths, tmp_path / "avg", weights=[3, 1])
    averaged, _ = herd.load(out)
    for name, value in averaged.state_dict().items():
        assert torch.allclose(value, 0.75 * a.state_dict()[name] + 0.25 * b.state_dict()[name], atol=1e-6), name


def test_lora_sft_saves_adapters_and_the_merged_model(tmp_path, tiny_model_dir):
    from tests.post.test_post_sft import sft_config

    from herd.post.sft import sft

    config = sft_config(tmp_path, tiny_model_dir, steps=5, val_data=None)
    config.lora = LoRAConfig(rank=4, targets=["wq", "wv"])
    result = sft(config)
    merged, tok = herd.load(result.model_dir)
    again = merge_lora(load_adapters(herd.load(tiny_model_dir)[0], result.run_dir / "adapter"))
    base, _ = herd.load(tiny_model_dir)
    tokens = torch.randint(0, tok.n_words, (1, 10))
    assert torch.allclose(merged(tokens), again(tokens), atol=1e-5)
    assert not torch.allclose(merged(tokens), base(tokens), atol=1e-4)  # the adapters learned something
    assert torch.equal(merged.tok_embeddings.weight, base.tok_embeddings.weight)  # untargeted weights untouched


def test_lora_under_bf16_holds_the_frozen_base_in_bf16(tmp_path, tiny_model_dir):
    """With LoRA and bf16 autocast the frozen base weights load in bf16 (half the memory) and the adapters in fp32;
    a training step runs and only the adapters get gradients."""
    from tests.post.test_post_sft import sft_config

    from herd.post.stage import load_start

    config = sft_config(tmp_path, tiny_model_dir, dtype="bfloat16", lora=LoRAConfig(rank=4, targets=["wq", "w2"]))
    model, tok, _ = load_start(config)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all((d == torch.float32) == name.endswith(("lora_a", "lora_b")) for name, d in dtypes.items())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(0, tok.n_words, (2, 8))).float().sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
