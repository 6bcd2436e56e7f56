"""An error from the user's model, loss or collator, shown without the frames of Lightning's loop.

hftrain runs transformers' step inside Lightning's ``fit`` / ``validate`` / ``predict``: an exception raised in a
model's ``forward`` passes through about fifteen frames of Lightning's loops and strategy and of hftrain's adapter
on its way out, and its traceback is twice as long as transformers' (75 lines where transformers prints 36). Those
frames say nothing about the error. They are taken out of the traceback as the error leaves the Lightning call
(JAX filters its internal frames the same way), with a note that says so; the Trainer's methods (transformers'
names) and every frame of the user's, torch's and transformers' code stay, so the user's line that raised ends the
traceback as under transformers. ``HFTRAIN_FULL_TRACEBACK=1`` keeps every frame.

Example:
    >>> try:
    ...     run_lightning()  # doctest: +SKIP
    ... except Exception as error:
    ...     raise loop_frames_hidden(error)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import lightning

FULL_TRACEBACK_VARIABLE = "HFTRAIN_FULL_TRACEBACK"
_LIGHTNING = str(Path(lightning.__file__).resolve().parent) + os.sep
_HFTRAIN = str(Path(__file__).resolve().parent) + os.sep


def is_loop_frame(tb: TracebackType) -> bool:
    """A frame of Lightning, or of hftrain's machinery between a Trainer method and the user's code: hftrain's
    LightningModule, the Trainer methods Lightning's hooks call (``_lightning_*``), and every hftrain function that
    is not a method of the Trainer (the evaluation collector, the epoch iterator...). The Trainer's own methods stay
    (``train``, ``training_step``, ``compute_loss``, ``evaluation_loop``...): transformers' traceback has them too."""
    from hftrain.trainer import Trainer

    code = tb.tb_frame.f_code
    if code.co_filename.startswith(_LIGHTNING):
        return True
    if not code.co_filename.startswith(_HFTRAIN):
        return False
    return code.co_name.startswith("_lightning_") or not isinstance(tb.tb_frame.f_locals.get("self"), Trainer)


def loop_frames_hidden(error: BaseException) -> BaseException:
    """``error``, to raise again from the frame that caught it, without the loop frames that lie between that frame
    and the last frame of the user's (or torch's, or transformers') code in its traceback. The frames after that
    one stay whatever they are: an error raised in hftrain or Lightning itself keeps every frame below the call.

    The traceback starts at the catching frame, which the ``raise`` puts back, so that entry goes too."""
    caught = error.__traceback__
    frames: list[TracebackType] = []
    tb = caught.tb_next if caught is not None else None
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    if os.environ.get(FULL_TRACEBACK_VARIABLE, "") not in ("", "0"):
        return error.with_traceback(frames[0] if frames else None)
    loop = [is_loop_frame(frame) for frame in frames]
    last_kept = max((i for i, is_loop in enumerate(loop) if not is_loop), default=-1)
    kept = [frame for i, frame in enumerate(frames) if i > last_kept or not loop[i]]
    hidden = len(frames) - len(kept)
    if not hidden:
        return error.with_traceback(frames[0] if frames else None)
    for before, after in zip(kept, kept[1:] + [None]):
        before.tb_next = after
    notes = getattr(error, "__notes__", [])
    if hasattr(error, "add_note") and not any(note.startswith("hftrain hid") for note in notes):
        error.add_note(f"hftrain hid {hidden} frames of Lightning's loop and its own from this traceback "
                       f"({FULL_TRACEBACK_VARIABLE}=1 shows them)")
    return error.with_traceback(kept[0])
