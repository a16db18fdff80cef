"""The serving engine on token ids: requests join and leave the running batch at every `step`.

Each step schedules decodes and prefill chunks (`Scheduler`), runs them through the model on the paged cache
(`run_segments`), samples one token for every sequence whose known tokens are all computed, and reports it.
Sequences under a grammar (structured outputs) sample from logits masked by it, in the same batch as the rest.
The engine is synchronous and single-threaded; `AsyncEngine` drives it from a background thread.
"""

from __future__ import annotations

import logging

import torch

from herd.errors import HerdError
from herd.generation import TextStream, sample, token_logprobs
from herd.model import Transformer
from herd.serve.compiled_step import CompiledStep, choose_serve_path
from herd.serve.config import EngineConfig
from herd.serve.grammar import Grammars, Masker
from herd.serve.model_runner import Segment, end_steps, follow_steps, run_segments
from herd.serve.paged_cache import PagedKV
from herd.serve.request import RequestParams, Sequence, StepOutput
from herd.serve.scheduler import Scheduler
from herd.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Engine:
    """Continuous batching over a paged KV cache with prefix caching and chunked prefill."""

    def __init__(
        self, model: Transformer, tok: Tokenizer, config: EngineConfig | None = None, *,
        path: tuple[bool, str] | None = None,
    ) -> None:
        """`path`: (compile?, why) of the one-request step as `prepare_linears` decided it before packing the
        linears; None: `choose_serve_path` on `model` as it is now."""
        self.model, self.tok = model, tok
        self.config = config = config or EngineConfig()
        tokens = min(config.kv_tokens, config.max_running * model.config.max_seq_len)
        num_blocks = -(-tokens // config.block_size)
        weight = model.tok_embeddings.weight
        self.device = weight.device
        self.kv = PagedKV(
            model.config, num_blocks, config.block_size, dtype=weight.dtype, device=weight.device,
            kv_heads=model.kv_heads,
        )
        self.scheduler = Scheduler(config, num_blocks)
        self._sequences: dict[str, Sequence] = {}
        self.grammars = Grammars(tok, model.config.vocab_size)
        """Compiles the grammars of constrained requests (RequestParams.grammar) for this model's vocabulary."""
        self._masker = Masker(model.config.vocab_size)
        compiled, why = path or choose_serve_path(model, config.compile)
        self.decode_path = f"one request's decode step {why}; several requests' steps eager"
        """Which path serves, and why (`herd serve` prints it at start-up)."""
        self._compiled = CompiledStep(model, self.kv) if compiled else None
        if self._compiled is not None:
            self._compiled.warm_up()  # before any request holds a block: its write goes to an unused slot

    @property
    def capacity(self) -> int:
        """Tokens the KV cache holds."""
        return self.scheduler.pool.num_blocks * self.config.block_size

    def check(self, prompt: list[int], params: RequestParams) -> None:
        """Raise HerdError unless `prompt` with `params` can run (ids, context, cache size)."""
        context = self.model.config.max_seq_len
        if not prompt:
            raise HerdError("the prompt is empty; give it at least one token")
        if not 0 <= min(prompt) <= max(prompt) < self.model.config.vocab_size:
            raise HerdError(f"the prompt has ids outside the model's vocabulary 0..{self.model.config.vocab_size - 1}")
        total = len(prompt) + params.max_tokens
        if total > min(context, self.capacity):
            limit = "the model's context" if context <= self.capacity else "the KV cache"
            raise HerdError(
                f"the prompt's {len(prompt)} tokens plus max_tokens={params.max_tokens} make {total}, over "
                f"{limit} of {min(context, self.capacity)} tokens; shorten the prompt or lower max_tokens"
            )

    def add_request(self, request_id: str, prompt: list[int], params: RequestParams) -> None:
        """Queue a request; it joins the batch at a coming step."""
        if request_id in self._sequences:
            raise HerdError(f"request id {request_id!r} is already running; use a new id")
        self.check(prompt, params)
        seq = Sequence.create(request_id, prompt, params, TextStream(self.tok, params.stop), self.device)
        self._sequences[request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        """Drop a request (finished, unknown or cancelled alike) and free its cache blocks."""
        seq = self._sequences.pop(request_id, None)
        if seq is not None:
            self.scheduler.remove(seq)

    def follow(self) -> None:
        """Tensor parallelism, ranks other than 0: run every step rank 0's engine schedules, until it closes."""
        follow_steps(self.model, self.kv)

    def close(self) -> None:
        """Tensor parallelism, rank 0: release the other ranks from `follow` (nothing in a single process)."""
        end_steps(self.model)

    def has_unfinished(self) -> bool:
        return bool(self._sequences)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of the KV-cache blocks held by requests (cached prefixes nobody holds count as free)."""
        return self.scheduler.pool.num_used / self.scheduler.pool.num_blocks

    def step(self) -> list[StepOutput]:
        """Run one batch step; one output per sequence that got a new token or finished."""
        plan = self.scheduler.schedule()
        if self._compiled is not None and len(plan) == 1 and plan[0][1] == plan[0][0].pending == 1:
            seq = plan[0][0]
            logits = self._compiled(seq.tokens[seq.num_computed], seq.num_computed, seq.blocks)
            self.scheduler.computed(seq, 1)
            return self._sample([seq], logits)
        segments = [
            Segment(seq.tokens[seq.num_computed : seq.num_computed + n], seq.num_computed, seq.blocks, n == seq.pending)
            for seq, n in plan
        ]
        ready, logits = run_segments(self.model, self.kv, segments)
        for seq, n in plan:
            self.scheduler.computed(seq, n)
        return [] if logits is None else self._sample([plan[i][0] for i in ready], logits)

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[StepOutput]:
        """Each sequence's next token from its logits row [B, vocab], with its own parameters and generator, among
        the tokens its grammar allows if it has one (log-probabilities stay those of the raw logits)."""
        want = [i for i, seq in enumerate(seqs) if seq.params.logprobs]
        raw = logits[want] if want else None  # a copy, taken before the grammars mask `logits` in place
        constrained = [i for i, seq in enumerate(seqs) if seq.matcher is not None]
        if constrained:
            self._masker.mask_(logits, constrained, [seqs[i].matcher for i in constrained])
        # Every row's greedy token, sampled rows then overwritten: gathering the greedy rows first copied them (a
        # 128K-vocabulary row: 1.35 ms of CPU against 0.10 for the argmax alone, on the loaded 2 cores).
        ids = logits.float().argmax(dim=-1)
        for i, seq in enumerate(seqs):
            if seq.generator is not None:
                ids[i] = sample(logits[i : i + 1], seq.params.sampling, seq.generator)[0]
        chosen: dict[int, float] = {}
        top: dict[int, list[tuple[int, float]]] = {}
        if raw is not None:
            chosen = dict(zip(want, token_logprobs(raw, ids[want]).tolist(), strict=True))
            most = max(seqs[i].params.top_logprobs for i in want)
            if most:
                values, indices = raw.float().log_softmax(-1).topk(most, dim=-1)
                for row, i in enumerate(want):
                    k = seqs[i].params.top_logprobs
                    top[i] = list(zip(indices[row, :k].tolist(), values[row, :k].tolist(), strict=True))
        outputs = [self._advance(seq, token, chosen.get(i), top.get(i)) for i, (seq, token) in enumerate(
            zip(seqs, ids.tolist(), strict=True))]
        if constrained:  # their next masks are filled while the model runs the next step
            self._masker.prefetch([seqs[i].matcher for i in constrained if seqs[i].request_id in self._sequences])
        return outputs

    def _advance(
        self, seq: Sequence, token: int, logprob: float | None, top: list[tuple[int, float]] | None
    ) -> StepOutput:
        """Append `token` to `seq` (unless it is a stop token) and end the sequence when it is done (a constrained
        one also once its grammar is complete)."""
        params = seq.params
        if token in self.tok.stop_ids or token in params.stop_token_ids:
            return self._finish(seq, StepOutput(seq.request_id, None, seq.stream.close(), finish_reason="stop"))
        seq.tokens.append(token)
        out = StepOutput(seq.request_id, token, seq.stream.push(token), logprob, top)
        if seq.matcher is not None and not seq.matcher.consume_token(token):  # only a grammar past its limits
            log.warning("request %s left its grammar: %s", seq.request_id, seq.matcher.get_error())
            out.text += seq.stream.close()
            out.finish_reason = "abort"
        elif seq.stream.stopped:
            out.finish_reason = "stop"
        elif seq.matcher is not None and seq.matcher.is_stopped():
            out.text += seq.stream.close()
            out.finish_reason = "stop"
        elif seq.num_generated >= params.max_tokens:
            out.text += seq.stream.close()
            out.finish_reason = "length"
        return self._finish(seq, out) if out.finish_reason else out

    def _finish(self, seq: Sequence, out: StepOutput) -> StepOutput:
        self.abort(seq.request_id)
        return out
