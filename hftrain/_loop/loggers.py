"""``report_to`` → Lightning loggers, with HF's metric names (``train/loss``, ``eval/loss``) and steps."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

# every name HF 5.24 accepts in report_to (integrations/integration_utils.py)
HF_INTEGRATIONS = (
    "azure_ml", "comet_ml", "mlflow", "neptune", "tensorboard", "trackio", "wandb", "codecarbon", "clearml",
    "dagshub", "flyte", "dvclive", "swanlab", "kubeflow",
)
SUPPORTED = ("tensorboard", "mlflow", "wandb", "csv")


def build_loggers(
    report_to: list[str] | str | None, output_dir: str, run_name: str | None = None, project: str = "huggingface"
) -> list[Logger]:
    """Lightning loggers for ``report_to`` (already normalised to a list by ``TrainingArguments``).

    Example:
        >>> build_loggers([], "out")
        []
    """
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if names in (["none"], []):
        return []
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if "all" in names:  # HF: every installed integration
        names = [n for n in SUPPORTED if n != "csv" and _installed(n)]
    loggers: list[Logger] = []
    for name in names:
        if name == "tensorboard":
            if not _tensorboard_available():
                raise ValueError("`report_to=['tensorboard']` needs TensorBoard: pip install tensorboard")
            loggers.append(TensorBoardLogger(output_dir, name="runs", version=run_name))
        elif name == "csv":
            loggers.append(CSVLogger(output_dir, name="csv_logs", version=run_name))
        elif name == "mlflow":
            _require(name, "mlflow", "pip install mlflow-skinny")
            from lightning.pytorch.loggers import MLFlowLogger

            # a local file store by default, as HF's MLflowCallback without MLFLOW_TRACKING_URI; mlflow 3 refuses
            # file stores unless told otherwise (a database store needs sqlalchemy, not in mlflow-skinny)
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if uri is None:
                uri = Path(output_dir, "mlruns").resolve().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", project),
                                        run_name=run_name, tracking_uri=uri))
        elif name == "wandb":
            _require(name, "wandb", "pip install wandb")
            from lightning.pytorch.loggers import WandbLogger

            # offline unless the user configured W&B (WANDB_MODE), since hftrain assumes no network
            loggers.append(WandbLogger(name=run_name, project=os.environ.get("WANDB_PROJECT", project),
                                       save_dir=output_dir, offline=os.environ.get("WANDB_MODE", "offline") == "offline"))
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


def _installed(name: str) -> bool:
    return _tensorboard_available() if name == "tensorboard" else importlib.util.find_spec(name) is not None


def _require(name: str, module: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"`report_to=[{name!r}]` needs the {module} package: {hint}")
