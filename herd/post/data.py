"""Post-training data: chat dialogs (`messages`) and preference pairs (prompt, chosen, rejected; ranked triples).

Reads JSONL files, Hugging Face `datasets` saved to disk and herd.eval tasks (`task:NAME[/SPLIT][@DATA_DIR]`, as
dialogs); a malformed record is a HerdError naming where it is.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.errors import HerdError
from herd.tokenizer import Message, parse_tools, validate_messages

TASK_PREFIX = "task:"
TASK_SPLITS = ("train", "fewshot", "eval")
"""A task's split as SFT data: its training split, its few-shot pools, or its evaluation samples."""
DEFAULT_TASK_DATA = "data/benchmarks"
"""Where task files are when a spec names no directory (`herd eval`'s default)."""

RANKED = ("edited", "chosen", "rejected")
"""Preference fields from best to worst; `edited` is optional (Llama 3's human-edited responses)."""


Reply = str | Message
"""An assistant reply: its text, or an assistant message that calls tools ({"role": "assistant", "content",
"tool_calls"})."""


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: the same context answered better (`chosen`) and worse (`rejected`)."""

    prompt: list[Message]
    """The dialog so far, ending with a user or ipython turn (earlier assistant tool calls kept)."""
    chosen: Reply
    """The preferred assistant reply."""
    rejected: Reply
    """The dispreferred assistant reply."""
    source: str = ""
    """Where the record came from (file:line), for messages."""
    tools: list[Any] | None = None
    """The tools the dialog offers (the record's "tools", as `ToolDialog`'s): rendered with Meta's tool prompt."""
    date: datetime.date | None = None
    """The tool system prompt's Today Date (the record's ISO "date")."""


@dataclass(frozen=True)
class ToolDialog:
    """A training dialog that offers tools: the record's "tools" (a list `herd.tokenizer.parse_tools` reads, as in
    TRL's `tools` column) and optional "date" (ISO, the tool system prompt's Today Date) beside its "messages"."""

    messages: list[Message]
    tools: list[Any]
    date: datetime.date | None = None


def records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, record) of each record of a JSONL file, a `datasets.save_to_disk` directory or a task spec
    (`task:gsm8k/train@DIR`, records {"messages": [...]}), in order."""
    if isinstance(path, str) and path.startswith(TASK_PREFIX):
        for index, dialog in enumerate(task_dialogs(*parse_task_spec(path))):
            yield f"{path}[{index}]", {"messages": dialog}
        return
    path = Path(path)
    if path.is_dir():
        yield from _dataset_records(path)
        return
    if not path.is_file():
        raise HerdError(f"data file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise HerdError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def parse_task_spec(spec: str) -> tuple[str, str, Path]:
    """(task name, split, data dir) of `task:NAME[/SPLIT][@DATA_DIR]`; the split defaults to train."""
    body, _, data_dir = spec.removeprefix(TASK_PREFIX).partition("@")
    name, _, split = body.partition("/")
    split = split or "train"
    if not name or split not in TASK_SPLITS:
        raise HerdError(f"bad task data spec {spec!r}: write task:NAME[/SPLIT][@DATA_DIR], SPLIT one of "
                        f"{', '.join(TASK_SPLITS)}, e.g. task:gsm8k/train@data/benchmarks")
    return name, split, Path(data_dir or DEFAULT_TASK_DATA)


def task_dialogs(name: str, split: str, data_dir: str | Path) -> list[list[Message]]:
    """SFT dialogs of a herd.eval task's split: each sample's 0-shot chat prompt (as `herd eval --chat` renders it,
    with the task's description) answered by its gold answer (GSM8K: the chain of thought ending in its number).
    Split fewshot pools the few-shot examples of every group of the eval samples (so it reads those too)."""
    from herd.eval.data import MissingData
    from herd.eval.task import render_chat
    from herd.eval.tasks import get_task

    task, data_dir = get_task(name), Path(data_dir)
    try:
        if split == "train":
            samples = task.train_samples(data_dir)
        elif split == "eval":
            samples = task.samples(data_dir)
        else:
            groups = dict.fromkeys(s.group for s in task.samples(data_dir))
            pooled = {(s.question, s.answer): s for g in groups for s in task.fewshot_pool(data_dir, g)}  # may repeat
            samples = list(pooled.values())
    except MissingData as error:
        raise HerdError(f"{error}; or name the directory holding {name}'s files: task:{name}/{split}@DIR") from None
    return [[*render_chat(task, s, [], task.description(data_dir, s.group)), {"role": "assistant", "content": s.answer}]
            for s in samples]


def _dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    if not (path / "dataset_info.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise HerdError(f"{path} is a directory but not a dataset saved by datasets.save_to_disk; pass a JSONL file")
    try:
        import datasets
    except ImportError:
        raise HerdError(f"reading {path} needs the datasets package: pip install datasets") from None
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise HerdError(f"{path} holds splits {', '.join(data)}; pass the split's directory, e.g. {path}/<split>")
        data = data["train"]
    for index, record in enumerate(data):
        yield f"{path}[{index}]", record


def read_chats(path: str | Path) -> list[list[Message] | ToolDialog]:
    """The dialogs of a chat file: records {"messages": [{"role", "content"}, ...]} with at least one assistant turn
    (assistant "tool_calls" kept); a record with "tools" is a `ToolDialog`."""
    dialogs: list[list[Message] | ToolDialog] = []
    for where, record in records(path):
        messages = _field(record, "messages", where)
        _check_messages(messages, where)
        if not any(m["role"] == "assistant" for m in messages):
            raise HerdError(f"{where}: the dialog has no assistant message, so nothing to train on; add one or drop it")
        kept = [_kept(m) for m in messages]
        dialogs.append(ToolDialog(kept, *_tools_and_date(record, where)) if "tools" in record else kept)
    if not dialogs:
        raise HerdError(f"{path} holds no records")
    return dialogs


def _kept(message: Message) -> Message:
    """A message's role and content, and its tool calls if it makes any (other fields dropped)."""
    calls = {"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {}
    return {"role": message["role"], "content": message["content"], **calls}


def _tools_and_date(record: Mapping[str, Any], where: str) -> tuple[list[Any], datetime.date | None]:
    """A record's "tools" (checked by `parse_tools`) and its optional ISO "date"."""
    parse_tools(record["tools"], where=f"{where}: tools")
    date = record.get("date")
    try:
        day = None if date is None else datetime.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise HerdError(f"{where}: date must be an ISO date such as 2024-07-23, got {date!r}") from None
    return list(record["tools"]), day


def read_prompts(path: str | Path) -> list[list[Message]]:
    """Prompts to sample from: records {"messages": [...]} or {"prompt": str | messages}; a trailing assistant
    turn (a reference answer) is dropped, so each prompt ends with a user turn."""
    prompts = []
    for where, record in records(path):
        if isinstance(record, Mapping) and "messages" in record:
            messages = list(record["messages"])
            _check_messages(messages, where)
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            prompt = _as_prompt(messages, where)
        else:
            prompt = _as_prompt(_field(record, "prompt", where), where)
        prompts.append(prompt)
    if not prompts:
        raise HerdError(f"{path} holds no records")
    return prompts


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """Preference pairs of a file: records {"prompt", "chosen", "rejected"} and optionally "edited".

    `prompt` is a string (one user turn) or a list of messages (assistant tool calls and ipython results kept);
    each reply a string or a one-message list [{"role": "assistant", "content": ..., "tool_calls": [...]}] (TRL's
    conversational format; "tool_calls" optional). A record with "tools" (and "date"), as `read_chats` reads
    them, is rendered with the tool prompt. A ranked triple edited > chosen > rejected becomes its three pairs.
    """
    pairs = []
    for where, record in records(path):
        prompt = _as_prompt(_field(record, "prompt", where), where)
        tools, date = _tools_and_date(record, where) if "tools" in record else (None, None)
        replies = [(name, _as_reply(record[name], name, where)) for name in RANKED if name in record]
        if "edited" in record and record["edited"] is None:
            replies = [(n, r) for n, r in replies if n != "edited"]
        names = [name for name, _ in replies]
        if "chosen" not in names or "rejected" not in names:
            missing = "chosen" if "chosen" not in names else "rejected"
            raise HerdError(f"{where}: missing field {missing!r}; a preference record needs prompt, chosen and rejected")
        for i, (_, better) in enumerate(replies):
            for _, worse in replies[i + 1 :]:
                pairs.append(PreferencePair(prompt, better, worse, where, tools, date))
    if not pairs:
        raise HerdError(f"{path} holds no records")
    return pairs


def _field(record: Any, name: str, where: str) -> Any:
    if not isinstance(record, Mapping):
        raise HerdError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if name not in record:
        raise HerdError(f"{where}: missing field {name!r} (fields: {', '.join(record) or 'none'})")
    return record[name]


def _check_messages(messages: Any, where: str) -> None:
    try:
        validate_messages(messages)
    except HerdError as e:
        raise HerdError(f"{where}: {e}") from None


def _as_prompt(prompt: Any, where: str) -> list[Message]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise HerdError(f"{where}: the prompt is empty")
        return [{"role": "user", "content": prompt}]
    _check_messages(prompt, where)
    if prompt[-1]["role"] == "assistant":
        raise HerdError(f"{where}: the prompt ends with an assistant turn; it must end with the turn to answer")
    return [_kept(m) for m in prompt]


def _as_reply(reply: Any, name: str, where: str) -> Reply:
    if isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], Mapping):
        if reply[0].get("role") != "assistant":
            raise HerdError(f"{where}: {name} must be an assistant message, got role {reply[0].get('role')!r}")
        if reply[0].get("tool_calls"):
            _check_messages(reply, f"{where}: {name}")
            return _kept(reply[0])
        reply = reply[0].get("content")
    if not isinstance(reply, str):
        raise HerdError(f"{where}: {name} must be a string or [{{'role': 'assistant', 'content': ...}}], "
                        f"got {reply!r:.60}")
    if not reply.strip():
        raise HerdError(f"{where}: {name} is empty")
    return reply
