"""Packing: documents laid end to end as BOS doc EOS and cut into rows of seq_len + 1 tokens.

Owns the row layout, per-token document ids (for the model's `doc_ids` mask) and the shifted targets.
"""

from collections.abc import Callable

import numpy as np
import torch

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


class PackedRows:
    """Random access to the packed rows of a document stream: row r covers stream[r*T : r*T + T + 1].

    The stream `BOS d0 EOS BOS d1 EOS ...` (documents in corpus order) is cut into windows of
    T + 1 = seq_len + 1 tokens with stride T, so consecutive rows share one token and every stream
    token but the first is a target exactly once; the incomplete tail window is dropped. A document
    longer than a row continues in the next row (without a new BOS; its positions restart there,
    as each row is attended on its own). Within a row, tokens carry the local index of their
    document (0, 1, ...), so attention and RoPE positions never cross documents.
    """

    def __init__(
        self,
        doc_lengths: np.ndarray,
        read_tokens: Callable[[int, int], np.ndarray],
        seq_len: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        """`doc_lengths[i]`: tokens of document i; `read_tokens(a, b)`: tokens a..b of all documents back to back."""
        assert seq_len >= 1, seq_len
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        self.seq_len, self.bos_id, self.eos_id = seq_len, bos_id, eos_id
        self._read = read_tokens
        self._lengths = lengths
        self._token_starts = np.concatenate([[0], np.cumsum(lengths)])
        self._stream_starts = np.concatenate([[0], np.cumsum(lengths + 2)])  # with BOS and EOS
        self.num_rows: int = max(int(self._stream_starts[-1]) - 1, 0) // seq_len

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc_ids) of row `index`, both int64 [seq_len + 1]; doc_ids count from 0 in each row."""
        assert 0 <= index < self.num_rows, (index, self.num_rows)
        stream = np.arange(index * self.seq_len, (index + 1) * self.seq_len + 1)
        doc = np.searchsorted(self._stream_starts, stream, side="right") - 1
        offset = stream - self._stream_starts[doc]  # 0 is the BOS, length + 1 the EOS
        tokens = np.where(offset == 0, self.bos_id, self.eos_id)
        inside = (offset >= 1) & (offset <= self._lengths[doc])
        if inside.any():
            flat = self._token_starts[doc[inside]] + offset[inside] - 1  # increasing
            first = int(flat[0])
            tokens[inside] = self._read(first, int(flat[-1]) + 1)[flat - first]
        return tokens, doc - doc[0]


def shift(tokens: np.ndarray, doc_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, doc_ids) [..., T] from packed rows [..., T + 1]: inputs row[:-1], targets row[1:].

    A target in another document than its input is IGNORE_INDEX (-100): an EOS never learns to
    predict the next document's BOS, which it cannot see and which carries nothing. Predicting EOS
    after a document's last token is learned.
    """
    targets = tokens[..., 1:].copy()
    targets[doc_ids[..., 1:] != doc_ids[..., :-1]] = IGNORE_INDEX
    return tokens[..., :-1], targets, doc_ids[..., :-1]


def split_rows(batch: tuple[torch.Tensor, ...], parts: int) -> tuple[torch.Tensor, ...]:
    """(inputs, targets, doc_ids) [B, T] cut into [B * parts, T / parts]: row r becomes rows r*parts .. r*parts+parts-1.

    The pieces are the rows PackedRows makes at seq_len T / parts from the same stream (windows sharing one token),
    so targets carry over; document ids restart at 0 in each piece, and a document cut by a piece boundary restarts
    its positions there, as at a row boundary. A shared prefix (negative id, herd.model.masking) keeps its id, so the
    documents after it in its piece still see it; one in a later piece, cut off from its prefix, starts afresh there.
    """
    if parts == 1:
        return batch
    tokens, targets, doc_ids = (t.reshape(t.shape[0] * parts, -1) for t in batch)
    documents = doc_ids >= 0
    first = torch.where(documents, doc_ids, torch.iinfo(doc_ids.dtype).max).amin(dim=1, keepdim=True)
    return tokens, targets, torch.where(documents, doc_ids - first, doc_ids)
