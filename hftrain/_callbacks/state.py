"""Callback states in ``trainer_state.json["stateful_callbacks"]``: refreshed at every save, restored on resume.

transformers (5.24) stores, under each class name, ``state()`` of every ``ExportableState`` callback and of the
``TrainerControl``, refreshed in ``Trainer._save_checkpoint``; ``Trainer._load_callback_state`` rebuilds them from a
checkpoint when ``restore_callback_states_from_checkpoint=True``. ``ExportableState`` is duck-typed here (an object
with a callable ``state()``), so callbacks of this package and transformers' callbacks both count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hftrain._logging import trainer_logger

logger = trainer_logger()


def is_stateful(callback: Any) -> bool:
    """Duck-typed ``isinstance(callback, ExportableState)``: it has a callable ``state()``."""
    return callable(getattr(callback, "state", None))


def refresh_callback_states(stored: Mapping[str, Any], callbacks: Iterable[Any], control: Any) -> dict[str, Any]:
    """The ``stateful_callbacks`` to save now: ``stored`` updated with the current ``state()`` of each callback.

    Each stateful callback of ``callbacks`` and ``control`` (the ``TrainerControl``) is stored under its class name;
    several of one class become a list of their states, in callback order. Entries of ``stored`` for classes absent
    from ``callbacks`` (a resumed checkpoint's callbacks this run does not have) are kept as they are, as in HF.

    One difference from HF: HF appends the states of a repeated class to the list it already holds, so that list
    grows by one copy per save and a restore pairs callbacks with the oldest states; here it is replaced.

    Example:
        >>> class Counter:
        ...     def __init__(self, n=0): self.n = n
        ...     def state(self): return {"args": {}, "attributes": {"n": self.n}}
        >>> refresh_callback_states({"Gone": {"args": {}}}, [Counter(1), Counter(2)], control=None) == {
        ...     "Gone": {"args": {}}, "Counter": [{"args": {}, "attributes": {"n": n}} for n in (1, 2)]}
        True
    """
    current: dict[str, list[Any]] = {}
    for callback in [*callbacks, control]:
        if is_stateful(callback):
            current.setdefault(callback.__class__.__name__, []).append(callback.state())
    states = dict(stored)
    for name, class_states in current.items():
        states[name] = class_states[0] if len(class_states) == 1 else class_states
    return states


def restore_callback_states(stored: Mapping[str, Any], handler: Any, control: Any) -> Any:
    """HF's ``Trainer._load_callback_state``: rebuild the callbacks and the control saved in a checkpoint.

    For each class name in ``stored`` (``TrainerState.stateful_callbacks`` read from the checkpoint) that matches the
    class name of a callback in ``handler.callbacks`` or of ``control``, each such object (in order, paired with the
    stored states of that name) is replaced by ``type(obj)(**state["args"])`` with ``state["attributes"]`` set on
    it. Rebuilt callbacks are removed from ``handler`` (``remove_callback`` of their class) and appended at the end
    (``add_callback``, which warns when one of the class is still there); a rebuilt control is returned. Names with
    no match are ignored with one warning listing them.

    Args:
        stored: ``{class name: state, or a list of states}``.
        handler: the ``CallbackHandler``, changed in place.
        control: the current ``TrainerControl``.

    Returns:
        The control to use from now on: rebuilt if ``stored`` has one, else ``control``.
    """
    not_found: list[str] = []
    new_callbacks: list[Any] = []
    original_callbacks = [*handler.callbacks, control]
    for stored_callback, data in stored.items():
        if not isinstance(data, list):
            data = [data]
        duplicates = [cb for cb in original_callbacks if cb.__class__.__name__ == stored_callback]
        if not duplicates:
            not_found.append(stored_callback)
            continue
        for callback, callback_data in zip(duplicates, data):
            new_callback = type(callback)(**callback_data.get("args", {}))
            for attribute, value in callback_data.get("attributes", {}).items():
                setattr(new_callback, attribute, value)
            if callback is control:
                control = new_callback
            else:
                new_callbacks.append(new_callback)
            handler.remove_callback(type(new_callback))
        logger.info("Continuing training from checkpoint, restoring any callbacks that were passed in")
    if not_found:
        logger.warning(
            "Checkpoint included callbacks not included in current configuration. Ignoring. "
            f"({', '.join(not_found)})"
        )
    for callback in new_callbacks:
        handler.add_callback(callback)
    return control
