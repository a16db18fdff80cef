"""split_rows on shared-prefix rows (herd.post.batches.pack_chats(share_prefixes=True)): every token whose whole
context (its document's tokens before it and the prefix it continues) lies in its piece keeps its mask, position
and loss."""

import pytest
import torch

from herd.model import build_model
from herd.model.masking import document_mask, document_positions
from herd.post.batches import pack_chats
from herd.train.losses import token_losses
from herd.train.packing import split_rows
from tests.post.test_shared_prefix_packing import dialogs
from tests.tiny import model_config


@pytest.mark.parametrize("seq_len, parts", [(256, 2), (512, 4)])  # pieces of 128: the 83-token prefix and more
def test_split_shared_prefix_rows_keep_each_whole_context(tok, seq_len, parts):
    rows = pack_chats(tok, dialogs(), seq_len=seq_len, share_prefixes=True)
    batch = rows.batch(range(len(rows)))
    pieces = split_rows(batch, parts)
    length = seq_len // parts
    assert torch.equal(pieces[0].flatten(), batch[0].flatten()) and torch.equal(pieces[1].flatten(), batch[1].flatten())
    mask, positions = document_mask(batch[2])[:, 0], document_positions(batch[2])
    piece_mask, piece_positions = document_mask(pieces[2])[:, 0], document_positions(pieces[2])
    whole = torch.zeros_like(batch[2], dtype=torch.bool)  # tokens that see nothing before their piece
    for p in range(parts):
        cols = slice(p * length, (p + 1) * length)
        whole[:, cols] = ~mask[:, cols, : p * length].any(dim=2)
        kept = whole[:, cols].reshape(-1)
        block = mask[:, cols, cols].reshape(-1, length)
        assert torch.equal(piece_mask[p::parts].reshape(-1, length)[kept], block[kept])
        assert torch.equal(piece_positions[p::parts].reshape(-1)[kept], positions[:, cols].reshape(-1)[kept])
    after_prefix = whole & (batch[2] >= 0) & (positions > 0) & (batch[1] >= 0)
    after_prefix &= (batch[2][:, :1] < 0)  # rows that begin with a prefix: its documents' trained tokens
    assert int(after_prefix.sum()) > 0
    model = build_model(model_config(vocab_size=tok.n_words, max_seq_len=seq_len))
    model.init_weights(0)
    model.train()  # CPU training's attention kernel
    with torch.no_grad():
        want, got = token_losses(model, batch), token_losses(model, pieces).reshape(batch[0].shape)
    assert float(want[whole & (batch[1] >= 0)].sum()) > 0
    torch.testing.assert_close(got[whole], want[whole], rtol=1e-5, atol=1e-5)
