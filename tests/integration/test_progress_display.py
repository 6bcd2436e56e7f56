"""The progress display of a training run is transformers' choice, made where transformers makes it.

``transformers.trainer`` picks ``DEFAULT_PROGRESS_CALLBACK`` when it is imported: ``NotebookProgressCallback`` (an
HTML table with a ``<progress>`` bar, updated in place; a saved notebook shows it statically, e.g. on GitHub) when
``transformers.utils.is_in_notebook()``, else the tqdm ``ProgressCallback``. ``hftrain.trainer`` does the same. The
notebook case runs a notebook built here in a real IPython kernel (nbclient); the other case runs in this process.
"""

from __future__ import annotations

import pytest

from tests.helpers import classification_rows, notebook_executor, tiny_bert_classifier

pytestmark = pytest.mark.integration

TRAIN = '''\
from hftrain import Trainer, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier

args = TrainingArguments("out", per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=4,
                         eval_strategy="steps", eval_steps=2, logging_steps=1, learning_rate=1e-3,
                         save_strategy="no", report_to="none", disable_tqdm=False, use_cpu=True, seed=0)
trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(32),
                  eval_dataset=classification_rows(16, seed=1))
trainer.train()
'''
SHOW_CALLBACKS = '''\
import hftrain.trainer

for callback in trainer.callback_handler.callbacks:
    print("callback:", type(callback).__module__, type(callback).__name__)
try:
    import transformers.trainer
except ImportError as err:  # transformers.Trainer needs accelerate
    print("transformers.trainer:", err)
else:
    print("same default as transformers.trainer:",
          hftrain.trainer.DEFAULT_PROGRESS_CALLBACK is transformers.trainer.DEFAULT_PROGRESS_CALLBACK)
'''


def _texts(outputs: list, mime: str) -> str:
    return "".join(
        "".join(out.get("data", {}).get(mime, "")) if out["output_type"] in ("display_data", "execute_result")
        else "".join(out.get("text", "")) if mime == "stream" and out["output_type"] == "stream"
        else ""
        for out in outputs
    )


def test_a_notebook_shows_transformers_html_progress_table(tmp_path):
    for module in ("nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(module, reason=f"executing a notebook needs {module}: pip install nbclient nbformat "
                                           "ipykernel")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRAIN),
                                               nbformat.v4.new_code_cell(SHOW_CALLBACKS)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = notebook_executor().kernel_env(tmp_path / "out", threads=1)  # the committed notebooks' kernel environment
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, if a cell fails

    train, show = (cell.outputs for cell in notebook.cells)
    assert not [out for out in train + show if out["output_type"] == "error"]
    html = _texts(train, "text/html")
    assert "<progress" in html, f"no HTML progress bar among the training cell's outputs: {train}"
    # the table's final state (nbclient applies the in-place updates): the 4 steps done, the two evaluations' rows
    assert "<progress value='4' max='4'" in html and "Validation Loss" in html
    assert not _texts(train, "application/vnd.jupyter.widget-view+json"), "a tqdm widget, which GitHub cannot show"

    printed = _texts(show, "stream")
    assert "callback: transformers.utils.notebook NotebookProgressCallback" in printed, printed
    assert "ProgressCallback" not in printed.replace("NotebookProgressCallback", ""), printed
    if "same default as transformers.trainer" in printed:
        assert "same default as transformers.trainer: True" in printed, printed


def test_outside_a_notebook_the_tqdm_progress_callback_draws_the_bar(tmp_path, capfd):
    import hftrain.trainer
    from hftrain import Trainer, TrainingArguments
    from hftrain.trainer_callback import ProgressCallback

    assert hftrain.trainer.DEFAULT_PROGRESS_CALLBACK is ProgressCallback
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=4,
                             eval_strategy="steps", eval_steps=2, logging_steps=1, learning_rate=1e-3,
                             save_strategy="no", report_to="none", disable_tqdm=False, use_cpu=True, seed=0)
    trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(32),
                      eval_dataset=classification_rows(16, seed=1))
    shown = [type(callback).__name__ for callback in trainer.callback_handler.callbacks]
    assert "ProgressCallback" in shown and "NotebookProgressCallback" not in shown and "PrinterCallback" not in shown
    trainer.train()
    assert "4/4 [" in capfd.readouterr().err  # tqdm's bar, on stderr
