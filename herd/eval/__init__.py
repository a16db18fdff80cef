"""Evaluation: loglikelihood and generate-until requests, metrics, the task abstraction shared with SFT,
the Llama 3 release's benchmarks, a code-execution sandbox, `run_eval` behind `herd eval` and the pairwise
human-preference evaluation `run_pairwise` behind `herd eval-pairwise`.
"""

from herd.eval.evaluate import EvalOptions, evaluate_task
from herd.eval.generate_until import generate_until
from herd.eval.loglikelihood import Loglikelihood, encode_pair, loglikelihood, loglikelihood_tokens
from herd.eval.pairwise import run_pairwise
from herd.eval.runner import run_eval
from herd.eval.task import Sample, Task
from herd.eval.tasks import TASKS, get_task

__all__ = [
    "TASKS",
    "EvalOptions",
    "Loglikelihood",
    "Sample",
    "Task",
    "encode_pair",
    "evaluate_task",
    "generate_until",
    "get_task",
    "loglikelihood",
    "loglikelihood_tokens",
    "run_eval",
    "run_pairwise",
]
