"""Guardrails in `herd serve`: a tiny guard trained by the recipe (a few seconds, on very distinct texts) makes a
live server refuse unsafe input and pass safe input through the `openai` client, counts its decisions in
/metrics, and holds streamed replies back until checked."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import torch

import herd
from herd.post.sft import SFTConfig
from herd.safety.guard_recipe import Example, build_base, train_guard, write_sft_data
from herd.serve.guardrails import Guardrails, code_blocks
from herd.safety.llama_guard import LlamaGuard
from herd.safety.taxonomy import LLAMA_GUARD_2
from herd.serve.request import StepOutput
from tests.live_server import live_server

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from herd.serve.server import create_app

TAXONOMY = LLAMA_GUARD_2[:1]
VIOLENT = ["stab", "kill", "murder", "shoot", "strangle", "knife", "gun", "blood"]
CALM = ["bread", "flour", "butter", "garden", "flowers", "tea", "music", "poem"]


def _text(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(24))


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory):
    """A guard trained by the recipe for 40 steps: violent word salads are unsafe under S1 Violent Crimes, calm
    ones safe."""
    torch.manual_seed(0)
    tmp, rng = tmp_path_factory.mktemp("guard"), random.Random(0)
    examples = [Example(_text(rng, VIOLENT if i % 2 else CALM), "Violent Crimes" if i % 2 else None)
                for i in range(200)]
    data = write_sft_data([(e, TAXONOMY) for e in examples], tmp / "guard.jsonl")
    base = build_base(data, tmp, vocab_size=400, dim=32, n_layers=1, max_seq_len=1024)
    config = SFTConfig(out_dir=str(tmp / "run"), model=str(base), data=str(data), steps=40, batch_size=8,
                       seq_len=512, device="cpu", progress=False, checkpoint_interval=0)
    config.optim.lr, config.optim.warmup_steps = 1e-2, 3
    return train_guard(config)


def _metric(url: str, line_start: str) -> float:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(line_start))


def test_server_refuses_unsafe_input_and_passes_safe(guard_dir):
    model, tok = herd.load("tiny")
    guardrails = Guardrails(LlamaGuard.load(guard_dir), taxonomy=TAXONOMY)
    app = create_app(model, tok, model_name="tiny", guardrails=guardrails)
    rng = random.Random(7)
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny", max_tokens=4, messages=[
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": _text(rng, VIOLENT)}])
        assert refused.value.code == "content_filter"
        assert "S1: Violent Crimes" in refused.value.message
        reply = client.chat.completions.create(model="tiny", max_tokens=4, messages=[
            {"role": "user", "content": _text(rng, CALM)}])
        assert reply.choices[0].finish_reason in ("stop", "length", "content_filter")
        stream = client.chat.completions.create(model="tiny", max_tokens=6, stream=True, messages=[
            {"role": "user", "content": _text(rng, CALM)}])
        reasons = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
        assert len(reasons) == 1
        assert _metric(url, 'herd_guard_decisions_total{stage="input",verdict="unsafe"}') == 1
        assert _metric(url, 'herd_guard_decisions_total{stage="input",verdict="safe"}') == 2
        assert _metric(url, 'herd_guard_decisions_total{stage="output"') >= 2  # each reply judged


async def _pieces(texts: list[str]):
    for i, text in enumerate(texts):
        yield 0, StepOutput("r", i, text, finish_reason="length" if i == len(texts) - 1 else None)


def _screen(guardrails: Guardrails, texts: list[str]) -> list[StepOutput]:
    async def run() -> list[StepOutput]:
        return [out async for _, out in guardrails.screen([], _pieces(texts), choices=1, stream=True)]
    return asyncio.run(run())


def test_streamed_reply_is_released_only_once_checked(guard_dir):
    guardrails = Guardrails(LlamaGuard.load(guard_dir), taxonomy=TAXONOMY, check_every=4)
    rng = random.Random(3)
    calm = [w + " " for w in _text(rng, CALM).split()][:12]
    passed = _screen(guardrails, calm)
    assert "".join(o.text for o in passed) == "".join(calm) and passed[-1].finish_reason == "length"
    violent = calm[:4] + [w + " " for w in _text(rng, VIOLENT).split()][:20]
    out = _screen(guardrails, violent)
    assert out[-1].finish_reason == "content_filter" and "S1: Violent Crimes" in out[-1].text
    released = len(out) - 1  # only whole chunks the guard passed went out, never the refused one
    assert released % 4 == 0 and released < len(violent)
    assert [o.text for o in out[:-1]] == violent[:released]


def test_code_shield_refuses_insecure_code_in_replies():
    guardrails = Guardrails(code_shield=True)
    insecure = "Here you go:\n```python\nimport yaml\nconfig = yaml.load(text)\n```\n"
    assert code_blocks(insecure) == [("python", "import yaml\nconfig = yaml.load(text)\n")]
    out = _screen(guardrails, [insecure[:20], insecure[20:]])
    assert out[-1].finish_reason == "content_filter" and "Code Shield" in out[-1].text
    secure = "```py\nimport yaml\nconfig = yaml.safe_load(text)\n```"
    assert "".join(o.text for o in _screen(guardrails, [secure])) == secure
