"""Every private Lightning name hftrain touches (``hftrain._lightning_compat``) exists on the installed Lightning
and behaves as the module says: the test to read first when Lightning is upgraded."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.precision import HalfPrecision, MixedPrecision, Precision
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from hftrain import _lightning_compat as compat


def test_the_checked_version_is_the_installed_minor():
    assert L.__version__.split(".")[:2] == compat.CHECKED_AGAINST.split(".")[:2]


def test_is_interactive_is_lightnings_flag():
    assert compat.is_interactive() is False  # pytest is not a notebook


def test_the_validation_loop_and_schedule_internals_exist():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    assert hasattr(val_loop._data_source, "instance") and hasattr(val_loop, "_combined_loader")
    assert hasattr(trainer._logger_connector, "_first_loop_iter")
    assert callable(trainer.fit_loop.epoch_loop._should_check_val_fx)
    compat.disable_validation_schedule(trainer)
    assert trainer.fit_loop.epoch_loop._should_check_val_fx() is False


def test_checkpoint_and_early_stopping_check_on_every_validation():
    checkpoint, stopping = ModelCheckpoint(), EarlyStopping(monitor="eval_loss")
    assert checkpoint._save_on_train_epoch_end is None and stopping._check_on_train_epoch_end is None
    compat.check_on_every_validation([checkpoint, stopping])
    assert checkpoint._save_on_train_epoch_end is False and stopping._check_on_train_epoch_end is False
    chosen = ModelCheckpoint(save_on_train_epoch_end=True)
    compat.check_on_every_validation([chosen])
    assert chosen._save_on_train_epoch_end is True  # a user's explicit choice stays


def test_result_carrying_launchers_override_lightnings_hooks_and_keep_their_launch():
    from lightning.pytorch.strategies.launchers.xla import _XLALauncher

    for name in ("get_extra_results", "update_main_process_results"):
        assert name in vars(_MultiProcessingLauncher) and name in vars(compat._ResultCarryingXLALauncher)
    for carrying, lightning_launcher in ((compat._ResultCarryingLauncher, _MultiProcessingLauncher),
                                         (compat._ResultCarryingXLALauncher, _XLALauncher)):
        assert carrying.launch is lightning_launcher.launch  # XLA's xmp.spawn, not the multiprocessing one
        assert carrying.get_extra_results is compat._ResultCarryingLauncher.get_extra_results
        launcher = object.__new__(lightning_launcher)
        launcher.__class__ = carrying  # what carry_results_to_caller does: the layouts agree
    assert not compat.is_multiprocessing_launcher(None)


def test_unscale_once_precision_and_the_scaler_state():
    plugin = compat.unscale_once_precision(MixedPrecision("16-mixed", device="cpu"))
    assert type(plugin) is compat.UnscaleOncePrecision and isinstance(plugin.scaler, torch.amp.GradScaler)
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(weight.sum()).backward()
    assert not compat.gradients_unscaled(scaler, optimizer)
    scaler.unscale_(optimizer)
    assert compat.gradients_unscaled(scaler, optimizer)


def test_deepspeed_accumulation_hook_exists():
    assert callable(getattr(DeepSpeedStrategy, "_format_batch_size_and_grad_accum_config"))
    assert compat.with_deepspeed_accumulation("not deepspeed", 4) == "not deepspeed"


@pytest.mark.parametrize(("plugin", "dtype"), [
    (Precision(), torch.float32),
    (MixedPrecision("bf16-mixed", device="cpu"), torch.bfloat16),
    (HalfPrecision("bf16-true"), torch.bfloat16),
    (object(), torch.float32),  # a plugin Lightning's table does not know
])
def test_compute_dtype(plugin, dtype):
    assert compat.compute_dtype(plugin) is dtype


def test_quiet_lightning_hides_every_process_banner_and_lightnings_own_deprecations():
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with compat.quiet_lightning():
            assert not logging.getLogger("lightning.fabric.utilities.distributed").isEnabledFor(logging.INFO)
            warnings.warn("torch.distributed.nn.functional.all_gather is deprecated, use ...", UserWarning)
        warnings.warn("a user's own warning", UserWarning)
    assert [str(w.message) for w in caught] == ["a user's own warning"]
