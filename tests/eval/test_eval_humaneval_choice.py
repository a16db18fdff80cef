"""humaneval_mc: HumanEval's problems as 4-way multiple choice among canonical solutions, for tiny models."""

from herd.eval.tasks import get_task


def test_each_problem_has_its_own_solution_among_three_others(tmp_path):
    task = get_task("humaneval_mc")
    samples = task.samples(tmp_path)
    solutions = {s.question: s.answer for s in get_task("humaneval").samples(tmp_path)}
    assert len(samples) == len(solutions) == 164
    for sample in samples:
        assert len(set(sample.choices)) == 4
        assert sample.choices[sample.gold] == solutions[sample.question]
        assert all(c in solutions.values() for c in sample.choices)
    assert len({s.gold for s in samples}) == 4  # the gold position is shuffled
    assert [s.choices for s in task.samples(tmp_path)] == [s.choices for s in samples]
    assert (task.kind, task.metric, task.target_delimiter) == ("multiple_choice", "acc_norm", "")
