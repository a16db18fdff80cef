"""herd.checkpoint.load_shard: each tensor-parallel rank's slice equals the same slice of the whole load, exactly, for
Meta (MP 1/2/4/8 shards by herd's writer, Llama 2's embedding split by hand), HF and herd checkpoints at tp 1/2/4;
a rank reads only the Meta files holding its slice; errors name the rank and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import herd.checkpoint as ckpt
from herd.checkpoint import meta_format
from herd.errors import HerdError
from herd.model import build_model
from herd.model.tensor_parallel import shard_dim
from tests.checkpoint.test_checkpoint import assert_one_line, fairscale_split, random_model
from tests.tiny import model_config


@pytest.fixture(scope="module")
def tok(byte_bpe_path):
    from herd.tokenizer import Tokenizer

    return Tokenizer(byte_bpe_path)


def tp_config(**changes):
    """8 heads over 4 kv heads, 520-id vocabulary, FFN 192: splits 1, 2 and 4 ways."""
    return model_config(n_heads=8, n_kv_heads=4, **changes)


@pytest.fixture(scope="module")
def model():
    return random_model(tp_config())


def save(model, tok, directory, fmt, mp=1):
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "meta":
        meta_format.write(model, tok, directory, mp=mp)
    else:
        ckpt.save(model, tok, directory, format=fmt)
    return directory


def assert_slices_match(directory, world):
    """Every rank's slice equals `shard` of the whole load, and the slices joined equal the whole tensor."""
    whole, _ = ckpt.load(directory)
    full = {name: p.detach() for name, p in whole.named_parameters()}
    slices = [ckpt.load_shard(directory, rank, world)[2] for rank in range(world)]
    for local in slices:
        assert local.keys() == full.keys()
    for name, tensor in full.items():
        dim = shard_dim(name)
        parts = [local[name] for local in slices]
        for part in parts:
            assert part.dtype == tensor.dtype, name
        if dim is None:
            assert all(torch.equal(part, tensor) for part in parts), name
        else:
            assert parts[0].shape[dim] == tensor.shape[dim] // world, name
            assert torch.equal(torch.cat(parts, dim), tensor), name


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("fmt", ["hf", "herd", "meta"])
def test_slices_equal_the_whole_load(tmp_path, tok, model, fmt, world):
    assert_slices_match(save(model, tok, tmp_path, fmt), world)


def test_safetensors_read_whole_only_the_replicated_norms(tmp_path, tok, model, monkeypatch):
    """Split tensors come through get_slice (their slice alone is copied); get_tensor reads only the norms."""
    from contextlib import contextmanager

    from herd.checkpoint import safetensors_io

    whole_reads: list[str] = []
    open_weights = safetensors_io.open_weights

    class Recording:
        def __init__(self, handle):
            self.handle = handle

        def get_tensor(self, name):
            whole_reads.append(name)
            return self.handle.get_tensor(name)

        def __getattr__(self, attr):
            return getattr(self.handle, attr)

    @contextmanager
    def recording(file):
        with open_weights(file) as handle:
            yield Recording(handle)

    monkeypatch.setattr(safetensors_io, "open_weights", recording)
    ckpt.load_shard(save(model, tok, tmp_path, "hf"), 1, 2)
    assert whole_reads and all(name.endswith("norm.weight") for name in whole_reads)


@pytest.mark.parametrize("fmt", ["hf", "herd"])
def test_safetensors_split_over_files(tmp_path, tok, model, monkeypatch, fmt):
    monkeypatch.setattr("herd.checkpoint.safetensors_io.MAX_SHARD_BYTES", 100_000)
    directory = save(model, tok, tmp_path, fmt)
    assert len(list(directory.glob("model-*.safetensors"))) > 2
    assert_slices_match(directory, 2)


@pytest.mark.parametrize(("mp", "world"), [(2, 1), (2, 2), (2, 4), (4, 2), (8, 2), (8, 4)])
def test_meta_model_parallel_shards_resplit(tmp_path, tok, model, mp, world):
    """MP 8 over 4 kv heads repeats each kv head on two consecutive files (Meta's resharding)."""
    directory = save(model, tok, tmp_path, "meta", mp=mp)
    assert len(meta_format.weight_files(directory)) == mp
    assert_slices_match(directory, world)


def test_meta_llama2_embedding_split_by_width(tmp_path, tok, model):
    """Llama 2's ParallelEmbedding split the embedding's width; ranks still get vocabulary rows."""
    directory = save(model, tok, tmp_path, "meta")
    (directory / "consolidated.00.pth").unlink()
    for i, shard in enumerate(fairscale_split(model.state_dict(), 2, embedding_dim=1)):
        torch.save(shard, directory / f"consolidated.{i:02d}.pth")
    assert_slices_match(directory, 2)


@pytest.mark.parametrize(
    ("mp", "world", "reads"), [(2, 2, [[0], [1]]), (4, 2, [[0, 1], [2, 3]]), (2, 4, [[0], [0], [1], [1]])]
)
def test_meta_rank_reads_only_its_files(tmp_path, tok, model, monkeypatch, mp, world, reads):
    directory = save(model, tok, tmp_path, "meta", mp=mp)
    opened: list[str] = []
    read_shard = meta_format.read_shard
    monkeypatch.setattr(meta_format, "read_shard", lambda file: opened.append(file.name) or read_shard(file))
    for rank in range(world):
        opened.clear()
        ckpt.load_shard(directory, rank, world)
        assert sorted(set(opened)) == [f"consolidated.{k:02d}.pth" for k in reads[rank]]


def mapped_ranges(file: Path) -> list[tuple[int, int]]:
    """The address ranges where this process maps `file` (from /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(file)):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_meta_same_split_keeps_the_files_memory_mapped(tmp_path, tok, model):
    """With N == MP a rank's tensors are its file's, memory-mapped, not copies."""
    directory = save(model, tok, tmp_path, "meta", mp=2)
    _, _, local = ckpt.load_shard(directory, 1, 2)
    ranges = mapped_ranges(directory / "consolidated.01.pth")
    assert ranges and not mapped_ranges(directory / "consolidated.00.pth")
    for name, tensor in local.items():
        assert any(lo <= tensor.data_ptr() < hi for lo, hi in ranges), name


def test_tied_head_is_left_to_the_embedding(tmp_path, tok):
    model = random_model(tp_config(tie_word_embeddings=True))
    for fmt in ("hf", "meta"):
        config, _, local = ckpt.load_shard(save(model, tok, tmp_path / fmt, fmt), 1, 2)
        assert config.tie_word_embeddings and local["output.weight"] is local["tok_embeddings.weight"]
        assert torch.equal(local["tok_embeddings.weight"], model.tok_embeddings.weight.detach()[260:])


@pytest.mark.parametrize("tied", [False, True])
def test_sliced_state_builds_the_local_model(tmp_path, tok, tied):
    """A rank's state is exactly the parameters of a model that tensor_parallel.parallelize cut (strict load)."""
    from herd.model.tensor_parallel import TensorParallel, parallelize

    model = random_model(tp_config(tie_word_embeddings=tied))
    config, _, local = ckpt.load_shard(save(model, tok, tmp_path, "hf"), 1, 2)
    shell = parallelize(build_model(config, device="meta"), TensorParallel(rank=1, world=2))
    shell.load_state_dict(local, strict=True, assign=True)
    assert shell.tok_embeddings.weight.device.type == "cpu"
    assert torch.equal(shell.layers[1].attention.wo.weight, model.layers[1].attention.wo.weight.detach()[:, 32:])


def test_error_names_the_rank_and_the_file(tmp_path, tok, model):
    directory = save(model, tok, tmp_path, "meta", mp=2)
    (directory / "consolidated.01.pth").write_bytes(b"not a checkpoint")
    ckpt.load_shard(directory, 0, 2)  # rank 0 never opens the damaged file
    with pytest.raises(HerdError) as error:
        ckpt.load_shard(directory, 1, 2)
    assert_one_line(error, "rank 1 of 2", "consolidated.01.pth")


def test_error_tp_not_dividing_kv_heads(tmp_path, tok, model):
    with pytest.raises(HerdError) as error:
        ckpt.load_shard(save(model, tok, tmp_path, "herd"), 0, 8)
    assert_one_line(error, "n_kv_heads", "--tp 8")


def test_error_shards_disagree(tmp_path, tok, model):
    directory = save(model, tok, tmp_path, "meta", mp=2)
    other = save(random_model(tp_config(dim=128)), tok, tmp_path / "other", "meta", mp=2)
    (directory / "consolidated.01.pth").write_bytes((other / "consolidated.01.pth").read_bytes())
    with pytest.raises(HerdError) as error:
        ckpt.load_shard(directory, 0, 1)
    assert_one_line(error, "rank 0 of 1", "consolidated.01.pth", "do not fit together")
