"""The serving engine's compiled one-request step: the eager engine's tokens and logprobs, grammars still applied."""

from __future__ import annotations

import copy

import pytest
import torch

import herd
from herd.errors import HerdError
from herd.generation.decode_step import choose_decode_path
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.compiled_step import choose_serve_path, paged_decode, prepare_linears
from herd.serve.grammar import Grammars
from herd.serve.model_runner import Segment, run_segments
from herd.serve.packed import pack_linears
from herd.serve.paged_cache import PagedKV
from herd.serve.quantize import quantize, quantize_int8
from tests.generation.test_generation import prompts_of, random_model
from tests.serve.test_serve_engine import _run, _tokens


@pytest.fixture(scope="module")
def tiny():
    return herd.load("tiny")


def test_paged_decode_gives_the_engine_steps_logits_and_cache(tiny):
    """The compiled step's function, run eagerly, against `run_segments` decoding the same token in the same blocks
    (a table of 3 blocks, the last one past the position: masked)."""
    model, tok = tiny
    prompt = tok.encode("The quick brown fox jumps over the lazy dog.", bos=True)
    caches = [PagedKV(model.config, 8, 4, dtype=torch.float32, device=torch.device("cpu")) for _ in range(2)]
    blocks = [5, 2, 7, 1]
    for kv in caches:
        run_segments(model, kv, [Segment(prompt, 0, blocks, True)])
    position = len(prompt)  # 11: block 2, slot 3 of it
    want = run_segments(model, caches[0], [Segment([42], position, blocks, True)])[1]
    with torch.inference_mode():
        got = paged_decode(model, torch.tensor([[42]]), caches[1], torch.tensor(blocks[:3]), torch.tensor([position]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values, strict=True):
        torch.testing.assert_close(a, b)


def test_the_serve_path_choice(tiny):
    model, _ = tiny
    assert choose_serve_path(model, False) == (False, "eager (asked for)")
    assert choose_serve_path(model, None) == choose_decode_path(model, None, model.config.max_seq_len)
    assert choose_serve_path(pack_linears(copy.deepcopy(model)), None) == (
        False, "eager (its linears are prepacked without their plain weights)")
    assert choose_serve_path(pack_linears(copy.deepcopy(model), keep_weights=True), True)[0]
    assert choose_serve_path(quantize_int8(copy.deepcopy(model)), True)[0]  # the backend decomposes the int8 matmul
    with pytest.raises(HerdError, match="cannot compile: its linears hold fp8 weights"):
        choose_serve_path(quantize(copy.deepcopy(model), "fp8"), True)
    engine = Engine(model, tiny[1], EngineConfig())
    assert engine.decode_path.startswith("one request's decode step eager (asked for)")


def _serve(model, tok, compile: bool, prompts, params) -> dict[str, list]:
    """Each request alone (the compiled step's case), then all together (its last request ends alone)."""
    engine = Engine(model, tok, EngineConfig(block_size=4, max_running=4, max_step_tokens=16, compile=compile))
    steps = []
    if compile:  # count the steps the compiled step runs
        step = engine._compiled
        engine._compiled = lambda *args: steps.append(args) or step(*args)
    alone = {}
    for i, prompt in enumerate(prompts):
        alone |= _run(engine, {0: [(f"alone{i}", prompt, params)]})
    if compile:  # every output after a request's first (from its prefill) came from a compiled step
        assert len(steps) >= sum(len(outs) - 1 for outs in alone.values()) > 0
    together = _run(engine, {0: [(str(i), prompt, params) for i, prompt in enumerate(prompts)]})
    return alone | together


@pytest.mark.slow
def test_the_compiled_step_serves_the_eager_tokens_and_logprobs_with_grammars(tiny):
    model, tok = tiny
    model = pack_linears(copy.deepcopy(model), keep_weights=True)  # as `herd serve` packs it when compiling
    prompts = [tok.encode(text, bos=True) for text in ("Hello there, how are you?", "Tell me about the sea. " * 4)]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    grammar = Grammars(tok, model.config.vocab_size).json_schema(schema, "response_format")
    cases = {"free": RequestParams(max_tokens=24, logprobs=True, top_logprobs=3),  # past several blocks of 4
             "json": RequestParams(max_tokens=24, logprobs=True, grammar=grammar)}
    eager, compiled = (
        {f"{name}/{key}": outs for name, params in cases.items()
         for key, outs in _serve(model, tok, compile, prompts, params).items()}
        for compile in (False, True)
    )
    assert eager.keys() == compiled.keys()
    for key in eager:
        assert _tokens(compiled[key]) == _tokens(eager[key]), key
        got, want = ([out.logprob for out in outs if out.token_id is not None] for outs in (compiled[key], eager[key]))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        if key.startswith("json"):
            assert "".join(out.text for out in compiled[key]).startswith('{"n"'), key
        else:
            (got_ids, got_lps), (want_ids, want_lps) = (zip(*outs[-1].top_logprobs, strict=True)
                                                        for outs in (compiled[key], eager[key]))
            assert got_ids == want_ids and got_lps == pytest.approx(want_lps, abs=1e-4)


@pytest.mark.parametrize("kind", [None, "int8"])
def test_herd_serve_says_why_its_step_stays_eager(tiny, kind, monkeypatch, capsys):
    """`herd serve`'s start-up line gives the real reason: the tiny model's context is too few tokens to pay for a
    compile (the line said "no plain weights" when it was asked of the model already packed without them, or of
    int8 weights, which compile now)."""
    from herd.serve import server

    model = tiny[0] if kind is None else quantize(copy.deepcopy(tiny[0]), kind)
    want = choose_decode_path(model, None, model.config.max_seq_len)
    assert not want[0] and "too few" in want[1], want
    monkeypatch.setattr(server, "_serve_http", lambda *args: None)  # stop once the engine is ready
    server.serve("tiny", port=0, engine_config=EngineConfig(compile=None), quantize=kind)
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("herd serve:"))
    assert line.startswith(f"herd serve: one request's decode step {want[1]};"), line


def test_prepare_linears_keeps_the_plain_weights_only_where_the_step_compiles(tiny):
    model, _ = tiny
    eager, compiled = (copy.deepcopy(model) for _ in range(2))
    assert prepare_linears(eager, False) == (False, "eager (asked for)")
    assert eager.output.weight is None  # prepacked alone
    assert prepare_linears(compiled, True)[0]
    assert compiled.layers[0].attention.wq.weight is not None  # the compiled step multiplies the plain weight


@pytest.mark.slow
def test_the_compiled_step_serves_int8_weights_as_the_eager_engine_does(tiny):
    """`herd serve --quantize int8 --compile on`: the compiled one-request step (its int8 matmul decomposed) gives
    the eager int8 engine's greedy tokens, log-probabilities within 0.1, up to where they part at a near tie of
    eager's top two. Both round the logits to bf16 (its 2^-8 is 0.04 at a logit of 10), and inductor rounds fewer
    activations than torch's int8 kernel (tests/generation/test_int8_decode.py)."""
    model = quantize_int8(random_model())  # peaked next-token distributions: few near ties
    params = RequestParams(max_tokens=24, logprobs=True, top_logprobs=2)
    prompts = prompts_of([9, 30], seed=3)
    eager, compiled = (_serve(model, tiny[1], compile, prompts, params) for compile in (False, True))
    assert eager.keys() == compiled.keys()
    same = 0
    for key in eager:
        want, got = ([out for out in outs if out.token_id is not None] for outs in (eager[key], compiled[key]))
        for a, b in zip(want, got, strict=False):
            if a.token_id != b.token_id:  # only where eager's top two are within the rounding
                assert a.top_logprobs[0][1] - a.top_logprobs[1][1] < 0.2, (key, same)
                break
            assert b.logprob == pytest.approx(a.logprob, abs=0.1), key
            same += 1
    assert same >= 32  # of 96 tokens


def test_steps_after_the_first_skip_dynamo_guards(tiny):
    """After its first call the step runs only the guards telling dynamo's graphs apart, as herd.generation's does: a
    tensor property dynamo guards on (a weight's requires_grad, which inference ignores), changed, compiles no new
    graph; the logits stay the guarded call's."""
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(compile=True))
    step, blocks = engine._compiled, [1, 2, 3]
    before = step(5, 20, blocks)
    compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    weight = model.tok_embeddings.weight
    weight.requires_grad_(not weight.requires_grad)
    try:
        after = step(5, 20, blocks)
    finally:
        weight.requires_grad_(not weight.requires_grad)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled
    torch.testing.assert_close(after, before)


def test_calls_of_a_width_after_its_first_call_the_graph_without_dynamo(tiny):
    """Once dynamo has called the step's graph for a block-table width, later calls of that width call the graph
    themselves, with their token, table and position: the logits equal those of calls through dynamo."""
    model, tok = tiny
    step, blocks = Engine(model, tok, EngineConfig(compile=True))._compiled, [1, 2, 3]
    real, widths = step._compiled, []
    step._compiled = lambda *args: widths.append(args[3].shape[0]) or real(*args)
    size = step.kv.block_size
    calls = [(5, size + 1), (6, size + 2), (7, size + 3), (9, 2 * size + 1), (8, 2 * size + 2)]
    through_dynamo = []
    for token, position in calls:  # each slot rewritten alike below
        step._direct.clear()
        through_dynamo.append(step(token, position, blocks))
    widths.clear()
    step._direct.clear()
    direct = [step(token, position, blocks) for token, position in calls]
    assert widths == [2, 3]
    assert all(torch.equal(a, b) for a, b in zip(direct, through_dynamo, strict=True))
