"""Post-training data readers and batches: chat and preference records, errors naming file:line, packing with
loss masks."""

import functools
import json
import operator

import pytest
import torch

from herd.errors import HerdError
from herd.post.batches import Batches, encode_pairs, encode_reply, pack_chats, pair_batch
from herd.post.data import PreferencePair, read_chats, read_preferences, read_prompts
from herd.train.packing import IGNORE_INDEX
from tests.tiny import QA, chat_records, write_jsonl


# --- readers ---------------------------------------------------------------------------------------------
def test_read_chats_keeps_every_dialog(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_records())
    dialogs = read_chats(path)
    assert len(dialogs) == len(QA) and dialogs[0][2] == {"role": "assistant", "content": "blue"}


@pytest.mark.parametrize("line, problem", [
    ("not json", "not valid JSON"),
    ('{"text": "x"}', "missing field 'messages'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "unknown role"),
    ('{"messages": [{"role": "user"}]}', "'role' and 'content'"),
    ('[1, 2]', "must be a JSON object"),
])
def test_malformed_chat_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(chat_records()[0]) + "\n" + line + "\n")
    with pytest.raises(HerdError, match=f"chat.jsonl:2: .*{problem}"):
        read_chats(path)


def test_preferences_expand_ranked_triples(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt": "q1", "chosen": "good", "rejected": "bad"},
        {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q2"}], "edited": "best",
         "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"},
    ])
    pairs = read_preferences(path)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad"), ("best", "good"), ("best", "bad"), ("good", "bad")]
    assert pairs[0].prompt == [{"role": "user", "content": "q1"}] and pairs[1].prompt[0]["role"] == "system"
    assert pairs[3].source.endswith("pref.jsonl:2")


@pytest.mark.parametrize("record, problem", [
    ({"prompt": "q", "chosen": "a"}, "missing field 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen is empty"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen must be a string"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "a",
      "rejected": "b"}, "ends with an assistant turn"),
])
def test_malformed_preferences_name_the_line(tmp_path, record, problem):
    path = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(HerdError, match=f"pref.jsonl:2: .*{problem}"):
        read_preferences(path)


CALL = {"role": "assistant", "content": "", "tool_calls": [{"name": "wolfram_alpha", "arguments": {"query": "88 + 76"}}]}
TOOL_RECORD = {"prompt": [{"role": "user", "content": "What is 88 + 76?"}, CALL, {"role": "ipython", "content": "164"}],
               "chosen": [{"role": "assistant", "content": "The answer is 164."}], "rejected": "The answer is 144.",
               "tools": ["wolfram_alpha"], "date": "2024-07-23"}


def test_tool_preferences_render_calls_and_results_with_the_tool_prompt(tok, tmp_path):
    pair = read_preferences(write_jsonl(tmp_path / "pref.jsonl", [TOOL_RECORD]))[0]
    assert pair.prompt[1] == CALL and pair.tools == ["wolfram_alpha"] and pair.date.isoformat() == "2024-07-23"
    encoded = encode_pairs(tok, [pair], 512)
    for row, reply in ((0, "The answer is 164."), (1, "The answer is 144.")):
        ids, mask = encoded.ids[row], encoded.masks[row]
        text = tok.decode(ids)
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
                               "Tools: wolfram_alpha\nCutting Knowledge Date: December 2023\nToday Date: 23 July 2024\n<|eot_id|>")
        assert ('<|python_tag|>wolfram_alpha.call(query="88 + 76")<|eom_id|><|start_header_id|>ipython<|end_header_id|>'
                '\n\n164<|eot_id|>') in text
        assert tok.decode([i for i, m in zip(ids, mask) if m]) == reply  # the reply only, not the call nor result
        assert ids == tok.encode_dialog([*pair.prompt, {"role": "assistant", "content": reply}], tools=pair.tools,
                                        date=pair.date)


def test_a_tool_call_can_be_the_chosen_reply(tok, tmp_path):
    record = {**TOOL_RECORD, "prompt": TOOL_RECORD["prompt"][:1], "chosen": [CALL]}
    pair = read_preferences(write_jsonl(tmp_path / "pref.jsonl", [record]))[0]
    assert pair.chosen == CALL and pair.rejected == "The answer is 144."
    ids, mask = encode_reply(tok, pair.prompt, pair.chosen, tools=pair.tools, date=pair.date)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == '<|python_tag|>wolfram_alpha.call(query="88 + 76")'
    assert ids[-1] == tok.eom_id and mask[-1] == 0


@pytest.mark.parametrize("change, problem", [
    ({"chosen": [{**CALL, "tool_calls": [{"name": "wolfram_alpha", "arguments": {}}]}]},
     r"chosen: message 0 tool_calls\[0\] calls wolfram_alpha, whose arguments need 'query'"),
    ({"tools": ["abacus"]}, r"tools\[0\]: unknown built-in tool 'abacus'"),
    ({"date": "July"}, "date must be an ISO date"),
])
def test_malformed_tool_preferences_name_the_line(tmp_path, change, problem):
    path = write_jsonl(tmp_path / "pref.jsonl", [TOOL_RECORD, {**TOOL_RECORD, **change}])
    with pytest.raises(HerdError, match=f"pref.jsonl:2: {problem}"):
        read_preferences(path)


def test_prompts_drop_the_reference_answer(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [chat_records()[0], {"prompt": "hello"}])
    prompts = read_prompts(path)
    assert prompts[0][-1] == {"role": "user", "content": "what is the sky"} and len(prompts[0]) == 2
    assert prompts[1] == [{"role": "user", "content": "hello"}]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(HerdError, match="not found"):
        read_chats(tmp_path / "nope.jsonl")


def test_reads_a_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}] * 3).save_to_disk(tmp_path / "ds")
    assert len(read_preferences(tmp_path / "ds")) == 3
    datasets.Dataset.from_list([{"prompt": "q", "chosen": "a"}]).save_to_disk(tmp_path / "bad")
    with pytest.raises(HerdError, match=r"bad\[0\]: missing field 'rejected'"):
        read_preferences(tmp_path / "bad")


# --- batches ---------------------------------------------------------------------------------------------
def test_packed_targets_are_exactly_the_assistant_tokens(tok):
    dialogs = [r["messages"] for r in chat_records()]
    rows = pack_chats(tok, dialogs, seq_len=64)
    expected = []
    for dialog in dialogs:
        ids, mask = tok.encode_dialog_with_mask(dialog)
        expected += [i for i, m in zip(ids, mask) if m]
    kept = rows.targets[rows.targets != IGNORE_INDEX].tolist()
    assert kept == expected  # every assistant token (and its end of turn) once, in order, nothing else
    assert rows.dialogs == len(dialogs) and rows.truncated == 0
    for r in range(len(rows)):  # a target is the next input within its document
        tokens, targets, docs = rows.tokens[r], rows.targets[r], rows.doc_ids[r]
        for t in range(63):
            if targets[t] != IGNORE_INDEX and docs[t + 1] == docs[t]:
                assert targets[t] == tokens[t + 1]


def test_reply_mask_drops_prompt_headers_and_end_of_turn(tok):
    prompt = [{"role": "user", "content": "what is grass"}, {"role": "assistant", "content": "green"},
              {"role": "user", "content": "what is snow"}]
    ids, mask = encode_reply(tok, prompt, "white")
    assert [i for i, m in zip(ids, mask) if m] == tok.encode("white")
    assert ids[-1] == tok.eot_id and mask[-1] == 0


def test_pair_batch_layout(tok):
    pairs = encode_pairs(tok, [PreferencePair([{"role": "user", "content": "q"}], "good", "bad bad")], 64)
    tokens, targets, last = pair_batch(pairs, [0], pad_id=tok.eos_id)
    assert tokens.shape[0] == 2 and tokens[0, last[0]] == tok.eot_id and tokens[1, last[1]] == tok.eot_id
    assert tok.decode(targets[1][targets[1] != IGNORE_INDEX].tolist()) == "bad bad"


def test_batches_resume_at_the_next_batch():
    first = Batches(5, 2, seed=3, collate=lambda idx: (torch.tensor(idx),))
    seen = [next(first)[0].tolist() for _ in range(4)]
    again = Batches(5, 2, seed=3, collate=lambda idx: (torch.tensor(idx),))
    [next(again) for _ in range(2)]
    state = again.state_dict()
    resumed = Batches(5, 2, seed=3, collate=lambda idx: (torch.tensor(idx),))
    resumed.load_state_dict(state)
    assert [next(resumed)[0].tolist() for _ in range(2)] == seen[2:]
    assert sorted(functools.reduce(operator.iadd, seen[:2], []) + seen[2][:1]) == [0, 1, 2, 3, 4]  # an epoch is a permutation


# --- eval tasks as SFT data --------------------------------------------------------------------------------
GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How "
                 "many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
               "in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
                 "did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
]


def test_gsm8k_train_split_becomes_chain_of_thought_dialogs(tmp_path):
    """`task:gsm8k/train@DIR` reads GSM8K's train split as dialogs: the 0-shot chat prompt `herd eval --chat`
    renders, answered by the chain of thought without calculator annotations, ending in the "#### N" the scorer
    reads; SFT packing trains on exactly that answer."""
    from herd.eval.tasks import get_task

    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", GSM8K_TRAIN)
    dialogs = read_chats(f"task:gsm8k/train@{tmp_path}")
    assert len(dialogs) == 2
    user, assistant = dialogs[0]
    assert user == {"role": "user", "content": f"Q: {GSM8K_TRAIN[0]['question']}\nA:"}
    assert assistant["content"] == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether "
                                    "in April and May.\n#### 72")
    task = get_task("gsm8k")
    sample = task.train_samples(tmp_path)[1]
    assert task.score(sample, dialogs[1][1]["content"]) == ("10", {"exact_match": 1.0})  # the answer scores as gold
    assert read_prompts(f"task:gsm8k/train@{tmp_path}")[0] == [user]  # prompts for sampling drop the answer


def test_task_fewshot_and_eval_splits(tmp_path):
    from herd.eval.tasks.gsm8k import EXEMPLARS

    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", GSM8K_TRAIN[:1])
    fewshot = read_chats(f"task:gsm8k/fewshot@{tmp_path}")
    assert [d[1]["content"] for d in fewshot] == [a for _, a in EXEMPLARS]
    assert read_chats(f"task:gsm8k/eval@{tmp_path}")[0][1]["content"] == GSM8K_TRAIN[0]["answer"]


@pytest.mark.parametrize("spec, problem", [
    ("task:gsm8k/dev", "bad task data spec"),
    ("task:nope/train", "unknown eval task 'nope'"),
    ("task:gsm8k/train@/nonexistent", "no 'train' split in /nonexistent/gsm8k"),
    ("task:humaneval/train", "humaneval has no training split"),
])
def test_bad_task_specs_are_user_errors(spec, problem):
    with pytest.raises(HerdError, match=problem):
        read_chats(spec)
