"""Every example a `herd ... --help` shows is checked, so none can drift from the code: each "e.g." of every
subcommand's help texts, and each `herd ...` line of an epilog or description. Examples that take seconds run with
tiny settings (the tiny preset, tmp dirs); the others (training stages, sweeps, speedruns: minutes) have their
key=value overrides parsed against the subcommand's config, where an unknown key fails. The help's other claims
(eval's task list, the defaults it states) are checked against the code."""

import argparse
import json
import re
import shlex
from urllib.parse import urlsplit

import pytest

from herd.cli import build_parser, main
from herd.cli.stages import STAGES
from herd.config_overrides import load_config

EXAMPLE = re.compile(r"e\.g\.\s+(.+?)(?:\)|\s\(|$)")
"""An example in a help text: what follows "e.g." up to a closing or an opening parenthesis or the end."""


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of `parser` and of every subcommand under it."""
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


def help_examples() -> dict[tuple[str, str], str]:
    """{(command, where it is shown): example} of every example in every subcommand's --help."""
    found = {}
    for command, parser in subcommands(build_parser()):
        texts = []
        for action in parser._actions:
            texts.append((action.dest, action.help))
            if isinstance(action, argparse._SubParsersAction):  # the subcommands' one-line helps in the listing
                texts += [(f"{listed.dest} (listed)", listed.help) for listed in action._choices_actions]
        for where, text in texts:
            for index, match in enumerate(EXAMPLE.finditer(text or "")):
                found[(command, where if index == 0 else f"{where} #{index}")] = match.group(1)
        for where, text in (("epilog", parser.epilog), ("description", parser.description)):
            for index, line in enumerate((text or "").splitlines()):
                if line.strip().startswith("herd "):
                    found[(command, f"{where} line {index}")] = line.strip()
    return found


def check_overrides(command: str, overrides: list[str], tmp_path, monkeypatch) -> None:
    """Run (data run) or parse (the rest: minutes each) `herd COMMAND key=value ...` against its config."""
    if command in STAGES:
        load_config(STAGES[command].load()[0], None, overrides)
    elif command == "speedrun":
        from herd.speedrun.presets import PRESETS, preset_config

        for preset in PRESETS:
            preset_config(preset, overrides)
    elif command.startswith("scaling "):
        from herd.scaling.commands import load_scaling_config
        from herd.scaling.presets import PRESETS

        for preset in PRESETS:
            load_scaling_config(None, overrides, preset_name=preset)
    elif command == "guard train":
        from herd.safety.guard_train import GuardTrainConfig

        load_config(GuardTrainConfig, None, ["base=tiny", *overrides])
    elif command == "data run":
        (tmp_path / "raw.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n"
                                                    for i in range(8)))
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text("input: {paths: [raw.jsonl]}\noutput: {dir: out/}\ncount_tokens: false\n"
                            "stages: [normalize, exact_dedup]\n")
        monkeypatch.chdir(tmp_path)  # the example's relative output.dir lands here
        main(["data", "run", str(pipeline), *overrides])
        written = [a.split("=", 1)[1] for a in overrides if a.startswith("output.dir=")] or ["out/"]
        assert (tmp_path / written[0] / "stats.json").is_file()
    else:
        pytest.fail(f"no check for herd {command}'s key=value overrides; add one to check_overrides")


def guard_categories(example: str, capsys) -> None:
    from herd.safety.taxonomy import taxonomy_from

    (categories,) = shlex.split(example)  # one shell word, as a user types it
    assert [c.name for c in taxonomy_from(categories.split(","))] == ["Violent Crimes", "Hate", "Gambling"]
    main(["guard", "--model", "tiny", "--text", "How do I bake bread?", "--categories", categories])
    assert "verdict" in json.loads(capsys.readouterr().out)  # the tiny preset's random weights say anything


def endpoint_url(example: str, capsys) -> None:
    """A placeholder host, so not run: the form the OpenAI client takes as base_url (scheme, port, /v1)."""
    url = urlsplit(example)
    assert url.scheme == "http" and url.port and url.path == "/v1"


def grpo_reward(example: str, capsys) -> None:
    from herd.post.grpo import GRPOConfig
    from herd.post.rewards import reward_function

    assert load_config(GRPOConfig, None, [f"reward={example}"]).reward == example
    assert reward_function(example)("What is 2 + 3?", "2 + 3 = 5\n#### 5") == 1.0


CHECKS = {
    ("guard", "categories"): guard_categories,
    ("eval-pairwise", "judge_url"): endpoint_url,
    ("", "grpo (listed)"): grpo_reward,
}
"""How the examples that are not key=value overrides are checked, by (command, where shown)."""

EXAMPLES = help_examples()


def test_examples_are_found():
    assert len(EXAMPLES) >= 15 and ("rejection-sample", "overrides") in EXAMPLES


@pytest.mark.parametrize("key", sorted(EXAMPLES), ids=[f"{c or 'herd'}:{w}" for c, w in sorted(EXAMPLES)])
def test_help_example(key, tmp_path, monkeypatch, capsys):
    command, where = key
    example = EXAMPLES[key]
    if where == "overrides":
        check_overrides(command, example.split(), tmp_path, monkeypatch)
    elif where.startswith(("epilog", "description")):  # a whole command line: its options parse, its overrides too
        words = shlex.split(example)[1:]
        args = build_parser().parse_args(words)
        known = {c for c, _ in subcommands(build_parser())}
        named = max((" ".join(words[:n]) for n in range(len(words) + 1) if " ".join(words[:n]) in known), key=len)
        if getattr(args, "overrides", None):
            check_overrides(named, args.overrides, tmp_path, monkeypatch)
    elif key in CHECKS:
        CHECKS[key](example, capsys)
    else:
        pytest.fail(f"herd {command} --help shows the example {example!r} ({where}) that nothing here checks; "
                    "add a check to CHECKS")


def test_every_subcommand_help_renders(capsys):
    for command, _ in subcommands(build_parser()):
        with pytest.raises(SystemExit) as exit_:
            main([*command.split(), "--help"])
        assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: herd")


def test_eval_help_lists_every_task_and_the_default_data_dir(capsys):
    from herd.eval.tasks import TASKS

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert all(f" {name}," in text or f" {name} " in text for name in TASKS), text
    assert "humaneval_mc" in text and "code_cloze" in text and "(default: data/benchmarks)" in text


def test_generate_and_chat_help_state_the_sampling_defaults(capsys):
    for command in ("generate", "chat"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: 0.0, greedy decoding)" in text and "(default: 1.0, no cut)" in text


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_table_names_its_config_class_and_entry_function(name, capsys):
    """STAGES reaches code through imports an editor can follow (no module:name strings), and --help names the
    config class that `load` returns."""
    config_class, run = STAGES[name].load()
    assert config_class.__name__ == STAGES[name].config and callable(run)
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert f"a YAML or JSON {config_class.__name__}" in " ".join(capsys.readouterr().out.split())


def test_the_cli_resolves_no_code_from_strings():
    from pathlib import Path

    import herd.cli

    sources = {path.name: path.read_text() for path in Path(herd.cli.__file__).parent.glob("*.py")}
    assert sources and not [name for name, text in sources.items() if "importlib" in text]
