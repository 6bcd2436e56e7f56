"""``enable_jit_checkpoint``: on a preemption signal, finish the optimizer step, write one checkpoint, stop.

transformers 5.24's ``JITCheckpointCallback`` waits 3 s after SIGTERM, then saves from whichever hook runs next
(possibly before the optimizer step, so the checkpoint's weights and its RNG state belong to different steps), and
each process decides alone. Lightning's own SIGTERM handler broadcasts from inside the handler and kills the other
processes, which can deadlock when only one of them got the signal (Lightning #20806).

Here the handler only records the signal. At the end of every optimizer step (``on_step_end``, where every process
is) the processes agree on it with one all-reduce (MAX) of a flag, so a signal to any one of them stops all of them
after the same step. That step then saves through the ordinary path (``control.should_save``: the atomic
``checkpoint-N`` with the optimizer, scheduler, RNG states and the running loss, so resuming from it gives the
uninterrupted run) and stops (``control.should_training_stop``); ``train()`` returns as at the end of a run.

Example:
    >>> from hftrain import TrainingArguments
    >>> args = TrainingArguments("out", enable_jit_checkpoint=True, jit_checkpoint_signals="SIGTERM,SIGUSR1")
    >>> [s.name for s in preemption_signals(args.jit_checkpoint_signals)]
    ['SIGTERM', 'SIGUSR1']
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from hftrain._args.normalise import preemption_signals
from hftrain._backends import ddp
from hftrain._logging import trainer_logger
from hftrain.trainer_callback import TrainerCallback

logger = trainer_logger()


class JITCheckpointCallback(TrainerCallback):
    """Stops every process after the same optimizer step once any of them received a preemption signal, and has
    that step write its checkpoint.

    The Trainer adds it when ``enable_jit_checkpoint=True`` and arms it once Lightning has installed its own signal
    handlers (which it replaces for these signals while training, then restores).

    Example:
        >>> callback = JITCheckpointCallback(["SIGTERM"])
        >>> callback.requested
        False
    """

    def __init__(self, signals: str | list[str] | tuple[str, ...] = ("SIGTERM",)) -> None:
        self.signals = preemption_signals(signals)
        self.requested = False  # set by the handler; read once per step
        self.stopped_at: int | None = None  # the step a signal stopped the last run at
        self._device = torch.device("cpu")
        self._previous: dict[signal.Signals, Any] = {}
        self.armed = False  # between arm and disarm: every process then agrees at every step end

    def arm(self, device: torch.device) -> None:
        """Catch the signals (in the main thread only: Python delivers signals there)."""
        self.requested, self.stopped_at, self._device, self.armed = False, None, device, True
        if threading.current_thread() is not threading.main_thread():
            logger.warning("enable_jit_checkpoint: training runs outside the main thread, where no signal handler can "
                           "be installed; a preemption signal will not write a checkpoint.")
            return
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._on_signal)

    def disarm(self) -> None:
        """Give the signals back to the handlers they had before :meth:`arm`, unless Lightning's teardown already
        restored the ones it found before ``fit`` (then the one this replaced was Lightning's, gone with its run)."""
        self.armed = False
        while self._previous:
            number, handler = self._previous.popitem()
            if signal.getsignal(number) == self._on_signal:
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # only a flag: a handler interrupts arbitrary code, so no collective and no I/O here
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process received a signal (one all-reduce over the processes)."""
        flag = torch.tensor(float(self.requested), device=self._device)
        return bool(ddp.all_reduce(flag, op="max").item() > 0)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.armed and self.stopped_at is None and self.agreed():
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            logger.warning(f"Preemption signal received: saving checkpoint-{state.global_step} and stopping the run "
                           f"after step {state.global_step} (enable_jit_checkpoint).")
