"""The training loop, shared by every stage: a pluggable loss, gradient accumulation, clipping, fault handling.

Pretraining passes `next_token_loss` (herd.train.losses); SFT, DPO, reward models and RL pass their own
`loss_fn(model, batch) -> LossOutput`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from herd.errors import HerdError
from herd.train.checkpointing import CheckpointManager, rng_state, set_rng_state
from herd.train.config import FaultConfig
from herd.train.distributed import Distributed, clip_scale, grad_groups, hang_watchdog
from herd.train.losses import Batch, LossFn, LossOutput
from herd.train.metrics import MetricsLog, memory_gib
from herd.train.optimizer import step_scaled


@dataclass
class LoopConfig:
    """What the loop needs to know about the run (stages build it from their own configs)."""

    steps: int
    """Optimizer steps to reach."""
    lr_at: Callable[[int], float]
    """LR of an optimizer step."""
    accum_at: Callable[[int], int]
    """Micro-batches of an optimizer step."""
    before_step: Callable[[int], None] | None = None
    """Called with the optimizer step before its batches are drawn (e.g. to set a staged sequence length)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 logs the norm without clipping."""
    checkpoint_interval: int = 0
    """Save every this many steps (and at the end); 0 only at the end."""
    eval_interval: int = 0
    """Call `evaluate` every this many steps (and at the end); 0 never."""
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)
    """Bad-loss policy."""
    progress: bool = True
    """Show a tqdm bar."""


@dataclass
class LoopState:
    """The loop's counters, saved with every checkpoint."""

    step: int = 0
    """Optimizer steps taken."""
    tokens: int = 0
    """Input tokens of the steps taken."""
    batches: int = 0
    """Micro-batches drawn from the data (including skipped ones)."""
    skipped: int = 0
    """Steps dropped as bad (NaN/Inf or spike)."""
    rollbacks: int = 0
    """Rollbacks to a checkpoint."""
    bad_in_a_row: int = 0
    """Bad steps since the last good one."""
    loss_ema: float | None = None
    """Running mean of good step losses, for spike detection."""
    train_seconds: float = 0.0
    """Time spent in steps, over all attempts."""


class Trainer:
    """Runs optimizer steps on `data` until `loop.steps`, checkpointing, validating and logging as it goes.

    Under torchrun every rank runs it: `distributed` sums the loss over the data-parallel replicas and the gradient
    norm spans every shard; `forward_backward` replaces the micro-batch loop (pipeline parallelism runs a schedule).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        data: Iterator[Batch],
        loop: LoopConfig,
        log: MetricsLog,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        checkpoints: CheckpointManager | None = None,
        run_info: dict[str, Any] | None = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        flops_per_token: float | Callable[[int], float] = 0.0,
        peak_tflops: float | None = None,
        distributed: Distributed | None = None,
        forward_backward: Callable[[list[Batch]], LossOutput] | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn, self.data, self.loop, self.log = model, optimizer, loss_fn, data, loop, log
        self.device, self.autocast_dtype = device, autocast_dtype
        self.distributed = distributed or Distributed(0, 1, device)
        self.forward_backward = forward_backward or self._accumulate
        self.checkpoints, self.run_info, self.evaluate = checkpoints, run_info or {}, evaluate
        self.flops_per_token, self.peak_tflops = flops_per_token, peak_tflops
        self.state = LoopState()
        self.params = [p for p in model.parameters() if p.requires_grad]

    # --- resume state -------------------------------------------------------------------------------
    def loop_state_dict(self) -> dict[str, Any]:
        """The resume state besides the model and optimizer: data position, RNG, loop counters (rank 0's)."""
        return {"data": self.data.state_dict(), "rng": rng_state(), "loop": dataclasses.asdict(self.state)}

    def load_loop_state_dict(self, state: dict[str, Any], *, data: bool = True) -> None:
        """Restore what `loop_state_dict` saved; `data=False` keeps the data position (a rollback skips the data since)."""
        set_rng_state(state["rng"])
        self.state = LoopState(**state["loop"])
        if data:
            self.data.load_state_dict(state["data"])

    def save(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(self.state.step, self.model, self.optimizer, self.loop_state_dict(), self.run_info)

    def resume(self) -> bool:
        """Continue from the latest checkpoint, if any (on any mesh); True when one was loaded."""
        state = self.checkpoints.load_into(self.model, self.optimizer) if self.checkpoints is not None else None
        if state is None:
            return False
        self.load_loop_state_dict(state)
        return True

    # --- the loop -----------------------------------------------------------------------------------
    def run(self) -> LoopState:
        loop = self.loop
        self.log.open(self.state.step)
        try:
            self._run_steps()
            if loop.eval_interval and self.evaluate is not None:
                self._validate()
            self.save()
            if self.checkpoints is not None:
                self.checkpoints.wait()  # an async final save is committed before the run reports it
        finally:
            self.log.close()
        return self.state

    def _run_steps(self) -> None:
        loop = self.loop
        with tqdm(total=loop.steps, initial=self.state.step, desc="train", unit="step", disable=not loop.progress) as bar:
            while self.state.step < loop.steps:
                before = self.state.step
                with hang_watchdog(loop.faults.hang_timeout_s):
                    record = self.train_step()
                    self.log.write(record)
                    bar.update(self.state.step - before)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
                    if self.state.step != before + 1 or self.state.step == loop.steps:
                        continue  # a dropped or rolled-back step, or the end (validated and saved by `run`)
                    if loop.eval_interval and self.state.step % loop.eval_interval == 0:
                        self._validate()
                    if loop.checkpoint_interval and self.state.step % loop.checkpoint_interval == 0:
                        self.save()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over `accum_at(step)` micro-batches (or a dropped one); returns its metrics record."""
        start = time.perf_counter()
        step = self.state.step
        lr = self.loop.lr_at(step)
        if self.loop.before_step is not None:
            self.loop.before_step(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = []
        for _ in range(self.loop.accum_at(step)):
            batches.append(tuple(t.to(self.device, non_blocking=True) for t in next(self.data)))
            self.state.batches += 1
        out = self.forward_backward(batches)
        sdc = self.loop.faults.sdc_interval
        if sdc and (step + 1) % sdc == 0:
            self._check_recompute(step, batches, out)
        total, count, *values = self.distributed.sum_over_replicas([out.total, out.count, *out.metrics.values()])
        extra = dict(zip(out.metrics, values))
        tokens = sum(batch[0].numel() for batch in batches) * self.distributed.degree("dp")
        clip = self.loop.grad_clip if self.loop.grad_clip > 0 else math.inf
        # the mean over every unit of the step (all replicas), not a mean of means: divided with the clipping
        groups = grad_groups(self.params)
        norm, scale = clip_scale(groups, clip, self.distributed.group("pp"), count or 1)
        grad_norm = float(norm)
        loss = total / max(count, 1)
        problem = self._problem(loss, grad_norm)
        if problem is None:
            step_scaled(self.optimizer, groups, scale)
            self.state.step += 1
            self.state.tokens += tokens
            self.state.bad_in_a_row = 0
            decay = self.loop.faults.spike_ema
            ema = self.state.loss_ema
            self.state.loss_ema = loss if ema is None else decay * ema + (1 - decay) * loss
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        self.state.train_seconds += seconds
        record = {"step": step + 1, "loss": loss, "grad_norm": grad_norm, "lr": lr, "tokens": self.state.tokens,
                  "tokens_per_s": tokens / seconds, "memory_gib": round(memory_gib(self.device), 3), **extra}
        flops = self.flops_per_token(step) if callable(self.flops_per_token) else self.flops_per_token
        achieved = flops * tokens / seconds / 1e12
        record["tflops"] = achieved
        if self.peak_tflops:
            record["mfu"] = achieved / self.peak_tflops
        if problem is not None:
            record["event"] = problem
            self._handle_bad_step(problem, loss)
        return record

    def _check_recompute(self, step: int, batches: list[Batch], first: LossOutput) -> None:
        """Silent data corruption check: the step's forward and backward again, on the same batches and weights, must
        give every rank the very same loss; the first computation's gradients are kept."""
        grads = [p.grad for p in self.params]
        for param in self.params:
            param.grad = None
        again = self.forward_backward(batches)
        for param, grad in zip(self.params, grads):
            param.grad = grad
        ranks = self.distributed.ranks_where(not torch.equal(torch.as_tensor(again.total), torch.as_tensor(first.total)))
        if ranks:
            raise HerdError(
                f"silent data corruption: step {step + 1} recomputed to another loss on rank(s) {ranks}; "
                "check or drain that hardware, then restart (the run resumes from its last checkpoint)"
            )

    def _accumulate(self, batches: list[Batch]) -> LossOutput:
        """Forward and backward of each micro-batch in turn, gradients summed; the step's summed loss and units."""
        total, count, extra = 0.0, 0, {}
        for batch in batches:
            with self._autocast():
                out = self.loss_fn(self.model, batch)
            out.total.backward()
            total += out.total.detach()
            count += out.count
            for key, value in out.metrics.items():
                extra[key] = extra.get(key, 0.0) + value
        return LossOutput(total, count, extra)

    def _problem(self, loss: float, grad_norm: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return "nan"
        faults, ema = self.loop.faults, self.state.loss_ema
        watching = faults.spike_factor and ema is not None and self.state.step >= faults.spike_warmup
        return "spike" if watching and loss > faults.spike_factor * ema else None

    def _handle_bad_step(self, problem: str, loss: float) -> None:
        faults = self.loop.faults
        self.state.skipped += 1
        self.state.bad_in_a_row += 1
        where = f"step {self.state.step + 1}: loss {loss:.4g} ({problem})"
        if faults.policy == "stop":
            raise HerdError(f"{where}; stopping as faults.policy=stop (choose skip or rollback to carry on)")
        if self.state.bad_in_a_row > faults.max_bad_steps:
            raise HerdError(
                f"{where}, the {self.state.bad_in_a_row}th bad step in a row; lower optim.lr or check the data "
                "(faults.max_bad_steps sets the limit)"
            )
        rollback = faults.policy == "rollback" and self.checkpoints is not None
        saved = self.checkpoints.load_into(self.model, self.optimizer) if rollback else None
        if saved is None:
            return  # skip: the batch is dropped without an optimizer step
        counters = dataclasses.replace(self.state)
        self.load_loop_state_dict(saved, data=False)
        self.state = dataclasses.replace(
            self.state, batches=counters.batches, skipped=counters.skipped, rollbacks=counters.rollbacks + 1,
            bad_in_a_row=counters.bad_in_a_row, train_seconds=counters.train_seconds,
        )

    def _validate(self) -> None:
        if self.evaluate is None:
            return
        self.model.eval()
        with torch.no_grad(), self._autocast():
            figures = self.evaluate()
        self.model.train()
        self.log.write({"step": self.state.step, **figures})

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)
