"""``report_to`` → Lightning loggers, with HF's metric names (``train/loss``, ``eval/loss``) and steps."""

from __future__ import annotations

import importlib.util
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

# every name HF 5.24 accepts in report_to (integrations/integration_utils.py)
HF_INTEGRATIONS = (
    "azure_ml", "comet_ml", "mlflow", "neptune", "tensorboard", "trackio", "wandb", "codecarbon", "clearml",
    "dagshub", "flyte", "dvclive", "swanlab", "kubeflow",
)
SUPPORTED = ("tensorboard", "csv")


def build_loggers(report_to: list[str] | str | None, output_dir: str, run_name: str | None = None) -> list[Logger]:
    """Lightning loggers for ``report_to`` (already normalised to a list by ``TrainingArguments``).

    Example:
        >>> build_loggers([], "out")
        []
    """
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if names in (["none"], []):
        return []
    if "all" in names:
        names = [n for n in SUPPORTED if n != "csv" and _tensorboard_available()]
    loggers: list[Logger] = []
    for name in names:
        if name == "tensorboard":
            if not _tensorboard_available():
                raise ValueError("`report_to=['tensorboard']` needs TensorBoard: pip install tensorboard")
            loggers.append(TensorBoardLogger(output_dir, name="runs", version=run_name))
        elif name == "csv":
            loggers.append(CSVLogger(output_dir, name="csv_logs", version=run_name))
        elif name in HF_INTEGRATIONS:
            raise ValueError(
                f"`report_to` {name!r} is not supported by hftrain yet; use one of {SUPPORTED}, 'none', or pass a "
                "Lightning Logger through `callbacks`."
            )
        else:
            raise ValueError(
                f"{name} is not supported, only {', '.join(HF_INTEGRATIONS)} are supported "
                f"(hftrain adds 'csv'). Fix `report_to`."
            )
    return loggers


def rewrite_logs(logs: dict[str, Any]) -> dict[str, float]:
    """HF's integration naming: ``eval_loss`` → ``eval/loss``, ``test_x`` → ``test/x``, the rest under ``train/``."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        for prefix in ("eval_", "test_"):
            if key.startswith(prefix):
                out[f"{prefix[:-1]}/{key[len(prefix):]}"] = value
                break
        else:
            out[f"train/{key}"] = value
    return out


def _tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
