"""herd.tokenizer against Meta's reference (llama_models): ids, specials, chat format, loss mask, errors."""

import base64
import random
from pathlib import Path

import pytest

ref_tokenizer = pytest.importorskip("llama_models.llama3.tokenizer")
ref_chat_format = pytest.importorskip("llama_models.llama3.chat_format")
from llama_models.datatypes import RawMessage  # noqa: E402

from herd.errors import HerdError  # noqa: E402
from herd.tokenizer import (  # noqa: E402
    ChatFormat,
    Tokenizer,
    default_tokenizer_path,
    load_tokenizer,
    split_for_tiktoken,
)
from tests.test_run_dir import crash_mid_write  # noqa: E402

CORPUS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. DON'T you think it's 3.14159% likely? "
    "We'll see; they'd've.",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\n"
    "print([fib(i) for i in range(10)])\n",
    "#include <stdio.h>\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) "
    'printf("%d\\n", i);\n\treturn 0;\n}\n',
    "机器学习是人工智能的一个分支。日本語のテキストも、カタカナとひらがなで書きます。한국어 문장도 있습니다.",
    "Emoji: 🤖🚀 👩‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 👍🏽 and text.",
    "مرحبا بالعالم، هذه جملة عربية. नमस्ते दुनिया। Привет, мир! Γειά σου Κόσμε.",
    "1234567890123456789012345678901234567890 3,141,592.65 0x1F 1e-9 007 -42",
    "tabs\tand\t\ttrailing spaces   \nCRLF line\r\nanother\r\n\r\n\n\n  indented\u3000ideographic\xa0nbsp\x0bvt\x0cff",
    "    \n    leading and trailing whitespace    \n\n",
    "Looks special: <|begin_of_text|> <|eot_id|><|start_header_id|>user<|end_header_id|> <|reserved_special_token_5|>",
    "<|eot_id|>",
    "<|not_a_token|> <| eot_id |> <eot_id>",
    "https://example.com/path?q=1&r=two#frag {\"json\": [1, 2.5, null, true]} **markdown** `code`",
]

LONG_TEXTS = {
    "spaces_over_25k": "start" + " " * 30_000 + "end",
    "newlines_over_25k": "a" + "\n" * 26_001 + "b",
    "non_space_over_25k": "x" * 60_001,
    "mixed_non_space_over_25k": "ab,1" * 16_000,
    "over_400k": (" word" * 79_990) + " " * 20_000 + "tail" * 30,
}

DIALOG = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And in Python? <|eot_id|>"},
    {"role": "assistant", "content": "```python\nprint(2 + 2)\n```"},
    {"role": "tool", "content": '{"stdout": "4"}'},
    {"role": "assistant", "content": "It prints 4 🙂."},
    {"role": "user", "content": "Thanks!"},
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def ref():
    return ref_tokenizer.Tokenizer(default_tokenizer_path())


@pytest.fixture(scope="module")
def ref_chat(ref):
    return ref_chat_format.ChatFormat(ref)


def ref_dialog(ref_chat, messages: list[dict[str, str]]) -> list[int]:
    raw = [RawMessage(role=m["role"], content=m["content"].strip()) for m in messages]
    return ref_chat.encode_dialog_prompt(raw).tokens


# -- vocabulary and special tokens ------------------------------------------------------------------


def test_default_path_is_meta_file():
    path = default_tokenizer_path()
    assert path.name == "tokenizer.model" and path.is_file()


def test_special_tokens_match_reference(tok, ref):
    assert tok.n_words == ref.n_words == 128_256
    assert tok.special_tokens == ref.special_tokens
    assert list(tok.special_tokens)[:12] == [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>",
    ]
    assert (tok.bos_id, tok.eos_id, tok.eom_id, tok.eot_id) == (128000, 128001, 128008, 128009)
    assert (tok.bos_id, tok.eos_id, tok.eom_id, tok.eot_id, tok.pad_id) == (
        ref.bos_id, ref.eos_id, ref.eom_id, ref.eot_id, ref.pad_id)
    assert tok.stop_ids == frozenset(ref.stop_tokens)
    assert max(tok.special_tokens.values()) == tok.n_words - 1
    assert tok.path == default_tokenizer_path()


# -- encode / decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", CORPUS)
def test_encode_matches_reference_and_round_trips(tok, ref, text):
    ids = tok.encode(text)
    assert ids == ref.encode(text, bos=False, eos=False)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_lone_surrogate_is_replaced_like_reference(tok, ref):
    text = "a\ud800b"
    assert tok.encode(text) == ref.encode(text, bos=False, eos=False)
    assert tok.decode(tok.encode(text)) == "a\ufffdb"


@pytest.mark.parametrize("name", LONG_TEXTS)
def test_long_inputs_match_reference(tok, ref, name):
    text = LONG_TEXTS[name]
    ids = tok.encode(text)
    assert ids == ref.encode(text, bos=False, eos=False)
    assert tok.decode(ids) == text


def test_split_cut_points_match_reference_on_random_text():
    rng = random.Random(0)
    alphabet = [" ", "\n", "\t", "\u3000", "\x1c", "a", "字", "🙂", ","]
    for _ in range(3000):
        weights = [rng.random() ** 3 for _ in alphabet]
        text = "".join(rng.choices(alphabet, weights, k=rng.randint(1, 50)))
        max_run = rng.randint(1, 6)
        expected = list(ref_tokenizer.Tokenizer._split_whitespaces_or_nonwhitespaces(text, max_run))
        assert split_for_tiktoken(text, max_chars=len(text), max_run=max_run) == expected, (text, max_run)


def test_split_windows_and_long_runs():
    text = "ab " * 10 + " " * 12
    pieces = split_for_tiktoken(text, max_chars=20, max_run=5)
    assert "".join(pieces) == text
    assert all(len(p) <= 20 for p in pieces)
    assert split_for_tiktoken("") == []


def test_bos_eos_flags(tok, ref):
    text = "Hello there."
    for bos in (False, True):
        for eos in (False, True):
            assert tok.encode(text, bos=bos, eos=eos) == ref.encode(text, bos=bos, eos=eos)
    assert tok.encode("", bos=True, eos=True) == [tok.bos_id, tok.eos_id]


def test_special_token_text_is_plain_by_default(tok, ref):
    text = "a<|eot_id|>b<|begin_of_text|>"
    plain = tok.encode(text)
    assert not set(plain) & set(tok.special_tokens.values())
    assert tok.decode(plain) == text
    everything = tok.encode(text, allowed_special="all")
    assert everything == ref.encode(text, bos=False, eos=False, allowed_special="all")
    assert tok.eot_id in everything and tok.bos_id in everything
    only_eot = tok.encode(text, allowed_special={"<|eot_id|>"})
    assert tok.eot_id in only_eot and tok.bos_id not in only_eot
    assert tok.decode(everything) == text
    with pytest.raises(HerdError, match="unknown special tokens"):
        tok.encode(text, allowed_special={"<|eot|>"})


def test_encode_batch_matches_encode(tok):
    texts = CORPUS + [LONG_TEXTS["spaces_over_25k"], LONG_TEXTS["mixed_non_space_over_25k"]]
    assert tok.encode_batch(texts, bos=True, eos=True) == [tok.encode(t, bos=True, eos=True) for t in texts]
    assert tok.encode_batch(texts, allowed_special="all") == [tok.encode(t, allowed_special="all") for t in texts]
    assert tok.encode_batch([]) == []


def test_stream_decoder_never_splits_a_character(tok):
    text = "Robots 🤖 and families 👩‍👩‍👧 say 你好, مرحبا."
    ids = tok.encode(text)
    assert any(b"\xef\xbf\xbd" in tok.decode(ids[i : i + 1]).encode() for i in range(len(ids)))  # some ids split chars
    decoder = tok.stream_decoder()
    chunks = [decoder.push([i]) for i in ids]
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert "".join(chunks) + decoder.flush() == text


def test_decode_rejects_ids_outside_vocab(tok):
    with pytest.raises(HerdError, match="outside this tokenizer's vocabulary"):
        tok.decode([1, tok.n_words])
    with pytest.raises(HerdError, match="outside"):
        tok.decode([-1])


def test_save_writes_the_same_file(tok, tmp_path):
    out = tok.save(tmp_path / "copy" / "tokenizer.model")
    assert out.read_bytes() == default_tokenizer_path().read_bytes()


# -- chat format ----------------------------------------------------------------------------------------


def test_dialog_matches_reference(tok, ref_chat):
    dialog = DIALOG
    assert dialog[-1]["role"] == "user"
    assert tok.encode_dialog(dialog) == ref_dialog(ref_chat, dialog)
    assert tok.chat.encode_dialog(dialog) == ref_dialog(ref_chat, dialog)
    single = [{"role": "user", "content": "Hi"}]
    assert tok.encode_dialog(single) == ref_dialog(ref_chat, single)


def test_dialog_strips_content_and_maps_tool_to_ipython(tok, ref_chat):
    dialog = [{"role": "system", "content": "  sys \n"}, {"role": "ipython", "content": "\n out \t"}]
    assert tok.encode_dialog(dialog) == ref_dialog(ref_chat, [{"role": "system", "content": "sys"},
                                                                {"role": "tool", "content": "out"}])
    assert "<|start_header_id|>ipython<|end_header_id|>\n\nout<|eot_id|>" in tok.decode(tok.encode_dialog(dialog))


def test_generation_prompt_rules(tok, ref_chat):
    ended_by_assistant = DIALOG[:3]
    header = tok.encode_dialog([{"role": "user", "content": "x"}])[-4:]
    assert tok.decode(header) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    # The reference always appends the assistant header; herd does not after an assistant turn.
    assert tok.encode_dialog(ended_by_assistant) == ref_dialog(ref_chat, ended_by_assistant)[: -len(header)]
    assert tok.encode_dialog(DIALOG, add_generation_prompt=False) == ref_dialog(ref_chat, DIALOG)[: -len(header)]
    ids, mask = tok.encode_dialog_with_mask(DIALOG, add_generation_prompt=True)
    assert ids == tok.encode_dialog(DIALOG) and mask[-len(header):] == [0] * len(header)


def test_loss_mask_covers_exactly_assistant_content_and_eot(tok):
    ids, mask = tok.encode_dialog_with_mask(DIALOG)
    assert ids == tok.encode_dialog(DIALOG, add_generation_prompt=False)
    assert len(mask) == len(ids) and set(mask) <= {0, 1}
    assert mask[0] == 0 and ids[0] == tok.bos_id
    replies = [m["content"].strip() for m in DIALOG if m["role"] == "assistant"]
    masked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(masked) == "".join(reply + "<|eot_id|>" for reply in replies)
    assert sum(mask) == sum(len(tok.encode(reply)) + 1 for reply in replies)
    headers = {tok.special_tokens["<|start_header_id|>"], tok.special_tokens["<|end_header_id|>"]}
    assert all(m == 0 for i, m in zip(ids, mask) if i in headers)
    # Each masked span ends on an <|eot_id|> and there is one span per assistant turn.
    spans = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
    assert len(spans) == len(replies) and all(ids[i] == tok.eot_id for i in spans)


def test_chat_format_uses_the_tokenizers_special_ids(tmp_path):
    small = Tokenizer(write_small_bpe(tmp_path / "small.model"))
    ids = ChatFormat(small).encode_dialog([{"role": "user", "content": "ab"}])
    assert ids[0] == small.bos_id == 259
    assert small.special_tokens["<|start_header_id|>"] in ids and small.eot_id in ids
    assert small.decode(ids).startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nab<|eot_id|>")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "dialog is empty"),
        ([{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}], "message 1 has unknown role 'robot'"),
        ([{"role": "user", "content": 3}], "message 0 content must be a str"),
        ([{"role": "user"}], "message 0 must be a dict"),
        (["hello"], "message 0 must be a dict"),
        ("hello", "must be a list of messages"),
    ],
)
def test_bad_dialogs_raise(tok, messages, match):
    with pytest.raises(HerdError, match=match):
        tok.encode_dialog(messages)
    with pytest.raises(HerdError, match=match):
        tok.encode_dialog_with_mask(messages)


# -- files: any-size BPE, errors ----------------------------------------------------------------------------


def write_small_bpe(path: Path) -> Path:
    """256 byte tokens plus three merges, written by hand in tiktoken's format."""
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b" a", b" ab"]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    return path


def test_small_bpe_file_loads_with_specials_after_its_ranks(tmp_path):
    path = write_small_bpe(tmp_path / "small.model")
    small = load_tokenizer(path)
    ref_small = ref_tokenizer.Tokenizer(path)
    assert small.n_words == 259 + 256
    assert small.bos_id == 259 and small.eot_id == 259 + 9
    assert small.special_tokens == ref_small.special_tokens
    text = "ab ab abc a, <|eot_id|>"
    ids = small.encode(text, bos=True)
    assert ids == ref_small.encode(text, bos=True, eos=False)
    assert 256 in ids and 258 in ids
    assert small.decode(ids) == "<|begin_of_text|>" + text
    assert load_tokenizer(small.save(tmp_path / "dir" / "tokenizer.model").parent).encode(text) == ids[1:]


def test_a_save_that_crashes_keeps_the_old_file(tmp_path, monkeypatch):
    """Rewriting a tokenizer file (a re-exported model dir) that stops half-way leaves the old file loadable."""
    path = write_small_bpe(tmp_path / "tokenizer.model")
    old = path.read_bytes()
    crash_mid_write(monkeypatch, path)
    with pytest.raises(OSError, match="simulated crash"):
        load_tokenizer(path).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["tokenizer.model"]
    assert load_tokenizer(path).n_words == 259 + 256


def test_missing_file_errors(tmp_path):
    with pytest.raises(HerdError, match="tokenizer file not found: .*nope.model"):
        Tokenizer(tmp_path / "nope.model")
    with pytest.raises(HerdError, match="tokenizer file not found in"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda lines: lines[:2] + ["not-base64!! 2"] + lines[3:], r"small.model:3: bad token or rank"),
        (lambda lines: lines[:4] + ["YQ== 4 extra"] + lines[5:], r"small.model:5: expected 'base64token rank'"),
        (lambda lines: lines[:6] + ["YQ== six"] + lines[7:], r"small.model:7: bad token or rank"),
        (lambda lines: lines + [lines[0].split()[0] + " 259"], r"small.model:260: token .* appears twice"),
        (lambda lines: lines + ["YWJj 3"], r"small.model:260: rank 3 appears twice"),
        (lambda lines: lines[:-1] + ["IGFi 300"], r"ranks must be 0..258 without gaps"),
        (lambda lines: ["YWJj 0"] + lines[1:], r"single-byte tokens are missing"),
        (lambda lines: [], r"holds no tokens"),
    ],
)
def test_corrupt_file_errors_name_the_line(tmp_path, corrupt, match):
    path = write_small_bpe(tmp_path / "small.model")
    path.write_text("\n".join(corrupt(path.read_text().splitlines())) + "\n")
    with pytest.raises(HerdError, match=match):
        Tokenizer(path)


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x80\x81\x00garbage")
    with pytest.raises(HerdError, match="not a tiktoken BPE file"):
        Tokenizer(path)


def test_load_tokenizer_finds_the_file_in_a_model_dir(tmp_path):
    (tmp_path / "original").mkdir()
    write_small_bpe(tmp_path / "original" / "tokenizer.model")
    assert load_tokenizer(tmp_path).n_words == 259 + 256


def test_default_path_without_llama_models_names_the_install(monkeypatch):
    import herd.tokenizer

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(herd.tokenizer.resources, "files", missing)
    with pytest.raises(HerdError, match="pip install llama-models"):
        default_tokenizer_path()
