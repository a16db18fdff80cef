"""The serving engine against herd's own batch generation: same greedy tokens whatever the batching."""

from __future__ import annotations

import pytest
import torch

import herd
from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.model_runner import Segment, _cuts, run_segments


@pytest.fixture(scope="module")
def tiny():
    return herd.load("tiny")


def _run(engine: Engine, arrivals: dict[int, list[tuple[str, list[int], RequestParams]]]) -> dict[str, list]:
    """Step `engine`, adding requests at the steps given; every request's outputs by id."""
    outputs: dict[str, list] = {}
    step = 0
    while step <= max(arrivals) or engine.has_unfinished():
        for request_id, prompt, params in arrivals.get(step, []):
            engine.add_request(request_id, prompt, params)
            outputs[request_id] = []
        for out in engine.step():
            outputs[out.request_id].append(out)
        step += 1
        assert step < 2000, "engine did not finish"
    return outputs


def _tokens(outs: list) -> list[int]:
    return [out.token_id for out in outs if out.token_id is not None]


def _prompts(tok) -> list[list[int]]:
    shared = tok.encode("A shared system preamble that many requests start with. " * 3, bos=True)
    return [
        tok.encode("Hello there, how are you today?", bos=True),
        tok.encode("Tell me a long story about the sea. " * 8, bos=True),
        shared + tok.encode(" First question?"),
        shared + tok.encode(" A second, rather different and longer question?"),
        shared + tok.encode(" First question?"),
    ]


@pytest.fixture(scope="module")
def greedy_reference(tiny):
    model, tok = tiny
    return [generate_tokens(model, [p], max_new_tokens=16, stop_ids=tok.stop_ids)[0].tokens for p in _prompts(tok)]


@pytest.mark.parametrize("kv_tokens", [4096, 128], ids=["roomy", "preempting"])
def test_greedy_matches_generate_tokens_with_staggered_arrivals(tiny, greedy_reference, kv_tokens):
    model, tok = tiny
    prompts, expected = _prompts(tok), greedy_reference
    # Small blocks, a small step budget (chunked prefill) and, in the second case, too few blocks for everyone.
    engine = Engine(model, tok, EngineConfig(block_size=4, kv_tokens=kv_tokens, max_running=4, max_step_tokens=16))
    params = RequestParams(max_tokens=16)
    arrivals = {0: [("0", prompts[0], params), ("2", prompts[2], params)], 3: [("1", prompts[1], params)],
                9: [("3", prompts[3], params)], 24: [("4", prompts[4], params)]}
    outputs = _run(engine, arrivals)
    for i, want in enumerate(expected):
        assert _tokens(outputs[str(i)]) == want, f"request {i}"
    assert engine.scheduler.cached_tokens > 0  # the shared preamble came from the prefix cache
    assert engine.kv_usage == 0
    assert (engine.scheduler.preemptions > 0) == (kv_tokens < 1000)


def test_prefix_cache_reuses_blocks_without_changing_results(tiny):
    model, tok = tiny
    prompt = _prompts(tok)[2]
    engine = Engine(model, tok, EngineConfig(block_size=4))
    first = _tokens(_run(engine, {0: [("a", prompt, RequestParams(max_tokens=8))]})["a"])
    before = engine.scheduler.cached_tokens
    again = _tokens(_run(engine, {0: [("b", prompt, RequestParams(max_tokens=8))]})["b"])
    assert again == first
    assert engine.scheduler.cached_tokens - before == (len(prompt) - 1) // 4 * 4


def test_seeded_sampling_and_logprobs_match_generate_tokens(tiny):
    model, tok = tiny
    prompts = _prompts(tok)[:2]
    sampled = {"temperature": 0.8, "top_p": 0.9, "top_k": 50}
    expected = [
        generate_tokens(model, [p], max_new_tokens=16, seed=7 + i, stop_ids=tok.stop_ids, logprobs=True, **sampled)[0]
        for i, p in enumerate(prompts)
    ]
    engine = Engine(model, tok, EngineConfig(block_size=8))
    requests = [(str(i), p, RequestParams(max_tokens=16, seed=7 + i, logprobs=True, top_logprobs=3, **sampled))
                for i, p in enumerate(prompts)]
    outputs = _run(engine, {0: requests[:1], 2: requests[1:]})
    for i, want in enumerate(expected):
        outs = [out for out in outputs[str(i)] if out.token_id is not None]
        assert [out.token_id for out in outs] == want.tokens
        assert [out.logprob for out in outs] == pytest.approx(want.logprobs, abs=1e-4)
        for out in outs:
            assert len(out.top_logprobs) == 3
            assert out.top_logprobs[0][1] >= out.logprob - 1e-6


def test_stops_and_finish_reasons(tiny):
    model, tok = tiny
    prompt = _prompts(tok)[0]
    free = _tokens(_run(Engine(model, tok), {0: [("x", prompt, RequestParams(max_tokens=12))]})["x"])
    engine = Engine(model, tok)
    text = tok.decode(free)
    stop_string = text[len(tok.decode(free[:4])):][:3]
    outputs = _run(engine, {0: [
        ("length", prompt, RequestParams(max_tokens=5)),
        ("token", prompt, RequestParams(max_tokens=12, stop_token_ids=(free[3],))),
        ("string", prompt, RequestParams(max_tokens=12, stop=(stop_string,))),
    ]})
    assert _tokens(outputs["length"]) == free[:5] and outputs["length"][-1].finish_reason == "length"
    assert _tokens(outputs["token"]) == free[:3] and outputs["token"][-1].finish_reason == "stop"
    streamed = "".join(out.text for out in outputs["string"])
    assert streamed == text[: text.index(stop_string)]
    assert outputs["string"][-1].finish_reason == "stop"
    assert all(out.finish_reason is None for outs in outputs.values() for out in outs[:-1])


def test_abort_frees_blocks_and_bad_requests_raise(tiny):
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(block_size=4))
    engine.add_request("a", _prompts(tok)[1], RequestParams(max_tokens=100))
    engine.step()
    assert engine.kv_usage > 0 and engine.num_running == 1
    engine.abort("a")
    assert engine.kv_usage == 0 and not engine.has_unfinished()
    with pytest.raises(HerdError, match="over the model's context"):
        engine.add_request("b", [1] * 1000, RequestParams(max_tokens=100))
    with pytest.raises(HerdError, match="empty"):
        engine.add_request("c", [], RequestParams(max_tokens=1))
    with pytest.raises(HerdError, match="max_tokens"):
        RequestParams(max_tokens=0)
    with pytest.raises(HerdError, match="top_p"):
        RequestParams(max_tokens=1, top_p=0)


def test_mixed_step_equals_its_segments_run_apart(tiny):
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(block_size=4))
    prompts = _prompts(tok)
    for i, prompt in enumerate(prompts[:3]):
        engine.add_request(str(i), prompt, RequestParams(max_tokens=8))
    engine.step()  # all three prefilled; the next step would decode them
    seqs = engine.scheduler.running
    for seq in seqs:
        engine.scheduler._grow(seq)
    decodes = [Segment(seq.tokens[-1:], seq.num_computed, seq.blocks, True) for seq in seqs]
    first = seqs[0]  # its prompt again from 0 as a prefill chunk, beside the decodes
    prefill = Segment(first.tokens[:-1], 0, first.blocks, True)
    ready, logits = run_segments(model, engine.kv, [*decodes, prefill])
    assert sorted(ready) == [0, 1, 2, 3]
    apart = {i: run_segments(model, engine.kv, [segment])[1][0] for i, segment in enumerate([*decodes, prefill])}
    for row, i in enumerate(ready):
        assert torch.allclose(logits[row], apart[i], atol=1e-4), f"segment {i}"


def test_a_step_is_one_call_of_the_models_forward(tiny):
    """The engine runs the model's own forward on the paged cache, once per step (no block loop of its own)."""
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(block_size=4))
    engine.add_request("a", _prompts(tok)[0], RequestParams(max_tokens=2))
    calls = []
    handle = model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    try:
        engine.step()
    finally:
        handle.remove()
    assert len(calls) == 1 and type(calls[0]["context"]).__name__ == "PagedContext"


def test_decodes_split_into_attention_groups_by_context_length():
    assert _cuts([]) == [0]
    assert _cuts([3, 3, 4, 4]) == [0, 4]  # alike: one group
    assert _cuts([2, 2, 2, 2, 40, 40, 40, 40]) == [0, 4, 8]  # far apart: no short context padded to 40 blocks


def test_engine_config_lives_with_the_engine_configuration():
    """EngineConfig is the engine's configuration (herd.serve.config), not part of the scheduler, and checks itself."""
    assert EngineConfig.__module__ == "herd.serve.config"
    with pytest.raises(HerdError, match="max_step_tokens \\(4\\) must be at least max_running \\(8\\)"):
        EngineConfig(max_running=8, max_step_tokens=4)
