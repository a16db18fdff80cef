"""Shared prefixes in packed rows (herd.model.masking): documents after a prefix see it as their own beginning."""

import pytest
import torch

from herd.model import build_model
from herd.model.masking import document_mask, document_positions
from tests.tiny import model_config

# a prefix (-1) continued by documents 0 and 1, the row's padding (2), then a second prefix (-2) continued by 3
ROW = [-1, -1, -1, 0, 0, 1, 1, 1, 2, -2, -2, 3, 3]


def test_documents_continue_the_positions_of_their_prefix():
    assert document_positions(torch.tensor([ROW])).tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 3, 0, 1, 2, 3]]
    # without a prefix, positions restart at every document as before
    assert document_positions(torch.tensor([[0, 0, 1, 1, 1, 2]])).tolist() == [[0, 1, 0, 1, 2, 0]]


def test_documents_see_their_prefix_and_nothing_else_of_the_row():
    expected = torch.zeros(len(ROW), len(ROW), dtype=torch.bool)
    for q, dq in enumerate(ROW):
        prefix = next((ROW[k] for k in range(q, -1, -1) if ROW[k] < 0), None)
        for k, dk in enumerate(ROW[: q + 1]):
            expected[q, k] = dk == dq or dk == prefix
    assert torch.equal(document_mask(torch.tensor([ROW]))[0, 0], expected)


@pytest.mark.parametrize("training", [False, True], ids=["sdpa", "blocked"])
def test_each_document_after_a_shared_prefix_equals_it_alone(training):
    """Logits (fp32) of every document packed after a shared prefix equal those of prefix + document run alone,
    through SDPA (inference) and herd's blocked kernel (CPU training); a row of plain documents before a prefix
    keeps its document mask."""
    torch.manual_seed(0)
    model = build_model(model_config()).train(training)
    model.init_weights(seed=1)
    prefix, branches = torch.randint(0, 520, (70,)), [torch.randint(0, 520, (n,)) for n in (9, 40, 17)]
    plain = torch.randint(0, 520, (12,))
    tokens = torch.cat([plain, prefix, *branches])[None]
    doc_ids = torch.cat([torch.zeros(12), torch.full((70,), -1), *(torch.full((len(b),), d + 1)
                                                                 for d, b in enumerate(branches))]).long()[None]
    with torch.no_grad():
        packed = model(tokens, doc_ids=doc_ids)[0]
        assert (packed[:12] - model(plain[None])[0]).abs().max() < 1e-5
        start = 82
        for branch in branches:
            alone = model(torch.cat([prefix, branch])[None])[0]
            assert (packed[start : start + len(branch)] - alone[70:]).abs().max() < 1e-5
            assert (packed[12:82] - alone[:70]).abs().max() < 1e-5
            start += len(branch)
