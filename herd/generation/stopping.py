"""Text out of one row's generated ids as they arrive: UTF-8-safe streaming pieces and stop strings.

A stop string ends the row and is cut from its text; text that could begin one is held back until it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

from herd.errors import HerdError
from herd.tokenizer import Tokenizer


class TextStream:
    """Turns one row's ids into text pieces that never split a character nor show any part of a stop string."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        if any(not s for s in stop):
            raise HerdError("stop strings must be non-empty; remove the empty string from stop")
        self._decoder = tokenizer.stream_decoder()
        self._stop = tuple(stop)
        self._held = ""
        self.text = ""
        """Everything released so far: the pieces joined."""
        self.stopped = False
        """True once a stop string appeared."""

    def push(self, token_id: int) -> str:
        """Add one id; returns the text now safe to show ("" while it is held back)."""
        return self._release(self._decoder.push([token_id]), final=False)

    def close(self) -> str:
        """End of the row: returns what is still held back (an unfinished character as U+FFFD)."""
        return "" if self.stopped else self._release(self._decoder.flush(), final=True)

    def _release(self, new: str, final: bool) -> str:
        held = self._held + new
        found = [i for i in (held.find(s) for s in self._stop) if i >= 0]
        if found:
            held, keep, self.stopped = held[: min(found)], 0, True
        else:
            keep = 0 if final else _partial_stop_length(held, self._stop)
        piece, self._held = held[: len(held) - keep], held[len(held) - keep :]
        self.text += piece
        return piece


def _partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the start of a stop string (0 if none)."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
