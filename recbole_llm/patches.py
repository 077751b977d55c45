"""Every change recbole-llm makes to RecBole (and the libraries under it), in one table.

RecBole 1.2.1 needs fixes to run on NumPy 2 and torch >= 2.6, and our protocol, metrics and training modes
hook into a few of its methods. Each row of ``PATCHES`` names its target, the function that wraps (or
replaces) it and why; ``apply()`` checks the RecBole version first and refuses one the table was not
written for, checks that every target exists where the table says (an inherited or renamed method would
be patched in the wrong place), applies the rows in order (later rows wrap earlier ones) and records what
it replaced. Nothing in site-packages is edited. Checkpoints are read and written by ``checkpoints.py``.
"""
from __future__ import annotations

import copy
import functools
import importlib
import os
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .checkpoints import checkpoint_config, load_checkpoint, save_checkpoint

# RecBole versions whose internals the table was written against (and tested with)
SUPPORTED_RECBOLE = ("1.2.1",)
# set to 1 to try another RecBole version anyway (a warning, not a refusal)
UNTESTED_RECBOLE_ENV = "RECBOLE_LLM_ALLOW_UNTESTED_RECBOLE"


class _CheckpointTorch(types.ModuleType):
    """``torch`` as seen by RecBole's trainer module: its ``save`` writes a checkpoint as plain data (the Config
    as a record, ``checkpoints.save_checkpoint``) and its ``load`` reads with ``weights_only=True``
    (``checkpoints.load_checkpoint``): ``_save_checkpoint``, ``evaluate(load_best_model=True)`` and
    ``resume_checkpoint`` then never unpickle objects. The rest is torch itself."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "config" in obj and isinstance(f, (str, os.PathLike)):
            return save_checkpoint(obj, f)
        return torch.save(obj, f, *args, **kwargs)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return load_checkpoint(f, map_location or "cpu")


def _checkpoint_torch(original):
    return _CheckpointTorch()


def _load_data_and_model_safely(original):
    @functools.wraps(original)
    def load_data_and_model(model_file, trusted: bool = False):
        """RecBole's ``load_data_and_model`` on a checkpoint read with ``weights_only=True`` (its settings rebuilt
        into a Config); a pickled checkpoint only with ``trusted=True`` or RECBOLE_LLM_TRUST_CHECKPOINTS=1."""
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, init_logger, init_seed

        checkpoint = load_checkpoint(model_file, trusted=trusted)
        config = checkpoint_config(checkpoint, model_file)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
        return config, model, dataset, train_data, valid_data, test_data

    return load_data_and_model


def _numpy_alias(value):
    return lambda original: value


def _collector_moves_only_tensors(original):
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

    return get_data_struct


def _ensure_dir(original):
    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    return ensure_dir


def _ranks_load_rank0s_checkpoint(original):
    import torch.distributed as dist

    @functools.wraps(original)
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and model_file is None and not self.config["single_spec"]:
            name = [self.saved_model_file]
            dist.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]
        return original(self, eval_data, load_best_model, model_file, show_progress)

    return evaluate


def _no_flops_probe_for_llm_calls(original):
    @functools.wraps(original)
    def get_flops(model, dataset, device, logger, transform, verbose=False):
        if getattr(model, "expensive_scoring", False):
            return 0
        return original(model, dataset, device, logger, transform, verbose)

    return get_flops


def restore_anomaly_detection(enabled_before: bool) -> None:
    """``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
    at import, so importing any RecBole sequential model makes every backward pass of the whole process
    check every gradient for NaN: on Beauty's SASRec that was a fifth of a training step (``aten::ne`` and
    ``aten::any`` on every tensor). Numbers are unchanged; we put the switch back where it was before
    RecBole was imported (a user who turned it on keeps it)."""
    import recbole.model.sequential_recommender  # noqa: F401  (the import that flips it)

    torch.autograd.set_detect_anomaly(enabled_before)


@dataclass(frozen=True)
class Patch:
    target: str  # "module:attribute" or "module:Class.attribute"
    wrap: Callable[[Any], Any]  # the original -> what replaces it
    reason: str
    only_if_missing: bool = False  # NumPy aliases: set only where the name is gone


def _literal_settings(original):
    """``Config._convert_config_dict`` with ``ast.literal_eval`` in place of ``eval``: the same numbers, lists,
    dicts, booleans and None, but a string setting (from the command line, ``report --set`` or an experiment file)
    can no longer run code; anything that is not a literal stays the string it was."""
    import ast

    @functools.wraps(original)
    def _convert_config_dict(self, config_dict):
        for key, param in config_dict.items():
            if not isinstance(param, str):
                continue
            try:
                value = ast.literal_eval(param.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                lowered = param.lower()
                value = True if lowered == "true" else False if lowered == "false" else param
            config_dict[key] = value
        return config_dict

    return _convert_config_dict


def exhaustive_with_generator(original):
    """RecBole's ``exhaustive_search`` draws from ``np.random.RandomState``, but hyperopt >= 0.2.7 samples with
    ``rng.integers`` (a ``numpy.random.Generator``): the same function, given ``default_rng`` (RecBole #1868)."""
    numpy_with_generator = types.SimpleNamespace(random=types.SimpleNamespace(RandomState=np.random.default_rng))
    return types.FunctionType(original.__code__, {**original.__globals__, "np": numpy_with_generator},
                              original.__name__, original.__defaults__, original.__closure__)


def _numpy_rows() -> tuple[Patch, ...]:
    """First, before anything imports RecBole (its imports read these names)."""
    return tuple(Patch(f"numpy:{name}", _numpy_alias(value), "removed in NumPy 2; RecBole's Config and metrics "
                       "and ray 2.6 still read it", only_if_missing=True)
                 for name, value in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
                                     ("float", float), ("bool8", np.bool_)))


def _recbole_rows() -> tuple[Patch, ...]:
    from . import metrics, paper_dataset, prepare, registry
    from .data import protocol

    trainer, collector = "recbole.trainer.trainer:Trainer", "recbole.evaluator.collector:Collector"
    rows = []
    trusted = ("RecBole pickles its Config (protocol 4) into every checkpoint: loading one could run code, and "
               "torch >= 2.6's weights_only=True refuses it; checkpoints are written as plain data instead and "
               "read with weights_only=True (recbole_llm/checkpoints.py)")
    rows += [Patch("recbole.trainer.hyper_tuning:exhaustive_search", exhaustive_with_generator,
                   "HyperTuning(algo='exhaustive') fails with hyperopt 0.3: it hands a RandomState where hyperopt "
                   "samples with Generator.integers (RecBole #1868)")]
    rows += [Patch("recbole.config.configurator:Config._convert_config_dict", _literal_settings,
                   "it eval()s every string setting (command line, config_dict): a setting could run code")]
    rows += [
        Patch("recbole.trainer.trainer:torch", _checkpoint_torch, trusted),
        Patch("recbole.quick_start.quick_start:load_data_and_model", _load_data_and_model_safely, trusted),
        Patch("recbole.quick_start:load_data_and_model", _load_data_and_model_safely, trusted),
        Patch(f"{collector}.get_data_struct", _collector_moves_only_tensors,
              "it calls .cpu() on every entry, but data.num_items is an int and data.count_items a Counter: "
              "ItemCoverage, AveragePopularity, GiniIndex, TailPercentage and our metrics crash"),
    ]
    rows += [Patch(f"{module}:ensure_dir", _ensure_dir,
                   "check-then-create: the processes of a DDP run create ./log/<model> at once and all but the "
                   "first die with FileExistsError")
             for module in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger",
                            "recbole.trainer.trainer", "recbole.data.dataset.dataset", "recbole.data.utils")]
    rows += [
        Patch(f"{trainer}.evaluate", _ranks_load_rank0s_checkpoint,
              "in a DDP run only rank 0 writes the best checkpoint, under a name of its own second, and nothing "
              "makes the others wait: every rank takes rank 0's file name (a broadcast that also waits)"),
    ]
    rows += [Patch("recbole.quick_start.quick_start:get_flops", _no_flops_probe_for_llm_calls,
                   "run_recbole scores one interaction before training to count FLOPs: for a model whose every score "
                   "is an LLM call that is a generation (paid, or minutes on CPU) by a model not fine-tuned yet")]
    rows += [Patch(f"{module}:{name}", route, "RecBole finds models only in recbole.model.*; ours register by name")
             for module in ("recbole.utils", "recbole.utils.utils", "recbole.quick_start.quick_start",
                            "recbole.config.configurator")
             for name, route in (("get_model", registry.route_get_model), ("get_trainer", registry.route_get_trainer))
             if name != "get_trainer" or module != "recbole.config.configurator"]
    rows += [
        Patch("recbole.config.configurator:Config._load_internal_config_dict", registry.config_with_our_defaults,
              "RecBole reads default yaml only from its own properties/model/<Name>.yaml"),
        Patch("recbole.config.configurator:Config._set_default_parameters", registry.negative_sampling_per_model,
              "one preset for CE and BPR models: each gets the negative sampling its loss needs"),
        Patch(f"{collector}.eval_batch_collect", metrics.collect_positive_pairs,
              "Serendipity needs every target item's identity, which the collector does not keep"),
        Patch(f"{collector}.get_data_struct", metrics.release_positive_pairs, "see eval_batch_collect"),
        Patch(f"{collector}.data_collect", metrics.collect_item_embeddings,
              "IntraListDiversity reads the embedder's item vectors"),
        *[Patch(f"{module}:data_preparation", prepare.prepare_after_split,
                "the prepare stage (embedding files, LLM states) between the split and the model, in every flow")
          for module in ("recbole.data.utils", "recbole.data", "recbole.quick_start.quick_start")],
        *[Patch(f"{module}:create_dataset", paper_dataset.create_dataset_route,
                "RecBole picks dataset classes only among its own: our models and the SESSION split / train_mode "
                "get ours (paper_dataset.py), every other run RecBole's")
          for module in ("recbole.data.utils", "recbole.data", "recbole.quick_start.quick_start")],
        Patch(f"{trainer}.evaluate", protocol.evaluate_with_prompt_mask,
              "the paper masks the prompt's items at evaluation (exclude_session_items)"),
        Patch(f"{trainer}._full_sort_batch_eval", protocol.batch_eval_with_prompt_mask, "see Trainer.evaluate"),
        Patch(f"{collector}.data_collect", protocol.collect_metric_popularity,
              "metric_popularity: all counts every interaction, as the paper's evaluation"),
    ]
    return tuple(rows)


def table() -> tuple[Patch, ...]:
    """Every patch, in the order applied (a later row wraps what an earlier row left)."""
    return _numpy_rows() + _recbole_rows()


_APPLIED: list[tuple[Patch, Any, Any]] = []  # (row, what it replaced, what replaced it), in order


def check_recbole_version(version: str | None = None) -> None:
    """Refuse a RecBole the table was not written for: its internals (the patched methods) change between
    versions, and a silently wrong patch would give wrong numbers, not an error."""
    import warnings

    if version is None:
        import recbole

        version = recbole.__version__
    if version in SUPPORTED_RECBOLE:
        return
    message = (f"recbole-llm supports RecBole {', '.join(SUPPORTED_RECBOLE)} and found RecBole {version}: "
               f"install it with `pip install recbole=={SUPPORTED_RECBOLE[-1]}`")
    if os.environ.get(UNTESTED_RECBOLE_ENV) == "1":
        warnings.warn(message + f" ({UNTESTED_RECBOLE_ENV}=1: trying anyway)", RuntimeWarning, stacklevel=2)
        return
    raise RuntimeError(message + f", or set {UNTESTED_RECBOLE_ENV}=1 to try this one at your own risk")


def _resolve(row: Patch) -> tuple[Any, str]:
    """(owner, attribute name) of ``module:attr`` / ``module:Class.attr``; the attribute must be defined on
    that owner itself (an inherited or renamed method would be patched in the wrong place)."""
    module_name, _, path = row.target.partition(":")
    *parents, name = path.split(".")
    try:
        owner = importlib.import_module(module_name)
        for parent in parents:
            owner = getattr(owner, parent)
    except (ImportError, AttributeError) as error:
        owner, name = None, f"{error}"
    if owner is None or (not row.only_if_missing and name not in vars(owner)):
        raise RuntimeError(f"recbole-llm cannot patch {row.target} ({row.reason}): it is not there in this "
                           f"installation; recbole-llm is written for RecBole {', '.join(SUPPORTED_RECBOLE)}")
    return owner, name


def apply() -> None:
    """Check the RecBole version, then apply every row of the table once (safe to call repeatedly)."""
    if _APPLIED:
        return
    _apply_rows(_numpy_rows())
    check_recbole_version()
    _apply_rows(_recbole_rows())


def _apply_rows(rows: tuple[Patch, ...]) -> None:
    targets = [_resolve(row) for row in rows]  # every target is checked before anything is replaced
    for row, (owner, name) in zip(rows, targets):
        original = vars(owner).get(name)
        if row.only_if_missing and original is not None:
            continue
        replacement = row.wrap(original)
        setattr(owner, name, replacement)
        _APPLIED.append((row, original, replacement))


def original(target: str):
    """What ``target`` ("module:attribute") was before the table replaced it (the first row on it)."""
    for row, before, _ in _APPLIED:
        if row.target == target:
            return before
    owner, name = _resolve(Patch(target, None, ""))
    return vars(owner)[name]


def applied() -> list[tuple[Patch, Any, Any]]:
    """(row, original, replacement) for every row applied in this process, in order."""
    return list(_APPLIED)


__all__ = ["Patch", "apply", "applied", "original", "check_recbole_version", "load_checkpoint", "restore_anomaly_detection",
           "table", "SUPPORTED_RECBOLE"]
