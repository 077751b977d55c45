"""Compatibility fixes that make RecBole 1.2.1 run on NumPy 2 and torch >= 2.6.

Everything here is applied once, on ``import recbole_llm``, before any recbole
module is used. Nothing in site-packages is edited. Each fix says why it exists.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import types

import numpy as np
import torch

_APPLIED = False


def _alias_removed_numpy_names() -> None:
    """NumPy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_``, ``np.float``
    and ``np.bool8``. RecBole's ``Config.compatibility_settings`` reads the first
    three, its metrics use ``np.float`` and ray 2.6 uses ``np.bool8``."""
    aliases = {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "float": float,
        "bool8": np.bool_,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)


class _TrustedCheckpointTorch(types.ModuleType):
    """``torch`` as seen by RecBole's trainer and quick start.

    torch >= 2.6 loads with ``weights_only=True``; RecBole checkpoints pickle the
    Config, so its own ``evaluate(load_best_model=True)``, ``resume_checkpoint``
    and ``load_data_and_model`` fail. Only those call sites get
    ``weights_only=False`` (they load checkpoints the user wrote); the rest of the
    process keeps torch's safe default."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


@contextlib.contextmanager
def trusted_checkpoint_loading():
    """For the duration of the block, ``torch.load`` unpickles full objects
    (torch reads this variable at call time)."""
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def _trust_recbole_checkpoints() -> None:
    import recbole.quick_start as quick_start_package
    import recbole.quick_start.quick_start as quick_start
    import recbole.trainer.trainer as trainer

    proxy = _TrustedCheckpointTorch()
    trainer.torch = proxy
    quick_start.torch = proxy
    original = quick_start.load_data_and_model

    @functools.wraps(original)
    def load_data_and_model(*args, **kwargs):  # it does ``import torch`` locally
        with trusted_checkpoint_loading():
            return original(*args, **kwargs)

    quick_start.load_data_and_model = load_data_and_model
    quick_start_package.load_data_and_model = load_data_and_model


def _guard_collector_cpu() -> None:
    """``Collector.get_data_struct`` calls ``.cpu()`` on every entry, but
    ``data.num_items`` is an int and ``data.count_items`` a Counter, so ItemCoverage,
    AveragePopularity, GiniIndex, TailPercentage (and our beyond-accuracy metrics)
    crash. Move only tensors."""
    from recbole.evaluator.collector import Collector

    def get_data_struct(self):
        data = self.data_struct._data_dict
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                data[key] = value.cpu()
        returned = copy.deepcopy(self.data_struct)
        for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
            if key in self.data_struct:
                del self.data_struct[key]
        return returned

    Collector.get_data_struct = get_data_struct


def _race_free_ensure_dir() -> None:
    """RecBole's ``ensure_dir`` checks, then creates: the processes of a DDP run
    (``nproc`` > 1) all create ``./log/<model>`` and the checkpoint folder at once,
    and every process but the first dies with FileExistsError."""
    import importlib

    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    for name in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.dataset.dataset", "recbole.data.utils"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


def _ddp_ranks_load_rank0s_checkpoint() -> None:
    """In a DDP run only rank 0 writes the best checkpoint, under a name holding the time each rank
    built its trainer, and nothing makes the other ranks wait for it: at test time they read a file
    that is half written or named for another second. Every rank now takes rank 0's file name, which
    also waits until rank 0 has finished training and saving."""
    import torch.distributed as dist
    from recbole.trainer import Trainer

    original = Trainer.evaluate

    @functools.wraps(original)
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and model_file is None and not self.config["single_spec"]:
            name = [self.saved_model_file]
            dist.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]
        return original(self, eval_data, load_best_model, model_file, show_progress)

    Trainer.evaluate = evaluate


def restore_anomaly_detection(enabled_before: bool) -> None:
    """``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
    at import, so importing any RecBole sequential model makes every backward pass of the whole process
    check every gradient for NaN: on Beauty's SASRec that was a fifth of a training step (``aten::ne`` and
    ``aten::any`` on every tensor). Numbers are unchanged; we put the switch back where it was before
    RecBole was imported (a user who turned it on keeps it)."""
    import recbole.model.sequential_recommender  # noqa: F401  (the import that flips it)

    torch.autograd.set_detect_anomaly(enabled_before)


def apply() -> None:
    """Apply every fix once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_removed_numpy_names()
    _trust_recbole_checkpoints()
    _guard_collector_cpu()
    _race_free_ensure_dir()
    _ddp_ranks_load_rank0s_checkpoint()
    _APPLIED = True


__all__ = ["apply"]
