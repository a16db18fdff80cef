"""The Llama 3 tokenizer: tiktoken BPE over a mergeable-ranks file plus Llama 3's 256 special tokens.

Owns encode/decode (with input chunking so tiktoken never sees an oversized piece) and the special ids.
"""

import codecs
import datetime
import re
from collections.abc import Iterable, Iterator, Sequence, Set
from pathlib import Path
from typing import Literal

import tiktoken

from herd.errors import HerdError
from herd.tokenizer.bpe_file import read_bpe_file, write_bpe_file
from herd.tokenizer.chat_format import ChatFormat, Message
from herd.tokenizer.tool_calls import ToolFormat, ToolList

# Llama 3's pre-tokenization regex (the split applied before BPE merges).
PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_SPECIAL_TOKENS = 256
_NAMED_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)
# Llama 3.1+ special tokens in id order; they take ids len(ranks) .. len(ranks) + 255.
SPECIAL_TOKENS: tuple[str, ...] = _NAMED_SPECIAL_TOKENS + tuple(
    f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_SPECIAL_TOKENS - len(_NAMED_SPECIAL_TOKENS))
)
# tiktoken panics on very long inputs and is slow on very long single runs, so inputs are cut first.
MAX_ENCODE_CHARS = 400_000
MAX_RUN_CHARS = 25_000

AllowedSpecial = Literal["all"] | Set[str]


_WHITESPACE_RUN = re.compile(r"\s+")  # `\s` is exactly str.isspace, as in the reference's cut rule
_NON_WHITESPACE_RUN = re.compile(r"\S+")


def split_for_tiktoken(text: str, *, max_chars: int = MAX_ENCODE_CHARS, max_run: int = MAX_RUN_CHARS) -> list[str]:
    """Cut `text` into pieces tiktoken handles: `max_chars` windows, runs of at most `max_run`.

    Every whitespace or non-whitespace run in a window is cut each `max_run` chars from its start:
    the cut points of Meta's reference, so ids match it exactly.
    """
    pieces: list[str] = []
    for start in range(0, len(text), max_chars):
        window = text[start : start + max_chars]
        cut = 0
        for run_start, run_end in _long_runs(window, max_run):
            for pos in range(run_start + max_run, run_end, max_run):
                pieces.append(window[cut:pos])
                cut = pos
        pieces.append(window[cut:])
    return pieces


def _long_runs(window: str, max_run: int) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each whitespace or non-whitespace run longer than `max_run`, in order.

    Such a run covers a multiple of `max_run`, so only the runs at those few positions are measured.
    """
    reversed_window = window[::-1] if len(window) > max_run else ""
    end = 0
    for probe in range(0, len(window), max_run):
        if probe < end:
            continue
        run = _WHITESPACE_RUN if window[probe].isspace() else _NON_WHITESPACE_RUN
        end = run.match(window, probe).end()
        start = len(window) - run.match(reversed_window, len(window) - 1 - probe).end() if probe else 0
        if end - start > max_run:
            yield start, end


class Tokenizer:
    """Llama 3 tokenizer over a tiktoken BPE file of any size; ids: ranks first, then the 256 specials."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ranks = read_bpe_file(self.path)
        n_ranks = len(self._ranks)
        self.special_tokens: dict[str, int] = {token: n_ranks + i for i, token in enumerate(SPECIAL_TOKENS)}
        self._model = tiktoken.Encoding(
            name=self.path.name, pat_str=PAT_STR, mergeable_ranks=self._ranks, special_tokens=self.special_tokens
        )
        self.n_words: int = n_ranks + len(SPECIAL_TOKENS)
        self.bos_id: int = self.special_tokens["<|begin_of_text|>"]
        self.eos_id: int = self.special_tokens["<|end_of_text|>"]
        self.eot_id: int = self.special_tokens["<|eot_id|>"]
        self.eom_id: int = self.special_tokens["<|eom_id|>"]
        self.pad_id: int = self.special_tokens["<|finetune_right_pad_id|>"]
        self.python_tag_id: int = self.special_tokens["<|python_tag|>"]
        self.stop_ids: frozenset[int] = frozenset((self.eos_id, self.eom_id, self.eot_id))
        self.chat = ChatFormat(self)

    def __repr__(self) -> str:
        return f"Tokenizer(path={str(self.path)!r}, n_words={self.n_words})"

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allowed_special: AllowedSpecial = frozenset()
    ) -> list[int]:
        """Encode `text`; special-token text stays plain text unless named in `allowed_special` (or "all")."""
        allowed = self._allowed(allowed_special)
        return self._join((self._encode_piece(piece, allowed) for piece in split_for_tiktoken(text)), bos, eos)

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        bos: bool = False,
        eos: bool = False,
        allowed_special: AllowedSpecial = frozenset(),
        num_threads: int = 8,
    ) -> list[list[int]]:
        """`encode` on many texts at once, on tiktoken's thread pool; same ids as encoding one by one."""
        allowed = self._allowed(allowed_special)
        split = [split_for_tiktoken(text) for text in texts]
        flat = [piece for pieces in split for piece in pieces]
        if allowed:
            encoded = self._model.encode_batch(
                flat, num_threads=num_threads, allowed_special=allowed, disallowed_special=()
            )
        else:
            encoded = self._model.encode_ordinary_batch(flat, num_threads=num_threads)
        out: list[list[int]] = []
        pos = 0
        for pieces in split:
            out.append(self._join(encoded[pos : pos + len(pieces)], bos, eos))
            pos += len(pieces)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids to text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Decode ids to raw bytes (special tokens as their text), for byte-exact or streaming decoding."""
        ids = list(ids)
        try:
            return self._model.decode_bytes(ids)
        except (KeyError, OverflowError):
            bad = next(i for i in ids if not 0 <= i < self.n_words)
            raise HerdError(
                f"token id {bad} is outside this tokenizer's vocabulary 0..{self.n_words - 1}; "
                "check that the model and tokenizer match"
            ) from None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text for special ids)."""
        return self.decode_bytes([token_id])

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder for ids arriving one at a time that never splits a multi-byte UTF-8 character."""
        return StreamDecoder(self)

    def encode_dialog(
        self, messages: Sequence[Message], add_generation_prompt: bool = True, *, tools: ToolList | None = None,
        tool_format: ToolFormat = "json", date: datetime.date | None = None,
    ) -> list[int]:
        """Encode a chat in the Llama 3 format, with Llama 3.1's tool prompts for `tools`; see
        `ChatFormat.encode_dialog`."""
        return self.chat.encode_dialog(messages, add_generation_prompt, tools=tools, tool_format=tool_format,
                                       date=date)

    def encode_dialog_with_mask(
        self, messages: Sequence[Message], add_generation_prompt: bool = False, *, tools: ToolList | None = None,
        tool_format: ToolFormat = "json", date: datetime.date | None = None,
    ) -> tuple[list[int], list[int]]:
        """Encode a chat plus its loss mask; see `ChatFormat.encode_dialog_with_mask`."""
        return self.chat.encode_dialog_with_mask(messages, add_generation_prompt, tools=tools,
                                                 tool_format=tool_format, date=date)

    def save(self, path: str | Path) -> Path:
        """Write this tokenizer's BPE file to `path` (the specials follow from its size); returns the path."""
        return write_bpe_file(self._ranks, path)

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        allowed = frozenset(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise HerdError(
                f"allowed_special names unknown special tokens {sorted(unknown)}; "
                "use names from tokenizer.special_tokens or 'all'"
            )
        return allowed

    def _join(self, piece_ids: Iterable[list[int]], bos: bool, eos: bool) -> list[int]:
        ids = [self.bos_id] if bos else []
        for chunk in piece_ids:
            ids.extend(chunk)
        if eos:
            ids.append(self.eos_id)
        return ids

    def _encode_piece(self, piece: str, allowed: frozenset[str]) -> list[int]:
        if allowed:
            return self._model.encode(piece, allowed_special=allowed, disallowed_special=())
        return self._model.encode_ordinary(piece)


class StreamDecoder:
    """Turns ids arriving one at a time into text, holding back the bytes of an unfinished character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Sequence[int]) -> str:
        """Add ids; returns the text that is now complete."""
        return self._utf8.decode(self._tokenizer.decode_bytes(ids))

    def flush(self) -> str:
        """End of stream: returns whatever is held back (as U+FFFD if incomplete)."""
        return self._utf8.decode(b"", final=True)
