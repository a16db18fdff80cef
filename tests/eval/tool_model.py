"""A tiny model that calls tools: a random tiny model never does, so the tool tests teach one by Adam steps on the
dialogs they then replay (the loss on the assistant turns only, as SFT trains). Test modules import the
`tool_caller` fixture from here."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from herd.eval.tool_use import DEFAULT_DATE, tool_declarations
from herd.model import Transformer, build_model
from herd.tokenizer import Message, Tokenizer, custom_tools_prompt, parse_tools, system_prompt, tool_call_text
from herd.tokenizer.train_bpe import train_tokenizer
from tests.tiny import model_config


def train_tool_caller(
    tok: Tokenizer, dialogs: Sequence[tuple[Sequence[Message], list]], date: datetime.date, max_steps: int = 200,
    max_seq_len: int = 256,
) -> Transformer:
    """The tiny config (`max_seq_len` positions) trained on the (messages, `tools=` list) dialogs, in one
    right-padded batch, until the loss on their assistant turns is under 0.02 (30 to 100 steps); fails if it is
    not, since the tests would then not be testing the loop."""
    torch.manual_seed(0)
    model = build_model(model_config(vocab_size=tok.n_words, max_seq_len=max_seq_len))
    model.init_weights(0)
    rows = [tok.encode_dialog_with_mask(messages, tools=tools, date=date) for messages, tools in dialogs]
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.tensor([ids[:-1] + [0] * (width - len(ids)) for ids, _ in rows])
    targets = torch.tensor([ids[1:] + [0] * (width - len(ids)) for ids, _ in rows])
    trained = torch.tensor([mask[1:] + [0] * (width - len(ids)) for ids, mask in rows], dtype=torch.bool)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(max_steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs)[trained], targets[trained])
        if loss.item() < 0.02:
            return model.eval()
        loss.backward()
        optimizer.step()
    raise AssertionError(f"the tool-calling model did not learn its dialogs (loss {loss.item():.4f})")


def tool_dialog(question: str, call: dict, result: str, answer: str) -> list[dict]:
    """A user question, the assistant's call, the tool's result and the answer."""
    return [{"role": "user", "content": question}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "ipython", "content": result}, {"role": "assistant", "content": answer}]


PYTHON_DIALOGS = [
    tool_dialog("what is 12 plus 34", {"name": "code_interpreter", "arguments": {"code": "print(12 + 34)"}},
                "completed\n[stdout]\n46\n[/stdout]", "46"),
    tool_dialog("what is 90 minus 5", {"name": "code_interpreter", "arguments": {"code": "print(90 - 5)"}},
                "completed\n[stdout]\n85\n[/stdout]", "85"),
]
"""Code-interpreter dialogs, with the results herd's sandbox gives (the replay must see the same prompt)."""
WOLFRAM_DIALOG = tool_dialog("what is 7 times 8", {"name": "wolfram_alpha", "arguments": {"query": "7 * 8"}}, "56",
                             "56")


@pytest.fixture(scope="session")
def tool_caller(tiny_tok_path) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer): the tiny tokenizer's model trained on PYTHON_DIALOGS (tools ["python"]) and
    WOLFRAM_DIALOG (tools ["wolfram_alpha"]). Read-only; trained once a session although two test modules
    import the fixture (pytest would set each module's copy up)."""
    return _tool_caller(str(tiny_tok_path))


@functools.cache
def _tool_caller(tok_path: str) -> tuple[Transformer, Tokenizer]:
    tok = Tokenizer(tok_path)
    dialogs = [(d, tool_declarations(["python"])) for d in PYTHON_DIALOGS]
    dialogs.append((WOLFRAM_DIALOG, tool_declarations(["wolfram_alpha"])))
    return train_tool_caller(tok, dialogs, DEFAULT_DATE), tok


BOTH_TOOLS = ["python", "calculator"]
BOTH_DIALOGS = [
    tool_dialog("what is 7 times 8", {"name": "calculator", "arguments": {"expression": "7 * 8"}}, "56", "56"),
    tool_dialog("what is 12 plus 34", {"name": "code_interpreter", "arguments": {"code": "print(12 + 34)"}},
                "completed\n[stdout]\n46\n[/stdout]", "46"),
]
"""Dialogs under both of `herd chat --tools python,calculator`'s tools: one calls the calculator, one Python."""


@pytest.fixture(scope="session")
def two_tool_caller(tmp_path_factory) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) for BOTH_DIALOGS under BOTH_TOOLS; the tokenizer is trained on the tool prompts, so that
    Meta's long custom-tool template stays a few tokens."""
    tools = parse_tools(tool_declarations(BOTH_TOOLS))
    texts = [system_prompt(tools, None, DEFAULT_DATE), custom_tools_prompt(tools.custom),
             *(tool_call_text(d[1]["tool_calls"][0]) + " " + d[0]["content"] + " " + d[2]["content"] for d in
               BOTH_DIALOGS), "user assistant ipython system"]
    tok = Tokenizer(train_tokenizer(texts * 20, 480, tmp_path_factory.mktemp("two_tools") / "tok.model",
                                    show_progress=False))
    dialogs = [(d, tool_declarations(BOTH_TOOLS)) for d in BOTH_DIALOGS]
    return train_tool_caller(tok, dialogs, DEFAULT_DATE, max_seq_len=512), tok
