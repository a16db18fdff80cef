"""The eval harness on a tiny random model: lm-eval's tokenization rule, loglikelihoods against a plain
forward, batch-size invariance, seeded few-shot prompts, tasks on fixtures in the official formats, run_eval."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from herd.checkpoint import load
from herd.errors import HerdError
from herd.eval import EvalOptions, encode_pair, evaluate_task, generate_until, get_task, loglikelihood_tokens, run_eval
from herd.eval.evaluate import build_prompts
from herd.eval.runner import markdown_table

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="module")
def model_tok():
    model, tok = load("tiny")
    return model.eval(), tok


def _pairs(tok):
    requests = []
    for q in range(5):
        context = f"Question {q}: {'why ' * (3 * q)}is the sky blue?\nAnswer:"
        requests += [(context, c) for c in (" A", " B", " because of Rayleigh scattering", " no")]
    return [encode_pair(tok, c, x) for c, x in requests]


def test_encode_pair_moves_context_trailing_space_to_continuation(model_tok):
    _, tok = model_tok
    ctx, cont = encode_pair(tok, "Answer: ", "Paris")
    assert ctx == tok.encode("Answer:", bos=True)
    assert tok.decode(cont) == " Paris"
    assert encode_pair(tok, "", "Paris") == ([tok.bos_id], tok.encode("Paris"))


def test_loglikelihood_equals_plain_forward(model_tok):
    model, tok = model_tok
    pairs = _pairs(tok)
    got = loglikelihood_tokens(model, pairs, batch_size=3)
    for (ctx, cont), result in zip(pairs, got):
        with torch.no_grad():
            logprobs = model(torch.tensor([ctx + cont]))[0, len(ctx) - 1 : -1].log_softmax(-1)
        assert result.logprob == pytest.approx(float(logprobs.gather(1, torch.tensor(cont)[:, None]).sum()), abs=1e-4)
        assert result.is_greedy == bool((logprobs.argmax(-1) == torch.tensor(cont)).all())


def test_shared_prefix_matches_reference_path_at_any_batch_size(model_tok):
    model, tok = model_tok
    pairs = _pairs(tok)
    reference = loglikelihood_tokens(model, pairs, batch_size=1, share_prefix=False)
    for batch_size in (1, 4, 8):
        got = loglikelihood_tokens(model, pairs, batch_size=batch_size)
        assert [r.is_greedy for r in got] == [r.is_greedy for r in reference]
        assert max(abs(a.logprob - b.logprob) for a, b in zip(got, reference)) < 1e-4


def test_a_long_context_and_a_long_continuation_batch_within_the_model_context(model_tok):
    model, tok = model_tok
    fits = model.config.max_seq_len
    long_context = ([tok.bos_id] + [7] * (fits - 4), [8, 9, 10])
    long_continuation = ([tok.bos_id, 5], [11] * (fits - 2))
    pairs = [long_context, long_continuation, long_context]
    reference = loglikelihood_tokens(model, pairs, batch_size=1, share_prefix=False)
    got = loglikelihood_tokens(model, pairs, batch_size=8)
    assert max(abs(a.logprob - b.logprob) for a, b in zip(got, reference)) < 1e-3


def test_greedy_generate_until_does_not_depend_on_batch_size(model_tok):
    model, tok = model_tok
    prompts = [tok.encode(t, bos=True) for t in ("Hello", "The capital of France is a long", "1 2 3", "Q:")]
    one = generate_until(model, tok, prompts, max_gen_toks=12, batch_size=1)
    four = generate_until(model, tok, prompts, max_gen_toks=12, batch_size=4)
    assert one == four
    longest = max(one, key=len)
    stop = longest[len(longest) // 2 :][:3]
    stopped = generate_until(model, tok, prompts, max_gen_toks=12, stop=[stop], batch_size=2)
    assert stopped[one.index(longest)] == longest[: longest.find(stop)]


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def data_dir(tmp_path):
    """Small fixtures in the official layouts (HF parquet, GPQA csv, hendrycks MATH json)."""
    mmlu = [
        {"question": f"What is {i} + {i}?", "subject": subject, "choices": [str(2 * i), str(i), "0", "7"], "answer": 0}
        for subject in ("anatomy", "astronomy") for i in range(7)
    ]
    _write_parquet(tmp_path / "mmlu/all/test-00000-of-00001.parquet", mmlu[:4] + mmlu[7:11])
    _write_parquet(tmp_path / "mmlu/all/dev-00000-of-00001.parquet", mmlu[4:7] + mmlu[11:14])
    arc = [
        {"id": str(i), "question": f"Which is number {i}?", "answerKey": "C",
         "choices": {"text": ["one", "two", str(i), "four"], "label": ["A", "B", "C", "D"]}}
        for i in range(30)
    ]
    _write_parquet(tmp_path / "arc_challenge/ARC-Challenge/test-00000-of-00001.parquet", arc[:3])
    _write_parquet(tmp_path / "arc_challenge/ARC-Challenge/train-00000-of-00001.parquet", arc[3:])
    (tmp_path / "gpqa").mkdir()
    (tmp_path / "gpqa/gpqa_main.csv").write_text(
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"
        "What is H2O?,water,salt,gold,air\nWhat is 2+2?,4,5,6,7\n"
    )
    drop = [
        {"section_id": "s", "query_id": str(i), "passage": f"The team scored {i} touchdowns.",
         "question": "How many touchdowns?", "answers_spans": {"spans": [str(i)], "types": ["number"]}}
        for i in range(6)
    ]
    _write_parquet(tmp_path / "drop/data/validation-00000-of-00001.parquet", drop[:2])
    _write_parquet(tmp_path / "drop/data/train-00000-of-00001.parquet", drop[2:])
    (tmp_path / "math/test/algebra").mkdir(parents=True)
    (tmp_path / "math/test/algebra/1.json").write_text(json.dumps(
        {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra", "solution": "It is $\\boxed{2}$."}
    ))
    return tmp_path


def test_mmlu_prompt_is_five_shot_from_dev_with_subject_header(data_dir):
    task = get_task("mmlu")
    samples = task.samples(data_dir)
    prompt = build_prompts(task, samples[:1], data_dir, EvalOptions())[0]
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("Answer: A\n\n") == 3 and prompt.endswith("What is 0 + 0?\nA. 0\nB. 0\nC. 0\nD. 7\nAnswer:")


def test_random_fewshot_is_reproducible_from_the_seed(data_dir):
    task = get_task("arc_challenge")
    samples = task.samples(data_dir)
    first = build_prompts(task, samples, data_dir, EvalOptions(seed=1))
    assert build_prompts(task, samples[:1], data_dir, EvalOptions(seed=1))[0] == first[0]  # limit-independent
    assert build_prompts(task, samples, data_dir, EvalOptions(seed=2)) != first
    assert first[0].count("Question:") == 26


@pytest.mark.parametrize("name", ["mmlu", "arc_challenge", "gpqa", "drop", "math"])
def test_tasks_run_on_fixtures_with_batch_size_independent_records(model_tok, data_dir, name):
    model, tok = model_tok
    task = get_task(name)
    scores, records = evaluate_task(model, tok, task, data_dir, EvalOptions(batch_size=1, limit=3))
    _, again = evaluate_task(model, tok, task, data_dir, EvalOptions(batch_size=8, limit=3))
    assert [r["answer"] for r in records] == [r["answer"] for r in again]
    assert 0.0 <= scores[task.metric] <= 1.0 and scores["n"] == len(records)
    assert {"prompt", "output", "answer", "correct"} <= set(records[0])


def test_chat_mode_renders_shots_as_turns(model_tok, data_dir):
    model, tok = model_tok
    task = get_task("mmlu")
    messages = build_prompts(task, task.samples(data_dir)[:1], data_dir, EvalOptions(chat=True))[0]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[1]["content"] == "A"
    scores, _ = evaluate_task(model, tok, task, data_dir, EvalOptions(chat=True, limit=2))
    assert 0.0 <= scores["acc"] <= 1.0


def test_macro_average_is_over_subjects(model_tok, data_dir):
    model, tok = model_tok
    scores, records = evaluate_task(model, tok, get_task("mmlu"), data_dir, EvalOptions(limit=5))
    by_subject = scores["groups"]
    assert scores["acc"] == pytest.approx(sum(by_subject.values()) / len(by_subject))


def test_missing_data_is_one_line_naming_the_files(tmp_path):
    for name in ("mmlu", "arc_challenge", "gpqa", "gpqa_cot", "drop", "math", "gsm8k", "bbh", "agieval"):
        with pytest.raises(HerdError) as error:
            get_task(name).samples(tmp_path)
        assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_run_eval_writes_results_records_and_table(data_dir, tmp_path):
    out = tmp_path / "out"
    results = run_eval("tiny", ["arc_challenge", "gpqa"], data_dir, limit=2, out_dir=out)
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(results))
    lines = (out / "samples_gpqa.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "correct" in json.loads(lines[0])
    table = (out / "results.md").read_text()
    assert table.startswith("| Benchmark | Shots | Metric | tiny |") and "| arc_challenge | 25 | acc |" in table


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared benchmark data is not at {SHARED}")
@pytest.mark.parametrize("name,count", [("gsm8k", 1319), ("bbh", 6511), ("agieval", 2546)])
def test_real_release_files_load(name, count):
    task = get_task(name)
    samples = task.samples(SHARED)
    assert len(samples) == count
    prompt = build_prompts(task, samples[:1], SHARED, EvalOptions())[0]
    assert prompt.count(task.fewshot_delimiter) >= 3


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared benchmark data is not at {SHARED}")
def test_gsm8k_scores_reference_solutions_as_correct():
    task = get_task("gsm8k")
    samples = task.samples(SHARED)[:50]
    assert all(task.score(s, s.answer)[1]["exact_match"] == 1.0 for s in samples)


def test_gpqa_cot_uses_meta_prompt_and_scores_the_last_best_answer(data_dir):
    task = get_task("gpqa_cot")
    sample = task.samples(data_dir)[0]
    choices = get_task("gpqa").samples(data_dir)[0].question.split("\n")[1:5]  # the same shuffled answers
    assert sample.question.startswith("Given the following question and four candidate answers (A, B, C and D), "
                                      "choose the best answer.\n\nQuestion: What is H2O?\n" + "\n".join(choices) + "\n\n")
    assert sample.question.endswith("where the [the_answer_letter] is one of A, B, C or D.\n\nLet's think step by step.")
    assert task.max_gen_toks == 2048 and task.chain_of_thought
    wrong = next(letter for letter in "ABCD" if letter != sample.gold)
    assert task.score(sample, f"## Step 1: think\nThe best answer is {wrong}, no: the best answer is {sample.gold}.") == (
        sample.gold, {"exact_match": 1.0})
    assert task.score(sample, f"The best answer is {wrong}.")[1] == {"exact_match": 0.0}
    assert task.score(sample, "I cannot tell.") == (None, {"exact_match": 0.0})


def test_results_table_marks_chain_of_thought():
    tasks = [get_task(name) for name in ("gsm8k", "gpqa_cot", "drop", "mmlu")]
    table = markdown_table({t.name: {t.metric: 0.5} for t in tasks}, "m", tasks)
    assert "| gsm8k | 8 CoT | exact_match | 50.0 |" in table and "| gpqa_cot | 0 CoT | exact_match | 50.0 |" in table
    assert "| drop | 3 | f1 | 50.0 |" in table and "| mmlu | 5 | acc (macro) | 50.0 |" in table
