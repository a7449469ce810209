"""A run's CPU budget: training stops (saving and evaluating first) once the process has used ``minutes`` of CPU time.

CPU time, not wall time, so that runs sharing a machine (the study's arms, two or four at a time on 2 cores) get the
same budget whatever else is running. The clock is the process's CPU time (every thread), counted across resumed
sittings: each log line carries the total so far as ``cpu_s``, and a resumed run starts from the last one.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback


class CpuClock:
    """CPU seconds this run has used: earlier sittings' (from the log history) plus this process's since start."""

    def __init__(self):
        self.before, self.start = 0.0, time.process_time()

    def resume_from(self, log_history: list[dict]) -> None:
        self.before = max((float(e["cpu_s"]) for e in log_history if "cpu_s" in e), default=0.0)
        self.start = time.process_time()

    def used(self) -> float:
        return self.before + time.process_time() - self.start


class CpuBudgetCallback(TrainerCallback):
    """Ends training at the first optimizer step after ``minutes`` of CPU time, with a log, an evaluation and a
    checkpoint at that step (a budget-ended run is complete: ``--resume`` with a larger budget continues it)."""

    def __init__(self, clock: CpuClock, minutes: float | None):
        if minutes is not None and not minutes > 0:
            raise ValueError(f"cpu_budget_minutes must be > 0, got {minutes}")
        self.clock, self.limit = clock, None if minutes is None else 60.0 * float(minutes)

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.resume_from(state.log_history)

    def on_step_end(self, args, state, control, **kwargs):
        if self.limit is not None and self.clock.used() >= self.limit:
            control.should_training_stop = True
            control.should_log = control.should_save = True
            control.should_evaluate = args.eval_strategy != "no"
        return control


__all__ = ["CpuClock", "CpuBudgetCallback"]
