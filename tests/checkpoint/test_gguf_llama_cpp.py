"""herd's GGUF export checked by llama.cpp itself (issue 29 item 2), on two models: a tiny model pretrained a few
steps by herd with a BPE herd trained, and a random Llama 3-architecture model (3.1 RoPE scaling) with Meta's 128K
tokenizer. llama.cpp (`llama-server`, `llama-perplexity` of benchmarks/llama_cpp_build.py's cached build) loads the
f32, f16, bf16 and q8_0 files; its token ids for held-out text equal herd's; its greedy continuations equal herd's
for f32, and for f16/bf16 up to a first divergence where herd's own f32 logits are a near tie; its perplexity on
held-out text, chunked as `llama-perplexity` does, is within 0.5% (f32) / 2% (q8_0) of herd's.
Needs the llama.cpp build (`python benchmarks/llama_cpp_build.py`, not part of CI): skipped without it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import herd
import herd.checkpoint as ckpt
from herd.generation import generate_tokens
from herd.model import Transformer
from herd.tokenizer import Tokenizer
from herd.tokenizer.train_bpe import train_tokenizer
from herd.train.pretrain import pretrain
from herd.train.token_shards import tokenize_corpus
from llama_cpp_build import binaries
from tests.checkpoint.test_checkpoint import random_model, small_config
from tests.checkpoint.test_checkpoint_gguf import TRICKY_TEXTS
from tests.live_server import free_port, wait_healthy
from tests.tiny import tiny_config, write_texts

LLAMA_CPP = binaries()
pytestmark = [
    pytest.mark.llama_cpp,
    pytest.mark.slow,
    pytest.mark.skipif(LLAMA_CPP is None, reason="no llama.cpp build: run python benchmarks/llama_cpp_build.py"),
]

STDLIB = Path(json.__file__).resolve().parents[1]
TRAIN_MODULES = ("argparse.py", "textwrap.py", "shlex.py", "string.py", "fractions.py", "calendar.py")
HELD_OUT = (STDLIB / "difflib.py").read_text(encoding="utf-8")[:12_000]  # text neither tokenizer nor model saw
PROMPTS = ("def main(", "The quick brown fox", "    return self.", "import os\nimport sys\n", "class Parser:")
NEW_TOKENS = 12
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
PPL_TOLERANCE = {"f32": 0.005, "q8_0": 0.02}
# A 16-bit export rounds each weight by up to half a unit in the last place (f16: 2^-11, bf16: 2^-8, relative);
# the logits move by a few such units of their own scale, so greedy decoding may only part where herd's f32 top
# two logits are closer than that.
ROUNDING = {"f16": 2.0**-11, "bf16": 2.0**-8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model pretrained 20 steps by herd on stdlib source, with a 1,000-rank BPE herd trained on it."""
    tmp = tmp_path_factory.mktemp("trained")
    texts = [(STDLIB / name).read_text(encoding="utf-8") for name in TRAIN_MODULES]
    tok = train_tokenizer(texts, 1000, tmp / "tok.model", show_progress=False)
    shards = {}
    for split, chunk in (("train", texts[:-1]), ("val", texts[-1:])):
        tokenize_corpus([write_texts(tmp / f"{split}.jsonl", chunk)], tok, tmp / split, 1, show_progress=False)
        shards[split] = str(tmp / split)
    overrides = ("steps=20", "batch_size=8", "seq_len=64", "eval_interval=0", "checkpoint_interval=0",
                 "export_format=herd", "optim.lr=1e-2")
    return pretrain(tiny_config(shards, tmp / "run", *overrides)).model_dir


@pytest.fixture(scope="module")
def meta(tmp_path_factory, meta_tokenizer) -> Path:
    """A random Llama 3.1-architecture model (RoPE scaling, 128,256 ids) with Meta's tokenizer; its query and key
    weights scaled up, so that attention is sharp and a wrong position encoding changes the logits (at the init's
    scale attention is near uniform whatever RoPE does)."""
    model = random_model(small_config(vocab_size=meta_tokenizer.n_words, max_seq_len=256))
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wq.weight.mul_(10)
            layer.attention.wk.weight.mul_(10)
    return herd.save(model, meta_tokenizer, tmp_path_factory.mktemp("meta") / "model")


@pytest.fixture(scope="module", params=["trained", "meta"])
def source(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict]:
    """(checkpoint, outtype) -> the base URL of a llama-server on its GGUF export, started on first use."""
    running: dict[tuple[Path, str], tuple[subprocess.Popen, str]] = {}

    def serve(src: Path, outtype: str) -> str:
        if (src, outtype) not in running:
            gguf_file = export(src, outtype, tmp_path_factory.mktemp("gguf"))
            port = free_port()
            proc = subprocess.Popen([str(LLAMA_CPP["llama-server"]), "-m", str(gguf_file), "--port", str(port),
                                     "-t", "2", "-c", "256", "-np", "1", "--no-warmup"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running[src, outtype] = proc, f"http://127.0.0.1:{port}"
            wait_healthy(running[src, outtype][1], proc)
        return running[src, outtype][1]

    yield serve
    for proc, _ in running.values():
        proc.terminate()
        proc.wait(timeout=30)


def export(src: Path, outtype: str, out: Path) -> Path:
    return ckpt.convert(src, out / f"model-{outtype}.gguf", to="gguf", outtype=outtype)


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def llama_greedy(url: str, prompt: list[int]) -> list[int]:
    body = {"prompt": prompt, "n_predict": NEW_TOKENS, "temperature": 0, "ignore_eos": True, "return_tokens": True,
            "cache_prompt": False}
    return post(url, "/completion", body)["tokens"]


def herd_greedy(model: Transformer, prompt: list[int]) -> list[int]:
    return generate_tokens(model, [prompt], max_new_tokens=NEW_TOKENS)[0].tokens


def prompt_ids(tok: Tokenizer) -> list[list[int]]:
    return [tok.encode(p, bos=True) for p in PROMPTS]


@torch.no_grad()
def chunked_perplexity(model: Transformer, ids: list[int], n_ctx: int, chunks: int) -> float:
    """Perplexity as `llama-perplexity -c n_ctx --chunks chunks` computes it: chunk i is ids[i*n_ctx:(i+1)*n_ctx]
    (ids = BOS + the text's ids) with its first id set to BOS; the last n_ctx/2 - 1 next-token predictions count."""
    first, nll, count = n_ctx // 2, 0.0, 0
    for i in range(chunks):
        chunk = torch.tensor(ids[:1] + ids[i * n_ctx + 1 : (i + 1) * n_ctx])
        logp = torch.log_softmax(model(chunk[None]).double()[0], -1)
        targets = chunk[first + 1 :]
        nll -= logp[first:-1].gather(-1, targets[:, None]).sum().item()
        count += len(targets)
    return math.exp(nll / count)


def llama_perplexity(gguf_file: Path, text_file: Path, n_ctx: int, chunks: int) -> float:
    """`llama-perplexity`'s final estimate. Its logger writes from a thread that exit does not wait for, so the last
    lines can be lost (llama.cpp's common/log.cpp leaks the logger on purpose): a run that exits 0 without them
    is repeated."""
    cmd = [str(LLAMA_CPP["llama-perplexity"]), "-m", str(gguf_file), "-f", str(text_file), "-c", str(n_ctx),
           "-b", str(n_ctx), "--chunks", str(chunks), "-t", "2"]
    for _ in range(5):
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"llama-perplexity failed:\n{run.stderr[-3000:]}"
        found = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stderr)
        if found:
            return float(found.group(1))
    pytest.fail(f"llama-perplexity printed no final estimate in 5 runs:\n{run.stderr[-3000:]}")


def test_llama_cpp_tokenizes_like_herd(source, servers):
    tok = Tokenizer(source / "tokenizer.model")
    url = servers(source, "f32")
    for text in (HELD_OUT, *TRICKY_TEXTS):
        assert post(url, "/tokenize", {"content": text, "add_special": False})["tokens"] == tok.encode(text)


def test_f32_greedy_continuations_equal_herds(source, servers):
    model, tok = herd.load(source)
    url = servers(source, "f32")
    for prompt in prompt_ids(tok):
        assert llama_greedy(url, prompt) == herd_greedy(model, prompt), tok.decode(prompt)


@pytest.mark.parametrize("outtype", ["f16", "bf16"])
def test_16_bit_greedy_parts_from_herd_only_on_a_near_tie(source, servers, outtype):
    """Where llama.cpp's 16-bit greedy path first differs from herd's f32 one, herd's f32 logits of the two
    tokens must be within the rounding of the weights (printed: each divergence and its logit margin)."""
    model, tok = herd.load(source)
    url = servers(source, outtype)
    for prompt in prompt_ids(tok):
        ours, theirs = herd_greedy(model, prompt), llama_greedy(url, prompt)
        step = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
        if step is None:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ours[:step]]))[0, -1]
        margin = (logits[ours[step]] - logits[theirs[step]]).item()
        bound = 8 * ROUNDING[outtype] * logits.abs().max().item()
        print(f"{outtype} {tok.decode(prompt)!r}: parts at new token {step}, f32 logit margin {margin:.2e} "
              f"(bound {bound:.2e})", file=sys.stderr)
        assert 0 <= margin <= bound, (tok.decode(prompt), step, margin, bound)


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_perplexity_matches_herds(source, outtype, tmp_path):
    model, tok = herd.load(source)
    n_ctx = 64 if model.config.max_seq_len <= 64 else 128
    ids = tok.encode(HELD_OUT, bos=True)
    chunks = min(4, len(ids) // n_ctx)
    text_file = tmp_path / "held_out.txt"
    text_file.write_text(HELD_OUT, encoding="utf-8")
    ours = chunked_perplexity(model, ids, n_ctx, chunks)
    theirs = llama_perplexity(export(source, outtype, tmp_path), text_file, n_ctx, chunks)
    print(f"{source.name} {outtype}: perplexity herd {ours:.4f}, llama.cpp {theirs:.4f}", file=sys.stderr)
    assert abs(theirs - ours) / ours <= PPL_TOLERANCE[outtype], (ours, theirs)
