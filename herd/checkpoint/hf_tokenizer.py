"""Tokenizer files of a Hugging Face Llama 3 directory: read them into herd's Tokenizer, write HF's set.

Reading prefers Meta's tiktoken file; without one, the ranks are rebuilt from `tokenizer.json` (byte-level BPE).
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import tiktoken

from herd.checkpoint.files import read_json
from herd.errors import HerdError
from herd.run_dir import atomic_path, write_json
from herd.tokenizer import PAT_STR, TOKENIZER_FILE_NAMES, Tokenizer, load_tokenizer, read_bpe_file, write_bpe_file

TOKENIZER_JSON = "tokenizer.json"
ORIGINAL_TOKENIZER = "original/tokenizer.model"  # where Meta's Hub repos keep the tiktoken file


@cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: each of the 256 characters standing for a byte -> that byte.

    Printable Latin-1 bytes stand for themselves; the other bytes, in order, take the characters from U+0100 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(byte): byte for byte in printable}
    others = [byte for byte in range(256) if byte not in table.values()]
    table.update({chr(256 + i): byte for i, byte in enumerate(others)})
    return table


def ranks_from_tokenizer_json(path: Path) -> dict[bytes, int]:
    """The tiktoken mergeable ranks behind an HF byte-level BPE `tokenizer.json`: the ids below the first special."""
    spec = read_json(path)
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or not isinstance(vocab, dict):
        raise HerdError(f"{path} is not a BPE tokenizer (model type {model.get('type')!r}); herd needs Llama 3's")
    first_special = min((t["id"] for t in spec.get("added_tokens", []) if t.get("special")), default=len(vocab))
    byte_of_char = _byte_of_char()
    try:
        return {bytes(byte_of_char[c] for c in token): rank for token, rank in vocab.items() if rank < first_special}
    except KeyError as e:
        raise HerdError(f"{path} is not a byte-level BPE: token character {e.args[0]!r} stands for no byte") from None


def read_tokenizer(directory: Path) -> Tokenizer:
    """The directory's tiktoken file if it has one, else the tokenizer rebuilt from tokenizer.json (writes nothing)."""
    if any((directory / name).is_file() for name in TOKENIZER_FILE_NAMES):
        return load_tokenizer(directory)
    path = directory / TOKENIZER_JSON
    if not path.is_file():
        raise HerdError(
            f"no tokenizer in {directory}: expected {' or '.join(TOKENIZER_FILE_NAMES)} or {TOKENIZER_JSON}"
        )
    with tempfile.TemporaryDirectory() as tmp:  # Tokenizer reads a file; the rebuilt one lives only this long
        tokenizer = Tokenizer(write_bpe_file(ranks_from_tokenizer_json(path), Path(tmp) / "tokenizer.model"))
    tokenizer.path = path
    for token in read_json(path).get("added_tokens", []):
        expected = tokenizer.special_tokens.get(token["content"])
        if expected is not None and expected != token["id"]:
            raise HerdError(
                f"{path} gives {token['content']} id {token['id']}, but Llama 3's layout puts it at {expected}"
            )
    return tokenizer


def write_tokenizer(tokenizer: Tokenizer, directory: Path, max_seq_len: int) -> None:
    """`original/tokenizer.model` plus the tokenizer.json / tokenizer_config.json HF tools read.

    tokenizer.json is transformers' conversion of the tiktoken encoding, adding `<|begin_of_text|>` as Meta's does.
    """
    try:
        import blobfile  # noqa: F401 - transformers' converter writes the tiktoken file through it
        from tokenizers import Tokenizer as FastTokenizer
        from tokenizers import processors
        from transformers.integrations.tiktoken import convert_tiktoken_to_fast
    except ImportError:
        raise HerdError(
            "saving in HF format builds tokenizer.json with transformers: pip install transformers blobfile"
        ) from None
    with atomic_path(directory / ORIGINAL_TOKENIZER) as tmp:
        tokenizer.save(tmp)
    encoding = tiktoken.Encoding(
        name="llama3",
        pat_str=PAT_STR,
        mergeable_ranks=read_bpe_file(directory / ORIGINAL_TOKENIZER),
        special_tokens=tokenizer.special_tokens,
    )
    with tempfile.TemporaryDirectory() as tmp:  # the converter also leaves a copy of the ranks beside its output
        convert_tiktoken_to_fast(encoding, tmp)
        fast = FastTokenizer.from_file(str(Path(tmp) / TOKENIZER_JSON))
    bos, eos = tokenizer.decode([tokenizer.bos_id]), tokenizer.decode([tokenizer.eos_id])
    add_bos = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.bos_id)]
    )
    fast.post_processor = processors.Sequence([fast.post_processor, add_bos])
    with atomic_path(directory / TOKENIZER_JSON) as tmp:
        fast.save(str(tmp))
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": bos,
            "eos_token": eos,
            "model_max_length": max_seq_len,
            "model_input_names": ["input_ids", "attention_mask"],
            "clean_up_tokenization_spaces": True,
        },
    )
    write_json(directory / "special_tokens_map.json", {"bos_token": bos, "eos_token": eos})
