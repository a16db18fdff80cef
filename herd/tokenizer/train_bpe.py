"""BPE tokenizer training: HF `tokenizers` learns byte-level merges under Llama 3's split regex.

It takes an iterable of texts; `herd.data.readers.corpus_texts` reads them from the inputs `herd data run` takes.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from herd.errors import HerdError
from herd.tokenizer.bpe_file import write_bpe_file
from herd.tokenizer.tiktoken_bpe import PAT_STR

NUM_BYTES = 256


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


def train_tokenizer(texts: Iterable[str], vocab_size: int, out: str | Path, *, show_progress: bool = True) -> Path:
    """Train a Llama 3-style BPE of `vocab_size` mergeable tokens on `texts`; write a tiktoken file to `out`.

    `herd.tokenizer.Tokenizer(out)` loads it, with Llama 3's 256 special tokens after the
    `vocab_size` ranks (so a model needs `vocab_size + 256` embeddings). tiktoken merges any adjacent
    pair whose concatenation is a token, lowest rank first; ranks are HF's merge order, so it
    reproduces HF's encoding (tests check this on held-out text).
    """
    hf_tokenizer = train_hf_bpe(texts, vocab_size, show_progress=show_progress)
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
