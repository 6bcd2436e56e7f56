"""An error in the user's model, collator or metrics surfaces as under transformers: the user's frame at the bottom
of a traceback about as long as transformers', without the frames of Lightning's loop (a note says they were hidden).
"""

from __future__ import annotations

import traceback

import pytest
import torch

from tests.helpers import classification_rows

pytestmark = pytest.mark.integration


class BrokenModel(torch.nn.Module):
    """Feeds 7 features to an 8-feature layer: a shape error in the user's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.linear(input_ids.float()[:, :7])  # the user's bug
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


class Model(BrokenModel):
    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.linear(input_ids.float())
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def broken_collator(rows):
    return {"input_ids": torch.stack([row["input_ids"] for row in rows]), "missing": rows[0]["no_such_key"]}


def broken_metrics(eval_prediction):
    return {"accuracy": eval_prediction.predictions.no_such_attribute}


CASES = {  # what breaks: (model, Trainer keyword arguments, the call that fails, the user's function at the bottom)
    "model": (BrokenModel, {}, "train", "forward"),
    "collator": (Model, {"data_collator": broken_collator}, "train", "broken_collator"),
    "metrics": (Model, {"compute_metrics": broken_metrics}, "evaluate", "broken_metrics"),
    "metrics during training": (Model, {"compute_metrics": broken_metrics}, "train", "broken_metrics"),
}


def _failure(framework: str, case: str, tmp_path) -> BaseException:
    if framework == "transformers":
        from transformers import Trainer, TrainingArguments
    else:
        from hftrain import Trainer, TrainingArguments
    model_cls, kwargs, call, _ = CASES[case]
    torch.manual_seed(0)
    args = TrainingArguments(str(tmp_path / framework), per_device_train_batch_size=4, max_steps=2, use_cpu=True,
                             report_to="none", disable_tqdm=True, eval_strategy="steps", eval_steps=1)
    trainer = Trainer(model_cls(), args, train_dataset=classification_rows(16), eval_dataset=classification_rows(8),
                      **kwargs)
    with pytest.raises(Exception) as caught:
        getattr(trainer, call)()
    return caught.value


def _frames(error: BaseException) -> list[traceback.FrameSummary]:
    return traceback.extract_tb(error.__traceback__)


@pytest.mark.parametrize("case", list(CASES))
def test_the_users_frame_ends_a_traceback_as_short_as_transformers(case, tmp_path):
    ours, theirs = _failure("hftrain", case, tmp_path), _failure("transformers", case, tmp_path)
    assert type(ours) is type(theirs) and str(ours) == str(theirs)
    frames = _frames(ours)
    assert not [f for f in frames if "/lightning/" in f.filename], [f.filename for f in frames]
    users = [f.name for f in frames if f.filename == __file__]
    assert users[0] == "_failure" and users[-1] == CASES[case][3]  # the call in the script ... the line that broke
    ours_lines = len("".join(traceback.format_exception(ours)).splitlines())
    theirs_lines = len("".join(traceback.format_exception(theirs)).splitlines())
    assert ours_lines <= theirs_lines + 9, (ours_lines, theirs_lines)  # e.g. 41 vs 36: three frames more
    assert any(note.startswith("hftrain hid") and "HFTRAIN_FULL_TRACEBACK=1" in note for note in ours.__notes__)


def test_full_traceback_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("HFTRAIN_FULL_TRACEBACK", "1")
    frames = _frames(_failure("hftrain", "model", tmp_path))
    assert any("/lightning/" in f.filename for f in frames) and frames[-1].name == "forward"
