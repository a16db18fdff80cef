"""BPE tokenizer training: HF `tokenizers` learns byte-level merges under Llama 3's split regex.

Also owns reading a text corpus (text files, JSONL `text` fields, directories) into documents.
"""

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from herd.errors import HerdError
from herd.tokenizer.bpe_file import write_bpe_file
from herd.tokenizer.tiktoken_bpe import PAT_STR

# A plain text file is one document; a JSONL file holds one document per line in its `text` field.
TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
NUM_BYTES = 256


def corpus_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The corpus files named by `inputs`: files as given, directories searched for .txt/.jsonl(.gz), sorted."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and _is_corpus_file(p))
            if not found:
                raise HerdError(f"no .txt, .jsonl or .jsonl.gz files under {item}; point at a corpus directory")
            files.extend(found)
        elif item.is_file():
            if not _is_corpus_file(item):
                raise HerdError(f"{item}: unsupported corpus file; use .txt (one document) or .jsonl / .jsonl.gz")
            files.append(item)
        else:
            raise HerdError(f"corpus input not found: {item}; pass existing text/JSONL files or directories")
    if not files:
        raise HerdError("no corpus inputs given; pass text/JSONL files or directories")
    return files


def read_documents(path: Path) -> Iterator[str]:
    """The documents of one corpus file, in file order; empty documents are skipped."""
    if path.name.endswith(TEXT_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text:
            yield text
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            text = _jsonl_text(path, lineno, line)
            if text:
                yield text


def iter_documents(files: Iterable[Path]) -> Iterator[str]:
    """The documents of all `files`, file after file."""
    for path in files:
        yield from read_documents(path)


def train_hf_bpe(texts: Iterable[str], vocab_size: int, *, show_progress: bool = False) -> HFTokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (the 256 bytes plus merges) on `texts` with HF tokenizers."""
    if vocab_size < NUM_BYTES:
        raise HerdError(f"vocab_size {vocab_size} is below {NUM_BYTES}, the single bytes; pass at least 256")
    tokenizer = HFTokenizer(models.BPE())
    # Llama 3's split regex first, then bytes as printable characters (ByteLevel without its own regex).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def mergeable_ranks(tokenizer: HFTokenizer) -> dict[bytes, int]:
    """tiktoken ranks of a trained byte-level BPE: token bytes -> HF id (ids 256.. are in merge order)."""
    to_byte = {char: byte for byte, char in _byte_to_char().items()}
    ranks = {bytes(to_byte[char] for char in token): token_id for token, token_id in tokenizer.get_vocab().items()}
    assert all(bytes([b]) in ranks for b in range(NUM_BYTES)), "byte-level BPE lost a single-byte token"
    assert sorted(ranks.values()) == list(range(len(ranks))), "HF ids are not 0..N-1"
    return ranks


def train_tokenizer(
    inputs: Sequence[str | Path], vocab_size: int, out: str | Path, *, show_progress: bool = True
) -> Path:
    """Train a Llama 3-style BPE of `vocab_size` mergeable tokens on a corpus; write a tiktoken file to `out`.

    `herd.tokenizer.Tokenizer(out)` loads it, with Llama 3's 256 special tokens after the
    `vocab_size` ranks (so a model needs `vocab_size + 256` embeddings). tiktoken merges any adjacent
    pair whose concatenation is a token, lowest rank first; ranks are HF's merge order, so it
    reproduces HF's encoding (tests check this on held-out text).
    """
    hf_tokenizer = train_hf_bpe(iter_documents(corpus_files(inputs)), vocab_size, show_progress=show_progress)
    ranks = mergeable_ranks(hf_tokenizer)
    if len(ranks) < vocab_size:
        raise HerdError(
            f"the corpus yields only {len(ranks)} distinct tokens, short of vocab_size {vocab_size}; "
            "train on more text or pass a smaller vocab_size"
        )
    return write_bpe_file(ranks, out)


def _byte_to_char() -> dict[int, str]:
    """HF ByteLevel's byte -> printable character table (GPT-2's), which `tokenizers` does not expose.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes take the characters from U+0100 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    others = (byte for byte in range(NUM_BYTES) if byte not in table)
    table.update({byte: chr(NUM_BYTES + i) for i, byte in enumerate(others)})
    return table


def _is_corpus_file(path: Path) -> bool:
    return path.name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)


def _jsonl_text(path: Path, lineno: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise HerdError(f"{path}:{lineno}: invalid JSON ({e.msg}); each line must be a JSON object") from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise HerdError(f'{path}:{lineno}: no string "text" field; each JSONL line needs {{"text": "..."}}')
    return text
