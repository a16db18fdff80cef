"""Characters per token on held-out text: Meta's 128K Llama 3 tokenizer vs herd-trained BPEs (4K, 16K, ...).

Trains on public text that ships offline (90% of tinyshakespeare, AGIEval passages, 90% of the Python
standard library) and measures on text it never saw (the rest of tinyshakespeare, GSM8K, the other
stdlib modules). Also reports how often tiktoken's ids (what herd runs) equal HF tokenizers' ids.
Llama 2's 32K sentencepiece tokenizer is not available offline, so the release's "up to 15% fewer
tokens than Llama 2" cannot be measured here; the ratio to Meta's 128K is printed instead.

    python benchmarks/tokenizer_compression.py [--vocab-sizes 4096 16384 32768] [--data-dir ../shared/data]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from herd.tokenizer import Tokenizer, load_tokenizer, write_bpe_file
from herd.tokenizer.train_bpe import mergeable_ranks, train_hf_bpe

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(os.__file__).parent


def jsonl_texts(path: Path, *fields: str) -> list[str]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["\n".join(str(r[f]) for f in fields if r.get(f)) for r in records]


def corpora(data_dir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(training documents, {held-out set name: documents})."""
    shakespeare = (data_dir / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(shakespeare) * 0.9)
    agieval = data_dir / "benchmarks" / "agieval"
    passages = sorted(
        {
            t
            for name in ("lsat-rc", "sat-en", "logiqa-en", "lsat-lr")
            for t in jsonl_texts(agieval / f"{name}.jsonl", "passage", "question")
        }
    )
    modules = sorted(STDLIB.glob("*.py"))
    code = [p.read_text(encoding="utf-8", errors="replace") for p in modules]
    train = shakespeare[:cut].split("\n\n") + passages + [c for i, c in enumerate(code) if i % 10]
    held_out = {
        "shakespeare (last 10%)": shakespeare[cut:].split("\n\n"),
        "gsm8k (math)": jsonl_texts(data_dir / "benchmarks" / "gsm8k" / "test.jsonl", "question", "answer"),
        "python stdlib (held-out)": [c for i, c in enumerate(code) if not i % 10],
    }
    return train, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.data_dir / "text" / "tinyshakespeare.txt").is_file():
        sys.exit(f"reference text not found under {args.data_dir}; pass --data-dir (the shared/data folder)")
    train, held_out = corpora(args.data_dir)
    print(f"training text: {sum(map(len, train)) / 1e6:.1f}M chars in {len(train)} documents")

    tokenizers: dict[str, Tokenizer] = {"Meta 128K": load_tokenizer(None)}
    agreement: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.vocab_sizes:
            start = time.perf_counter()
            hf = train_hf_bpe(train, size)
            name = f"herd {size // 1024}K" if size % 1024 == 0 else f"herd {size}"
            tokenizers[name] = Tokenizer(write_bpe_file(mergeable_ranks(hf), Path(tmp) / f"{size}.model"))
            docs = [d for texts in held_out.values() for d in texts]
            same = sum(hf.encode(d).ids == tokenizers[name].encode(d) for d in docs)
            agreement[name] = f"{same}/{len(docs)}"
            print(f"trained {name} in {time.perf_counter() - start:.1f}s")

    names = list(tokenizers)
    print("\ncharacters per token on held-out text (higher is better); ratio = tokens / Meta 128K tokens\n")
    header = f"{'held-out set':<26}{'chars':>10}" + "".join(f"{n:>14}" for n in names)
    header += "".join(f"{'ratio ' + n.split()[-1]:>12}" for n in names[1:])
    print(header)
    print("-" * len(header))
    for set_name, docs in list(held_out.items()) + [("all", [d for v in held_out.values() for d in v])]:
        chars = sum(map(len, docs))
        counts = {n: sum(map(len, tok.encode_batch(docs))) for n, tok in tokenizers.items()}
        row = f"{set_name:<26}{chars:>10}" + "".join(f"{chars / counts[n]:>14.3f}" for n in names)
        row += "".join(f"{counts[n] / counts[names[0]]:>12.3f}" for n in names[1:])
        print(row)
    print(
        "\nheld-out documents where tiktoken's ids equal HF tokenizers' ids: "
        + ", ".join(f"{n}: {a}" for n, a in agreement.items())
    )
    print("Llama 2's 32K sentencepiece tokenizer is not available offline: no Llama 2 column.")


if __name__ == "__main__":
    main()
