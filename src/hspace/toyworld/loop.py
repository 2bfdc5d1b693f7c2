"""Bookkeeping shared by the toy-world training loops: throughput, time limit, when to save."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StepClock:
    """Call :meth:`after_step` once per optimiser step.

    Args:
        steps: the schedule's total steps (training stops there).
        log_every: report throughput every this many steps (and at the last step).
        checkpoint_every: save every this many steps (and whenever the loop stops).
        max_minutes: stop after this many minutes of this run (None: no limit).
        stop_after: stop after this many steps of this run (None: no limit).
    """

    steps: int
    log_every: int
    checkpoint_every: int
    max_minutes: float | None = None
    stop_after: int | None = None
    t_start: float = field(default_factory=time.perf_counter)
    run_steps: int = 0
    _t_log: float = field(init=False)
    _n_log: int = 0

    def __post_init__(self) -> None:
        self._t_log = self.t_start

    def after_step(self, step: int, n_examples: int) -> tuple[float | None, bool, bool]:
        """Record a finished step (``step`` = steps done so far, all runs).

        Returns:
            ``(rate, save, stop)``: examples/s since the last report when it is time to
            report (else None), whether to checkpoint now, whether to stop.
        """
        self.run_steps += 1
        self._n_log += n_examples
        now = time.perf_counter()
        rate = None
        if step % self.log_every == 0 or step == self.steps:
            rate = self._n_log / max(now - self._t_log, 1e-9)
            self._t_log, self._n_log = now, 0
        out_of_time = self.max_minutes is not None and (now - self.t_start) / 60 >= self.max_minutes
        stop = step >= self.steps or out_of_time or self.run_steps == self.stop_after
        return rate, stop or step % self.checkpoint_every == 0, stop

    def per_second(self, batch_size: int) -> float:
        """Examples per second over this run."""
        return self.run_steps * batch_size / max(time.perf_counter() - self.t_start, 1e-9)
