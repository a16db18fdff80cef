"""Per-command decode paths: `herd generate`'s auto compiles by the work against a warm or cold kernel cache, and a chat
session compiles in a background thread while its replies decode eagerly, switching mid-reply with the same tokens."""

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from herd.chat import ChatSession
from herd.generation import background_compile, decode_step, generate_tokens
from herd.generation.background_compile import BackgroundCompile
from herd.generation.decode_step import choose_chat_path, choose_decode_path, describe_decode_path
from tests.generation.test_generation import SMALL, random_model


@pytest.fixture()
def model(monkeypatch, tmp_path):
    monkeypatch.delenv("HERD_CPU_PLAIN", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # an empty kernel cache
    return random_model()


def test_one_shot_auto_compiles_between_the_thresholds_only_with_cached_kernels(model, monkeypatch):
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK", 10 * nbytes)
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 40 * nbytes)
    assert choose_decode_path(model, None, 9)[1].endswith("too few to pay for a compile)")
    assert choose_decode_path(model, None, 20) == (
        False, f"eager (20 new tokens of a {nbytes / 1e9:.2f} GB model: too few to pay for a compile with no kernels "
        "cached)")
    assert choose_decode_path(model, None, 40)[0]
    marker = decode_step._marker(model, 1)
    marker.parent.mkdir(parents=True)
    marker.touch()  # what a compiled step leaves after its first call
    assert decode_step.kernels_cached(model, 1) and not decode_step.kernels_cached(model, 2)
    assert choose_decode_path(model, None, 20)[0] and not choose_decode_path(model, None, 9)[0]


def test_a_chat_session_compiles_in_the_background_where_a_full_context_pays(model, monkeypatch):
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 0)
    monkeypatch.setattr(decode_step, "spare_core", lambda: False)
    path, why = choose_chat_path(model, None)
    assert path == "background" and why.endswith("once the first reply is done (no core spare)")
    assert choose_chat_path(model, True) == ("compiled", "compiled (asked for)")
    assert choose_chat_path(model, False) == ("eager", "eager (asked for)")
    line = describe_decode_path(model, None, 8, chat=True)
    assert line.startswith("herd: decode step eager, then compiled") and "--compile off for eager" in line
    monkeypatch.setenv("HERD_CPU_PLAIN", "1")
    assert choose_chat_path(model, None) == ("eager", "eager (HERD_CPU_PLAIN=1)")
    monkeypatch.setenv("HERD_CPU_PLAIN", "0")
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 10**15)
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK", 10**15)
    assert choose_chat_path(model, None)[0] == "eager"


@pytest.mark.slow
def test_the_step_switches_to_the_compiled_one_mid_reply_with_the_same_tokens(model):
    """Eager for the first tokens, the compile's end awaited after the 3rd, compiled after it: greedy tokens equal
    eager's, the switch compiles nothing in the foreground, and the compile left the warm-cache marker."""
    torch.compiler.reset()
    background = BackgroundCompile(model, early=True)
    seen = []

    def on_token(_row, token):
        seen.append(token)
        if len(seen) == 3:
            assert background._thread is not None  # started at the first decode step
            background.ready.wait()
            assert background.error is None
            compiles.append(counters["stats"]["unique_graphs"])

    compiles = []
    switched = generate_tokens(model, [[1, 2, 3]], max_new_tokens=10, compile=background, on_token=on_token)
    assert counters["stats"]["unique_graphs"] == compiles[0]
    eager = generate_tokens(model, [[1, 2, 3]], max_new_tokens=10)
    assert switched[0].tokens == eager[0].tokens and len(seen) == 10
    assert decode_step.kernels_cached(model, 1)


@pytest.mark.slow
def test_a_chat_session_starts_the_compile_after_its_first_reply(model, tok, monkeypatch):
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 0)
    monkeypatch.setattr(background_compile, "spare_core", lambda: False)
    made, make = [], background_compile.make_decode_step
    monkeypatch.setattr(background_compile, "make_decode_step", lambda m, c, on: made.append(on) or make(m, c, on))
    model = random_model(dataclasses.replace(SMALL, max_seq_len=256))  # room for the chat template's system turn
    session = ChatSession(model, tok, compile=None, max_new_tokens=8)
    eager = ChatSession(model, tok, max_new_tokens=8)
    background = session.sampling["compile"]
    assert isinstance(background, BackgroundCompile) and not background.early
    assert session.reply("hello") == eager.reply("hello")
    assert background._thread is not None
    background.ready.wait()
    assert background.error is None
    assert session.reply("and then?") == eager.reply("and then?")
    assert made == [False, True, False, True]  # reply 1 eager; the thread's compile; reply 2 eager, then compiled
