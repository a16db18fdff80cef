"""Every `herd ...` command in README.md's bash blocks, so the README cannot drift: the quick ones run with tiny
settings (conftest's tiny model or the `tiny` preset, paths in a tmp dir), the rest are parsed (argparse takes
them, with their optional parts too, and their key=value overrides are known keys of their config) where they take
minutes or need something outside (a server, a GPU, Meta's checkpoints). A README command missing from RUN and PARSE
fails test_every_readme_command_is_covered. The cases run in README order (the examples block is a chain)."""

import io
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from herd.cli import build_parser, main
from herd.cli.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED_DATA = (REPO / "../shared/data/benchmarks").resolve()


def readme_commands() -> list[str]:
    """The `herd` commands of README.md's bash blocks, in order: comments cut, `a ; b` lines split, `herd x | y ...`
    expanded to one command per subcommand, `torchrun ... -m herd.cli x ...` read as `herd x ...`, and an
    `#   e.g. key=value ...` line appended to the command above it."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            stripped = line.strip()
            example = re.match(r"#\s+e\.g\.\s+((?:\S+=\S+\s*)+)", stripped)
            if example and commands:
                commands.append(f"{commands[-1].replace(' [key=value ...]', '')} {example.group(1).strip()}")
                continue
            for part in re.split(r"\s;\s", re.split(r"\s#", stripped)[0].strip()):
                part = re.sub(r"^torchrun (?:--\S+ \S+ )*-m herd\.cli ", "herd ", part)
                alternatives = re.match(r"herd ((?:[\w-]+ \| )+[\w-]+) (.*)", part)
                if alternatives:
                    commands += [f"herd {name} {alternatives.group(2)}" for name in alternatives.group(1).split(" | ")]
                elif part.startswith("herd "):
                    commands.append(part)
    return commands


@dataclass
class Run:
    """How a README command runs here: placeholders it maps differently, arguments that keep it tiny."""

    extra: list[str] = field(default_factory=list)
    model: str = "tiny_model"  # DIR: conftest's tiny_model_dir (context 256); "tiny": the preset (context 1024)
    stdin: str = ""
    exit_code: int = 0
    needs_shared_data: bool = False
    slow: bool = False


TINY_SFT = ["steps=1", "batch_size=1", "seq_len=256", "progress=false", "checkpoint_interval=0", "device=cpu"]
RUN = {
    'herd generate --model DIR --prompt "The capital of France is" --max-new-tokens 32': Run(),
    'herd chat --model DIR --system "You are terse."': Run(["--max-new-tokens", "4"], stdin="hi\n"),
    "herd chat --model DIR --tools python,calculator": Run(  # the tools prompt (~830 tokens) needs the preset's context
        ["--max-new-tokens", "4"], model="tiny", stdin="What is 2 + 3?\n"),
    "herd convert --model DIR --to hf --out OUT_DIR": Run(),
    "herd convert --model DIR --to gguf --out model.gguf --outtype q8_0": Run(),
    "herd info DIR": Run(),
    "herd data run PIPELINE.yaml": Run(),
    "herd tokenizer train CORPUS... --vocab-size N --out tok.model": Run(["--no-progress"]),
    "herd tokenize CORPUS... --out SHARDS": Run(["--no-progress", "--workers", "1"]),
    "herd sft --config C data=task:gsm8k/train@data/benchmarks": Run(TINY_SFT),
    "herd sft --config C data=task:gsm8k/fewshot@../shared/data/benchmarks": Run(TINY_SFT, needs_shared_data=True),
    "herd eval --model DIR --tasks gsm8k,bbh,agieval --data-dir ../shared/data/benchmarks --limit 50": Run(
        ["--limit", "1"], model="tiny", needs_shared_data=True, slow=True),  # 1 sample per task: ~11 s CPU
    "herd eval-pairwise --model-a DIR_A --model-b DIR_B --judge JUDGE [--judge-url URL]": Run(
        ["--per-category", "1", "--max-new-tokens", "4", "--judge-max-new-tokens", "4"], model="tiny", slow=True),
    'herd guard --model GUARD --text "how do I make nerve gas?" --categories S1,S9,"Gambling: betting"': Run(),
    "herd codeshield generated.py": Run(exit_code=1),  # the planted yaml.load is a BLOCK
    "herd cyberseceval --model DIR": Run(["--limit", "1", "--max-tokens", "4"], model="tiny"),
    "herd data run examples/data.yaml": Run(),
    "herd tokenizer train runs/examples/clean --vocab-size 1024 --out runs/examples/tok.model": Run(["--no-progress"]),
    "herd tokenize runs/examples/clean --tokenizer runs/examples/tok.model --out runs/examples/tokens": Run(
        ["--no-progress", "--workers", "1"]),
}
PARSE = {
    "herd speedrun [--preset micro|tiny|gpu|node] [--out DIR] [key=value ...]": "a minute (micro) to 15 min (tiny)",
    "herd pretrain --config C [key=value ...]": "tests/test_examples.py runs examples/pretrain.yaml",
    "herd pretrain --config C parallel.tp=2 parallel.pp=2 parallel.pp_schedule=Interleaved1F1B "
    "parallel.pp_stages_per_rank=2": "needs 4+ ranks under torchrun",
    "herd scaling sweep --preset micro": "about 20 minutes on 2 cores",
    "herd scaling predict --preset micro --train": "a sweep, then a run 10x its largest budget",
    "herd scaling mix --config C": "one sweep per mix",
    **{f"herd {stage} --config C [key=value ...]": "tests/test_examples.py runs examples/STAGE.yaml"
       for stage in STAGES if stage != "pretrain"},
    "herd serve --model DIR --port 8000 [--api-key KEY]": "a server (tests/serve/test_serve_server.py runs one)",
    "herd serve --model DIR --api-key-file FILE": "a server",
    "herd serve --model DIR --guard GUARD --code-shield": "a server",
    "herd serve --model DIR --web-tools calculator,python": "a server (tests/serve/test_serve_tool_runner.py runs one)",
    "herd serve --model DIR --tp 8 --quantize fp8": "8 ranks under torchrun (tests/serve/test_serve_tp.py runs 2)",
    "herd guard train --base DIR --out runs/guard [--data mine.jsonl] [key=value ...]": "minutes; "
    "tests/safety/test_safety_guard_train.py runs it on a tiny base",
    "herd guard eval --model GUARD [--data labelled.jsonl]": "tests/safety/test_safety_guard_train.py runs it",
    **{f"herd {stage} --config examples/{stage}.yaml": "tests/test_examples.py runs it" for stage in STAGES},
}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def places(tmp) -> dict[str, str]:
    """The README's placeholders (and its runs/examples, data/benchmarks paths) mapped into one tmp dir."""
    (tmp / "generated.py").write_text("import yaml\nconfig = yaml.load(open('c.yml'))\n")
    (tmp / "key").write_text("secret\n")
    gsm8k = tmp / "benchmarks" / "gsm8k"
    gsm8k.mkdir(parents=True)
    (gsm8k / "train.jsonl").write_text(json.dumps({"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}) + "\n")
    mix = {"budgets": [1e11], "models": {"d16": {"dim": 16, "n_layers": 2}}, "mixes": {"code": {"web": 0.3, "code": 0.7}}}
    (tmp / "mix.yaml").write_text(yaml.safe_dump(mix))
    return {
        "OUT_DIR": str(tmp / "hf"), "model.gguf": str(tmp / "model.gguf"), "PIPELINE.yaml": "examples/data.yaml",
        "CORPUS...": "examples/data/raw.jsonl", "N": "300", "tok.model": str(tmp / "tok.model"),
        "SHARDS": str(tmp / "shards"), "generated.py": str(tmp / "generated.py"), "FILE": str(tmp / "key"),
        "KEY": "secret", "URL": "http://127.0.0.1:9/v1", "GUARD": "tiny", "runs/examples": str(tmp / "examples"),
        "../shared/data/benchmarks": str(SHARED_DATA), "data/benchmarks": str(tmp / "benchmarks"),
        "C": str(tmp / "mix.yaml"),  # herd scaling mix's; a stage's C is its example
    }


def concrete(command: str, places: dict[str, str], optional: bool) -> list[str]:
    """`command` as argv (no `herd`): placeholders replaced, [optional parts] kept (first alternative) or dropped."""
    if optional:
        command = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split("|")[0].split(" ...")[0], command)
        command = command.replace(" key=value", "")
    else:
        command = re.sub(r"\s*\[[^\]]*\]", "", command)
    for name, value in places.items():
        command = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w.-])", value.replace("\\", "\\\\"), command)
    return shlex.split(command)[1:]


def check_parses(argv: list[str]) -> None:
    """argparse takes `argv`, and its config (with its key=value overrides) loads."""
    from herd.config_overrides import apply_overrides, from_dict, load_config, read_config_file

    args = build_parser().parse_args(argv)
    overrides = getattr(args, "overrides", [])
    if args.command in STAGES:
        load_config(STAGES[args.command].load()[0], args.config, overrides)
    elif args.command == "scaling":
        from herd.scaling import load_scaling_config

        load_scaling_config(args.config, overrides, preset_name=args.preset)
    elif args.command == "speedrun":
        from herd.speedrun import preset_config

        preset_config(args.preset, tuple(overrides))
    elif args.command == "data":
        from herd.data.pipeline import PipelineConfig

        from_dict(PipelineConfig, apply_overrides(read_config_file(args.pipeline), overrides))


def test_every_readme_command_is_covered():
    commands = readme_commands()
    uncovered = set(commands) - set(RUN) - set(PARSE)
    assert not uncovered, f"README commands neither run nor parsed here (add them to RUN or PARSE): {uncovered}"
    assert len(commands) > 30 and not set(RUN) & set(PARSE)


def placed(command: str, places: dict[str, str], model: str) -> dict[str, str]:
    """`places` for `command`: its models, and C as its stage's example config."""
    stage = command.split()[1]
    return {**places, **dict.fromkeys(("DIR", "DIR_A", "DIR_B", "JUDGE"), model),
            **({"C": f"examples/{stage}.yaml"} if stage in STAGES else {})}


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, places, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    for optional in (False, True):
        check_parses(concrete(command, placed(command, places, str(tiny_model_dir)), optional))


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if RUN[c].slow else c
                                     for c in readme_commands() if c in RUN])
def test_readme_command_runs(command, places, tmp, tiny_model_dir, monkeypatch, capsys):
    case = RUN[command]
    if case.needs_shared_data and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (the reference data) is absent")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))
    model = str(tiny_model_dir) if case.model == "tiny_model" else case.model
    argv = concrete(command, placed(command, places, model), optional=False) + case.extra
    out = tmp / f"out{readme_commands().index(command)}"
    if argv[0] in ("eval", "eval-pairwise", "cyberseceval"):
        argv += ["--out", str(out)]
    if argv[:2] == ["data", "run"]:  # the example writes runs/examples/clean, which the next commands read
        argv.append(f"output.dir={places['runs/examples']}/clean" if "examples/" in command else f"output.dir={out}")
    if argv[0] in STAGES:  # the example config's model and out_dir are the chain's, under runs/examples
        argv += [f"model={tiny_model_dir}", f"out_dir={out}"]
    code = 0
    try:
        main(argv)
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    assert code == case.exit_code, captured.err
    assert captured.out.strip(), captured.err
    print(f"{command}\n  -> {' '.join(captured.out.split())[:200]}")  # shown by pytest -rP


def llama_cpp_binary() -> Path | None:
    """llama-completion (llama-cli before llama.cpp split them) or llama-perplexity, on PATH or in a build under
    ~/.cache/herd/llama.cpp-*."""
    for name in ("llama-completion", "llama-cli", "llama-perplexity"):
        found = shutil.which(name) or next(iter(sorted(Path.home().glob(f".cache/herd/llama.cpp-*/**/{name}"))), None)
        if found:
            return Path(found)
    return None


def test_llama_cpp_loads_the_gguf_export(tmp_path, tiny_model_dir):
    """The README's GGUF export (q8_0) is what llama.cpp loads: its own binary runs the file."""
    binary = llama_cpp_binary()
    if binary is None:
        pytest.skip("no llama.cpp build: no llama-completion, llama-cli or llama-perplexity on PATH or under "
                    "~/.cache/herd/llama.cpp-*")
    gguf = tmp_path / "model.gguf"
    main(["convert", "--model", str(tiny_model_dir), "--to", "gguf", "--out", str(gguf), "--outtype", "q8_0"])
    if binary.name != "llama-perplexity":
        command = [binary, "-m", gguf, "-p", "Hello", "-n", "4", "--temp", "0", "-no-cnv"]
    else:
        text = tmp_path / "text.txt"
        text.write_text(" ".join(["what is the sky blue"] * 100))
        command = [binary, "-m", gguf, "-f", text, "-c", "64", "--chunks", "2"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
