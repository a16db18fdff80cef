"""pack_chats(share_prefixes=True): dialogs that begin alike keep one copy of their common prompt per row, and each
dialog's loss is exactly its loss packed alone."""

import torch

from herd.post.batches import pack_chats
from herd.train.losses import token_losses
from tests.tiny import make_model

HEADER = "check the last message against these rules: no colors, no numbers, no animals. the message: "


def dialogs() -> list[list[dict]]:
    asks = ["what is the sky", "name a cat", "count to three", "say hello", "what is grass", "hi"]
    return [[{"role": "user", "content": HEADER + ask}, {"role": "assistant", "content": "safe" if i % 2 else "no"}]
            for i, ask in enumerate(asks)]


def test_each_dialog_loses_what_it_loses_alone_in_fewer_rows(tok):
    model = make_model(tok).train()  # CPU training's attention kernel
    shared = pack_chats(tok, dialogs(), seq_len=256, share_prefixes=True)
    plain = pack_chats(tok, dialogs(), seq_len=256)
    assert len(shared) < len(plain) and (shared.doc_ids < 0).any()
    with torch.no_grad():
        losses = token_losses(model, shared.batch(range(len(shared))))
        alone = sorted(float(token_losses(model, pack_chats(tok, [d], seq_len=256).batch([0])).sum())
                       for d in dialogs())
    packed = []
    for row_losses, targets, doc_ids in zip(losses, shared.targets, shared.doc_ids):
        for doc in doc_ids.unique():
            if (targets[doc_ids == doc] >= 0).any():
                packed.append(float(row_losses[doc_ids == doc].sum()))
    assert len(packed) == len(alone)
    assert max(abs(a - b) for a, b in zip(sorted(packed), alone)) < 1e-5 * max(alone)


def test_a_prefix_stops_before_the_first_trained_token(tok):
    """Two identical dialogs share their prompt but each keeps its own reply's targets."""
    same = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    rows = pack_chats(tok, [same, same], seq_len=128, share_prefixes=True)
    assert len(rows) == 1 and (rows.doc_ids < 0).any()
    assert int((rows.targets >= 0).sum()) == 2 * sum(tok.encode_dialog_with_mask(same)[1])


def test_a_row_mixes_requests_instead_of_copies_of_one(tok):
    """Token order puts rewordings of one request side by side; a row of them is one example seen four times (a
    batch then held few distinct examples: issue 26's guard never learned its category codes). Dialogs sharing at
    least half their prompt are shuffled within their run, so rows mix requests and still share the header."""
    asks = ["what is the sky", "name a cat", "count to three", "say hello"]
    chats = [[{"role": "user", "content": f"{HEADER}{ask} {tail}"}, {"role": "assistant", "content": ask[:4]}]
             for ask in asks for tail in ("please", "now", "ok", "thanks", "today", "quickly", "again", "too")]
    rows = pack_chats(tok, chats, seq_len=4 * len(tok.encode_dialog(chats[0])) // 2, share_prefixes=True)
    encoded = [tok.encode_dialog(c) for c in chats]
    header = next(i for i in range(len(encoded[0])) if len({tuple(e[: i + 1]) for e in encoded}) > 1)  # all share
    mixed = []
    for targets, doc_ids in zip(rows.targets, rows.doc_ids):
        assert int((doc_ids < 0).sum()) >= header  # the header is still shared
        replies = {tuple(targets[(doc_ids == d) & (targets >= 0)].tolist()) for d in doc_ids[doc_ids >= 0].unique()}
        mixed.append(len(replies - {()}) > 1)
    assert len(rows) < len(chats) / 3 and sum(mixed) >= len(rows) - 1, mixed  # token order: most rows one request
