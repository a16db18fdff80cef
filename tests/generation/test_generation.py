"""Generation: KV-cache decoding against full forwards, greedy decoding against HF transformers' generate,
sampling (seeds, top-k, top-p, frequencies), stops, streaming text and context errors."""

import pytest
import torch

from herd.errors import HerdError
from herd.generation import SamplingParams, TextStream, generate, generate_results, generate_tokens, sample
from herd.generation.decode_step import make_decode_step
from herd.model import KVCache, ModelConfig, build_model, preset
from herd.tokenizer import write_bpe_file
from tests.tiny import model_config

ATOL = 1e-5
SMALL = model_config(multiple_of=16, max_seq_len=96)


def random_model(config: ModelConfig = SMALL, seed: int = 0):
    model = build_model(config).eval()
    model.init_weights(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights than init's, so the next-token distributions are peaked
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.2, generator=generator)
    return model


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def tok(meta_tokenizer):
    """Meta's tokenizer: the text API's tests decode real text."""
    return meta_tokenizer


@pytest.fixture(scope="module")
def text_model():
    """A tiny model on Meta's 128K vocabulary, for the text API."""
    return random_model(preset("tiny"))


def prompts_of(lengths, seed=0, vocab=SMALL.vocab_size):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]


# --- KV-cache decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize("static", [False, True], ids=["forward", "decode_step"])
def test_cached_decoding_equals_full_forward(model, static):
    """Left-padded batch: prefill, then one token per step; each step's logits equal a full forward of that
    prompt alone over everything so far."""
    lengths, steps = [7, 3, 12], 6
    prompts = prompts_of(lengths)
    continuation = prompts_of([steps] * len(lengths), seed=1)
    width = max(lengths)
    pad = torch.tensor([width - n for n in lengths])
    tokens = torch.stack([torch.tensor([0] * (width - len(p)) + p) for p in prompts])
    cache = KVCache.allocate(SMALL, len(prompts), width + steps, dtype=torch.float32, device="cpu", pad=pad)
    with torch.no_grad():
        step_logits = [model(tokens, cache=cache, last_only=True)[:, -1]]
        for i in range(steps - 1):
            ids = torch.tensor([[c[i]] for c in continuation])
            if static:
                step_logits.append(model.decode_step(ids, cache, torch.tensor([cache.length]))[:, -1])
                cache.length += 1
            else:
                step_logits.append(model(ids, cache=cache)[:, -1])
        for row, prompt in enumerate(prompts):
            alone = model(torch.tensor([prompt + continuation[row][: steps - 1]]))[0, len(prompt) - 1 :]
            for i in range(steps):
                assert (step_logits[i][row] - alone[i]).abs().max() <= ATOL


def test_padded_batch_generates_as_each_prompt_alone(model):
    prompts = prompts_of([5, 17, 1, 9], seed=2)
    batch = generate_tokens(model, prompts, max_new_tokens=12, logprobs=True)
    for prompt, result in zip(prompts, batch, strict=True):
        alone = generate_tokens(model, [prompt], max_new_tokens=12, logprobs=True)[0]
        assert result.tokens == alone.tokens
        assert result.logprobs == pytest.approx(alone.logprobs, abs=ATOL)


def test_logprobs_are_the_raw_model_distribution(model):
    prompt = prompts_of([6], seed=3)[0]
    result = generate_tokens(model, [prompt], max_new_tokens=5, temperature=0.7, top_k=20, seed=4, logprobs=True)[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + result.tokens]))[0, len(prompt) - 1 : -1]
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(result.tokens)[:, None])[:, 0]
    assert result.logprobs == pytest.approx(expected.tolist(), abs=ATOL)


# --- against HF transformers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random HF LlamaForCausalLM and the same weights in herd, through herd.checkpoint's HF reader."""
    transformers = pytest.importorskip("transformers")
    ckpt = pytest.importorskip("herd.checkpoint")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=520, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=128,
    )
    reference = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0.0, 0.2)
    directory = tmp_path_factory.mktemp("hf")
    reference.save_pretrained(directory)
    ranks = {bytes([b]): b for b in range(256)} | {bytes([97 + i, 98 + i]): 256 + i for i in range(8)}
    write_bpe_file(ranks, directory / "tokenizer.model")
    herd_model, _ = ckpt.load(directory)
    return reference, herd_model.eval()


def test_greedy_equals_hf_generate(hf_pair):
    reference, herd_model = hf_pair
    prompts = prompts_of([9, 4, 15], seed=5)
    ours = generate_tokens(herd_model, prompts, max_new_tokens=24)
    for prompt, result in zip(prompts, ours, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            theirs = reference.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                eos_token_id=None, pad_token_id=0,
            )
        assert result.tokens == theirs[0, len(prompt) :].tolist()
        assert result.finish_reason == "length"


# --- sampling ------------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible(model):
    prompts = prompts_of([4, 8], seed=6)
    options = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 0.95}
    first = generate_tokens(model, prompts, seed=11, **options)
    again = generate_tokens(model, prompts, seed=11, **options)
    other = generate_tokens(model, prompts, seed=12, **options)
    assert [r.tokens for r in first] == [r.tokens for r in again]
    assert [r.tokens for r in first] != [r.tokens for r in other]


@pytest.mark.parametrize("options", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 5, "top_p": 1e-6}])
def test_narrowest_sampling_equals_greedy(model, options):
    prompts = prompts_of([3, 10], seed=7)
    greedy = generate_tokens(model, prompts, max_new_tokens=16)
    narrow = generate_tokens(model, prompts, max_new_tokens=16, temperature=1.5, seed=3, **options)
    assert [r.tokens for r in narrow] == [r.tokens for r in greedy]


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).log_softmax(-1).expand(40000, -1)
    probs = logits[0].exp()
    generator = torch.Generator().manual_seed(0)

    def frequencies(**options):
        ids = sample(logits, SamplingParams(**options), generator)
        return torch.bincount(ids, minlength=6).float() / len(ids)

    assert torch.allclose(frequencies(temperature=1.0), probs, atol=0.01)
    tempered = (logits[0] / 0.5).softmax(-1)
    assert torch.allclose(frequencies(temperature=0.5), tempered, atol=0.01)
    top2 = torch.cat([probs[:2] / probs[:2].sum(), torch.zeros(4)])
    assert torch.allclose(frequencies(temperature=1.0, top_k=2), top2, atol=0.01)
    # the nucleus: the fewest top tokens whose mass reaches top_p (here the first three: 0.57 + 0.21 + 0.13)
    assert probs[:2].sum() < 0.85 <= probs[:3].sum()
    top3 = torch.cat([probs[:3] / probs[:3].sum(), torch.zeros(3)])
    assert torch.allclose(frequencies(temperature=1.0, top_p=0.85), top3, atol=0.01)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k"),
     ({"max_new_tokens": -1}, "max_new_tokens"), ({"check_every": -1}, "check_every")],
)
def test_bad_options_are_clear(model, options, message):
    with pytest.raises(HerdError, match=message):
        generate_tokens(model, [[1, 2]], **{"max_new_tokens": 4, **options})


# --- stops -----------------------------------------------------------------------------------------------

def test_stop_token_ends_a_row_without_it(model):
    prompts = prompts_of([5, 11], seed=8)
    free = generate_tokens(model, prompts, max_new_tokens=20)
    ids = free[0].tokens
    k = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i])
    stopped = generate_tokens(model, prompts, max_new_tokens=20, stop_ids=[ids[k]])
    assert stopped[0].tokens == ids[:k] and stopped[0].finish_reason == "stop"
    other = free[1].tokens
    cut = other.index(ids[k]) if ids[k] in other else len(other)
    assert stopped[1].tokens == other[:cut]


def test_on_token_stops_a_row(model):
    seen = []

    def on_token(row, token):
        seen.append((row, token))
        return len([r for r, _ in seen if r == row]) == 3

    results = generate_tokens(model, prompts_of([4, 6], seed=9), max_new_tokens=10, on_token=on_token)
    assert [len(r.tokens) for r in results] == [3, 3]
    assert all(r.finish_reason == "stop" for r in results)
    assert [t for r, t in seen if r == 0] == results[0].tokens


@pytest.mark.parametrize("check_every", [1, 4])
def test_checking_stops_every_few_steps_changes_nothing(model, check_every):
    prompts = prompts_of([5, 11], seed=8)
    free = generate_tokens(model, prompts, max_new_tokens=20)
    stop = free[0].tokens[6]
    every = generate_tokens(model, prompts, max_new_tokens=20, stop_ids=[stop])
    sparse = generate_tokens(model, prompts, max_new_tokens=20, stop_ids=[stop], check_every=check_every)
    assert [(r.tokens, r.finish_reason) for r in sparse] == [(r.tokens, r.finish_reason) for r in every]


def test_stop_string_cuts_the_text(text_model, tok):
    prompts = ["Once upon a time", "The capital of France is"]
    free = generate_results(text_model, tok, prompts, max_new_tokens=24)
    text = free[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    pieces = {0: [], 1: []}
    stopped = generate_results(
        text_model, tok, prompts, max_new_tokens=24, stop=[stop], on_text=lambda i, p: pieces[i].append(p)
    )
    assert stopped[0].text == text[: text.index(stop)] and stopped[0].finish_reason == "stop"
    assert stop not in stopped[1].text and free[1].text.startswith(stopped[1].text)
    for i in (0, 1):
        assert "".join(pieces[i]) == stopped[i].text


def test_tokenizer_stop_tokens_end_the_text(tok):
    model = random_model(preset("tiny"))
    first = generate_results(model, tok, "Hello", max_new_tokens=3)[0]
    assert first.finish_reason == "length" and len(first.tokens) == 3
    with torch.no_grad():  # <|eot_id|> now outscores the first greedy token tenfold
        model.output.weight[tok.eot_id] = 10 * model.output.weight[first.tokens[0]]
    stopped = generate_results(model, tok, "Hello", max_new_tokens=3)[0]
    assert (stopped.tokens, stopped.text, stopped.finish_reason) == ([], "", "stop")


# --- text API and streaming ----------------------------------------------------------------------------

def test_text_api_shapes_and_chat(text_model, tok):
    one = generate(text_model, tok, "Hello", max_new_tokens=8)
    many = generate(text_model, tok, ["Hello", "Bonjour"], max_new_tokens=8)
    assert isinstance(one, str) and many[0] == one and len(many) == 2
    assert one == tok.decode(generate_tokens(text_model, [tok.encode("Hello", bos=True)], max_new_tokens=8)[0].tokens)
    chat = generate_results(text_model, tok, "Hi there", max_new_tokens=8, chat=True)[0]
    dialog = tok.encode_dialog([{"role": "user", "content": "Hi there"}])
    assert chat.tokens == generate_tokens(text_model, [dialog], max_new_tokens=8, stop_ids=tok.stop_ids)[0].tokens


def test_streamed_pieces_join_to_the_text(text_model, tok):
    pieces = {0: [], 1: []}
    results = generate_results(
        text_model, tok, ["你好", "🦙 llamas"], max_new_tokens=30, temperature=1.0, seed=1,
        on_text=lambda i, p: pieces[i].append(p),
    )
    for i, result in enumerate(results):
        assert "".join(pieces[i]) == result.text == tok.decode(result.tokens)


def test_text_stream_never_splits_a_character(tok):
    text = "naïve 你好世界 🦙🚀 👩‍👩‍👧 ok"
    ids = tok.encode(text)
    # byte-level BPE splits some of these characters over several ids
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids] + [stream.close()]
    assert "".join(pieces) == text == stream.text
    assert all("\ufffd" not in p for p in pieces)


def test_text_stream_holds_back_a_possible_stop_string(tok):
    text = "你好世界，再见"
    stream = TextStream(tok, stop=["世界", "never"])
    pieces = []
    for i in tok.encode(text):
        pieces.append(stream.push(i))
        if stream.stopped:
            break
    assert stream.stopped and "".join(pieces) == stream.text == "你好"
    assert stream.close() == ""
    unstopped = TextStream(tok, stop=["verse"])
    assert "".join(unstopped.push(i) for i in tok.encode("a river")) == "a ri"
    assert unstopped.close() == "ver" and not unstopped.stopped and unstopped.text == "a river"
    with pytest.raises(HerdError, match="non-empty"):
        TextStream(tok, stop=[""])


# --- context --------------------------------------------------------------------------------------------

def test_prompt_longer_than_the_context(model):
    long = prompts_of([90], seed=10)
    with pytest.raises(HerdError, match=r"prompt 0 has 90 tokens.*context of 96.*truncate=True"):
        generate_tokens(model, long, max_new_tokens=10)
    cut = generate_tokens(model, long, max_new_tokens=10, truncate=True)[0]
    assert cut.tokens == generate_tokens(model, [long[0][-86:]], max_new_tokens=10)[0].tokens
    with pytest.raises(HerdError, match="no room for a prompt"):
        generate_tokens(model, [[1]], max_new_tokens=96)
    with pytest.raises(HerdError, match="empty"):
        generate_tokens(model, [[]], max_new_tokens=4)
    with pytest.raises(HerdError, match="vocabulary"):
        generate_tokens(model, [[SMALL.vocab_size]], max_new_tokens=4)


def test_nothing_to_generate(model):
    assert generate_tokens(model, [], max_new_tokens=4) == []
    assert generate_tokens(model, [[1, 2]], max_new_tokens=0)[0].tokens == []


# --- compiled decode step --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("lengths", [[5], [6, 2]], ids=["one-row", "padded-batch"])
def test_compiled_decoding_equals_eager(model, lengths):
    """The compiled step (on CPUs with its own matmul and attention kernels) against the eager forward."""
    prompts = prompts_of(lengths, seed=12)
    eager = generate_tokens(model, prompts, max_new_tokens=10, logprobs=True)
    compiled = generate_tokens(model, prompts, max_new_tokens=10, logprobs=True, compile=True)
    for a, b in zip(eager, compiled, strict=True):
        assert a.tokens == b.tokens
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)



@pytest.mark.slow
def test_interleaved_compiled_steps_each_run_their_own_graph(model):
    """A compiled step skips dynamo's full guards after its first call (only those telling graphs apart run): steps
    of graphs for one row, two rows and another model, called in turn, each still give their eager step's logits."""
    other = random_model(model_config(multiple_of=16, max_seq_len=96, n_layers=SMALL.n_layers + 1), seed=3)
    runs = [(model, prompts_of([5], seed=1)), (model, prompts_of([4, 4], seed=2)), (other, prompts_of([6], seed=4))]
    steps, ids = [], []
    with torch.inference_mode():
        for m, prompts in runs:
            pair = []
            for compile in (False, True):
                cache = KVCache.allocate(m.config, len(prompts), 16, dtype=torch.float32, device="cpu")
                m(torch.tensor(prompts), cache=cache)
                pair.append(make_decode_step(m, cache, compile))
            steps.append(pair)
            ids.append(torch.tensor(prompts)[:, -1:])
        for _ in range(4):
            for i, (eager, compiled) in enumerate(steps):
                expected = eager(ids[i])
                torch.testing.assert_close(compiled(ids[i]), expected, atol=1e-4, rtol=1e-4)
                ids[i] = expected.argmax(-1, keepdim=True)
