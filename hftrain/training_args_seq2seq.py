"""``Seq2SeqTrainingArguments``: ``TrainingArguments`` plus HF's five generation fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.generation import GenerationConfig

from hftrain._args.fields import _Seq2SeqFields
from hftrain._args.removed import accept_removed_names
from hftrain.training_args import TrainingArguments

__all__ = ["Seq2SeqTrainingArguments"]

_GENERATION_CONFIG_FILE = "generation_config.json"  # what GenerationConfig.from_pretrained(<dir>) reads


logger = logging.getLogger(__name__)


@accept_removed_names
@dataclass(repr=False)
class Seq2SeqTrainingArguments(TrainingArguments, _Seq2SeqFields):
    """HF's ``Seq2SeqTrainingArguments`` (transformers 5.24): ``TrainingArguments`` + ``sortish_sampler``,
    ``predict_with_generate``, ``generation_max_length``, ``generation_num_beams``, ``generation_config``.

    The generation fields are checked here, where HF only fails later in the Trainer: ``generation_num_beams`` must be
    at least 1, ``generation_max_length`` positive, and a ``generation_config`` given as a path must exist locally
    (a Hub model id cannot be fetched offline; load it yourself and pass the ``GenerationConfig``).

    Example:
        >>> args = Seq2SeqTrainingArguments("out", predict_with_generate=True, generation_num_beams=4)
        >>> args.to_dict()["generation_num_beams"]
        4
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._validate_generation_args()

    def _validate_generation_args(self) -> None:
        if self.generation_num_beams is not None and self.generation_num_beams < 1:
            raise ValueError(
                f"`generation_num_beams={self.generation_num_beams!r}` must be at least 1 "
                "(1 is greedy search; leave it None to use the model's generation config)."
            )
        if self.generation_max_length is not None and self.generation_max_length <= 0:
            raise ValueError(
                f"`generation_max_length={self.generation_max_length!r}` must be a positive number of tokens "
                "(leave it None to use the model's generation config)."
            )
        if isinstance(self.generation_config, (str, Path)):
            path = Path(self.generation_config)
            if not (path.is_file() or (path / _GENERATION_CONFIG_FILE).is_file()):
                raise ValueError(
                    f"`generation_config={str(self.generation_config)!r}` is neither a JSON file nor a directory "
                    f"holding {_GENERATION_CONFIG_FILE}. hftrain works offline and does not fetch Hub model ids: "
                    "pass a local path or a `GenerationConfig` object (e.g. `GenerationConfig.from_pretrained(...)`)."
                )

    def to_dict(self) -> dict[str, Any]:
        """``TrainingArguments.to_dict()`` with a ``GenerationConfig`` value as its dict, as HF does.

        A ``Path`` value becomes a string (HF keeps the ``Path``, which makes its ``to_json_string()`` fail).
        """
        d = super().to_dict()
        for key, value in d.items():
            if isinstance(value, GenerationConfig):
                d[key] = value.to_dict()
            elif isinstance(value, Path):
                d[key] = str(value)
        return d
