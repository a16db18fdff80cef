"""Post-training batches: chat dialogs packed into rows with loss masks, padded reply pairs, and a resumable
shuffled batch stream over any list of examples (the loop's data iterator)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from herd.post.data import PreferencePair, Reply, ToolDialog
from herd.tokenizer import Message, Tokenizer
from herd.train.packing import IGNORE_INDEX


@dataclass
class PackedChats:
    """SFT rows [rows, seq_len]: inputs, targets (IGNORE_INDEX off the loss mask) and per-row document ids."""

    tokens: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor
    dialogs: int
    """Dialogs packed."""
    truncated: int
    """Dialogs longer than a row, cut to seq_len + 1 tokens (their tail is not trained on)."""

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(rows)
        return self.tokens[index], self.targets[index], self.doc_ids[index]


def pack_chats(tok: Tokenizer, dialogs: Sequence[Sequence[Message] | ToolDialog], seq_len: int, *,
               share_prefixes: bool = False) -> PackedChats:
    """Each dialog as (inputs, targets) with targets only where the chat format's loss mask is 1 (assistant
    content and its end of turn), laid whole into rows in order: a dialog starts a new row when it does not fit
    the current one, and the row's rest is padding (its own document, no targets).

    share_prefixes: the dialogs are grouped by their tokens instead (_grouped), and the dialogs of a row keep one
    copy of the tokens they all begin with before their first target, as a shared prefix (herd.model.masking): exact
    under the causal mask, each dialog's loss is what it is alone, and a row holds more dialogs that share a long
    prompt (the category header of Llama Guard prompts)."""
    docs: list[np.ndarray] = []
    truncated = 0
    for dialog in dialogs:
        ids, mask = (tok.encode_dialog_with_mask(dialog.messages, tools=dialog.tools, date=dialog.date)
                     if isinstance(dialog, ToolDialog) else tok.encode_dialog_with_mask(dialog))
        if len(ids) > seq_len + 1:
            ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            truncated += 1
        ids_a, mask_a = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
        docs.append(np.stack([ids_a[:-1], np.where(mask_a[1:], ids_a[1:], IGNORE_INDEX)]))
    if share_prefixes:
        docs = _grouped(docs)
    rows = _rows(docs, seq_len, share_prefixes)
    tokens = np.full((len(rows), seq_len), tok.eos_id, dtype=np.int64)
    targets = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int64)
    doc_ids = np.zeros((len(rows), seq_len), dtype=np.int64)
    for r, (prefix, members) in enumerate(rows):
        tokens[r, :prefix], doc_ids[r, :prefix] = members[0][0, :prefix], -1
        start = prefix
        for d, doc in enumerate(members):
            end = start + doc.shape[1] - prefix
            tokens[r, start:end], targets[r, start:end], doc_ids[r, start:end] = doc[0, prefix:], doc[1, prefix:], d
            start = end
        doc_ids[r, start:] = len(members)
    return PackedChats(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(doc_ids),
                       len(dialogs), truncated)


def _grouped(docs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Dialogs ([2, n] inputs and targets) in token order, each run of them that share at least half of their
    prompts (the tokens before the first target) shuffled within (seeded): a row's dialogs still share that much,
    but not the rest. Token order alone put rewordings of one request side by side, so a row held one example
    three or four times and a batch of rows few distinct examples (issue 26: most rows of the tiny guard's data)."""
    ordered = sorted(docs, key=lambda doc: doc[0].tolist())
    rng = np.random.default_rng(0)
    out: list[np.ndarray] = []
    run: list[np.ndarray] = []
    for doc in ordered:
        if run and 2 * _common_length(run[-1][0], doc[0]) < min(_prompt_length(run[-1]), _prompt_length(doc)):
            out += [run[i] for i in rng.permutation(len(run))]
            run = []
        run.append(doc)
    return out + [run[i] for i in rng.permutation(len(run))]


def _prompt_length(doc: np.ndarray) -> int:
    """Tokens before a dialog's first target (all of them when it has none)."""
    kept = np.flatnonzero(doc[1] != IGNORE_INDEX)
    return int(kept[0]) if len(kept) else doc.shape[1]


def _rows(docs: Sequence[np.ndarray], seq_len: int, share: bool) -> list[tuple[int, list[np.ndarray]]]:
    """Dialogs ([2, n] inputs and targets) laid in order into rows of seq_len tokens: (shared prefix length, the
    row's dialogs); a prefix is the inputs all of them begin with, none of its targets kept."""
    rows: list[tuple[int, list[np.ndarray]]] = []
    used = 0
    for doc in docs:
        kept = np.flatnonzero(doc[1] != IGNORE_INDEX)
        free = int(kept[0]) if share and len(kept) else 0
        if rows:
            prefix, members = rows[-1]
            shared = min(prefix, free, _common_length(members[0][0], doc[0]))
            grown = used + (len(members) - 1) * (prefix - shared) + doc.shape[1] - shared
            if grown <= seq_len:
                rows[-1], used = (shared, [*members, doc]), grown
                continue
        rows.append((free, [doc]))
        used = doc.shape[1]
    return rows or [(0, [])]


def _common_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading entries a and b share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def encode_reply(
    tok: Tokenizer, prompt: Sequence[Message], reply: Reply, *, tools: list[Any] | None = None,
    date: datetime.date | None = None,
) -> tuple[list[int], list[int]]:
    """(ids, mask) of `prompt` answered by `reply` (text, or an assistant message calling tools), rendered with
    `tools` and `date` as the chat format does; mask 1 on the reply's tokens only (a call's `<|python_tag|>` and
    call text included): not on the prompt (earlier assistant turns and tool results included), any header, nor
    the reply's end of turn (`<|eot_id|>` or a call's `<|eom_id|>`; Llama 3's DPO masks these out)."""
    message = reply if isinstance(reply, Mapping) else {"role": "assistant", "content": reply}
    ids, mask = tok.encode_dialog_with_mask([*prompt, message], tools=tools, date=date)
    start = len(tok.encode_dialog(prompt, tools=tools, date=date))  # the prompt and the reply's header
    assert ids[-1] in (tok.eot_id, tok.eom_id), ids[-1]
    return ids, [0] * start + mask[start:-1] + [0]


@dataclass
class PairTensors:
    """Preference pairs encoded for a batch of 2n rows: the n chosen replies, then the n rejected ones."""

    ids: list[list[int]]
    masks: list[list[int]]
    truncated: int

    def __len__(self) -> int:
        return len(self.ids) // 2


def encode_pairs(tok: Tokenizer, pairs: Sequence[PreferencePair], seq_len: int) -> PairTensors:
    """Chosen and rejected dialogs of every pair, each cut to seq_len tokens (counted in `truncated`)."""
    ids, masks, truncated = [], [], 0
    for side in ("chosen", "rejected"):
        for pair in pairs:
            seq, mask = encode_reply(tok, pair.prompt, getattr(pair, side), tools=pair.tools, date=pair.date)
            if len(seq) > seq_len:
                seq, mask, truncated = seq[:seq_len], mask[:seq_len], truncated + 1
            ids.append(seq)
            masks.append(mask)
    return PairTensors(ids, masks, truncated)


def pair_batch(pairs: PairTensors, index: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [2n, T] right-padded, targets [2n, T]: the next token where it is a reply token else IGNORE_INDEX,
    last [2n]: the position of each row's last real token); rows 0..n-1 chosen, n..2n-1 rejected."""
    n = len(pairs)
    rows = [pairs.ids[i] for i in index] + [pairs.ids[n + i] for i in index]
    masks = [pairs.masks[i] for i in index] + [pairs.masks[n + i] for i in index]
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (seq, mask) in enumerate(zip(rows, masks)):
        seq_t, mask_t = torch.tensor(seq), torch.tensor(mask, dtype=torch.bool)
        tokens[r, : len(seq)] = seq_t
        targets[r, : len(seq) - 1] = torch.where(mask_t[1:], seq_t[1:], IGNORE_INDEX)
    last = torch.tensor([len(seq) - 1 for seq in rows])
    return tokens, targets, last


class Batches:
    """Endless batches of `batch_size` examples out of `size`, in a fresh seeded order each epoch.

    `collate(indices)` builds a batch; the state is the number of examples drawn, so a run resumes at the exact
    next batch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, collate: Callable[[list[int]], tuple[torch.Tensor, ...]]) -> None:
        assert size >= 1 and batch_size >= 1, (size, batch_size)
        self.size, self.batch_size, self.seed, self.collate = size, batch_size, seed, collate
        self.drawn = 0
        self._epoch, self._order = -1, np.arange(0)

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        indices = []
        for _ in range(self.batch_size):
            epoch, position = divmod(self.drawn, self.size)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size)
            indices.append(int(self._order[position]))
            self.drawn += 1
        return self.collate(indices)

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drawn = int(state["drawn"])
