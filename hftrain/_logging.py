"""The Trainer's logger: ``logging.getLogger("hftrain.trainer")``, shown and silenced like transformers' own.

transformers' Trainer logs to ``transformers.trainer``, under the ``transformers`` logger whose level ``log_level``
and ``transformers.logging.set_verbosity_*`` set and whose handler prints. hftrain's records go to that same
handler at that same level, so ``log_level="info"`` shows "***** Running training *****" as in transformers, while
the logger keeps hftrain's name (``assertLogs("hftrain.trainer")``, ``patch("hftrain.trainer.logger.warning")``).

Example:
    >>> trainer_logger().name
    'hftrain.trainer'
"""

from __future__ import annotations

import logging

TRAINER_LOGGER = "hftrain.trainer"


class _ToTransformers(logging.Handler):
    """Hands each record to the ``transformers`` logger's handlers when its level lets the record through."""

    def emit(self, record: logging.LogRecord) -> None:
        from transformers.utils import logging as hf_logging

        target = hf_logging.get_logger()  # the "transformers" library logger, configured on first use
        if record.levelno >= target.getEffectiveLevel():
            target.handle(record)


def trainer_logger() -> logging.Logger:
    root = logging.getLogger("hftrain")
    if not any(isinstance(handler, _ToTransformers) for handler in root.handlers):
        root.addHandler(_ToTransformers())
        root.setLevel(logging.DEBUG)  # the transformers logger's level decides (in the handler)
        root.propagate = False  # as transformers' own logger: its handler prints
    return logging.getLogger(TRAINER_LOGGER)
