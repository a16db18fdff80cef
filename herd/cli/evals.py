"""`herd eval | eval-pairwise`: scoring models on benchmarks and against each other."""

import argparse
import json

from herd.errors import HerdError


class _TaskListHelp(argparse.HelpFormatter):
    """Writes herd.eval's task registry into help texts at "{tasks}", importing it (and torch) only when the help
    is shown, so the list cannot drift from the tasks `herd eval` knows."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{tasks}" in text:
            from herd.eval.tasks import TASKS

            text = text.replace("{tasks}", ", ".join(TASKS))
        return text


def add_eval(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="score a model on the Llama 3 release's benchmarks",
                                   formatter_class=_TaskListHelp)
    evaluate.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    evaluate.add_argument("--tasks", required=True, help="comma-separated: {tasks}")
    evaluate.add_argument("--data-dir", default="data/benchmarks",
                          help="where the benchmark files are (default: %(default)s)")
    evaluate.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    evaluate.add_argument("--out", default="eval_out", help="output directory")
    evaluate.add_argument("--chat", action="store_true", help="prompt in the chat format (instruct models)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--seed", type=int, default=0, help="few-shot sampling seed")
    evaluate.add_argument("--tp", type=int, default=1,
                          help="tensor-parallel ranks: torchrun --nproc-per-node N -m herd.cli eval ... --tp N")
    evaluate.set_defaults(run=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> None:
    from herd.eval.data import MissingData
    from herd.eval.runner import run_eval
    from herd.model.tensor_parallel import init_tensor_parallel
    from herd.serve.memory_plan import check_run_memory

    # each rank plans one request as long as the model's context (eval cuts longer ones), on the CPU run_eval loads
    # to, before it joins
    group = init_tensor_parallel(args.tp, "cpu", before_joining=lambda device, lead: check_run_memory(
        args.model, tp=args.tp, device=device, run="eval", show=lead))
    try:
        run_eval(
            args.model, [t.strip() for t in args.tasks.split(",") if t.strip()], args.data_dir, limit=args.limit,
            out_dir=args.out, chat=args.chat, batch_size=args.batch_size, seed=args.seed, tp=args.tp,
        )
    except MissingData as error:
        raise HerdError(f"{error}; or point --data-dir (now {args.data_dir}) at a directory that holds it") from None
    if group is not None:
        group.close()
        if group.rank:
            return
    print(f"wrote results.json, results.md and per-sample records to {args.out}")


def add_eval_pairwise(commands: argparse._SubParsersAction) -> None:
    pairwise = commands.add_parser("eval-pairwise", help="human-preference style: a judge compares two models' replies")
    pairwise.add_argument("--model-a", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset")
    pairwise.add_argument("--model-b", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset")
    pairwise.add_argument("--judge", required=True, help="a herd-loadable model, or the model name at --judge-url")
    pairwise.add_argument("--judge-url", default=None, help="an OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    pairwise.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="the variable holding its API key")
    pairwise.add_argument("--prompts", default=None, help="a JSONL prompt set (default: herd's 12-category set)")
    pairwise.add_argument("--per-category", type=int, default=None, help="at most N prompts per category")
    pairwise.add_argument("--max-new-tokens", type=int, default=512, help="reply length of models A and B")
    pairwise.add_argument("--judge-max-new-tokens", type=int, default=512)
    pairwise.add_argument("--batch-size", type=int, default=8)
    pairwise.add_argument("--out", default="eval_pairwise_out", help="output directory")
    pairwise.set_defaults(run=cmd_eval_pairwise)


def cmd_eval_pairwise(args: argparse.Namespace) -> None:
    import os

    from herd.eval.pairwise import run_pairwise

    summary = run_pairwise(
        args.model_a, args.model_b, args.judge, judge_url=args.judge_url,
        judge_api_key=os.environ.get(args.judge_api_key_env, "EMPTY"), prompts_path=args.prompts,
        per_category=args.per_category, max_new_tokens=args.max_new_tokens,
        judge_max_new_tokens=args.judge_max_new_tokens, batch_size=args.batch_size, out_dir=args.out,
    )
    print(json.dumps(summary["overall"]))
    print(f"wrote pairwise.json and pairwise.md to {args.out}")
