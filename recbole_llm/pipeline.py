"""The one place a run is assembled: config -> dataset -> splits -> model -> trainer.

The report's runs, tuning trials, ``recommend``, the benchmarks and the tests all build through here, so
how a run is put together (the preset's files, the checks before any work, when the seed is set) is written
once. ``run_recbole_llm.py`` itself hands the same files to RecBole's own ``run``, which does these steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Run:
    """What a run is made of; ``model`` and ``trainer`` are set by ``build_model``."""

    config: Any
    dataset: Any  # the whole data set, before the split
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any = None
    trainer: Any = None
    init_seconds: float = 0.0  # building the model (embedding tables, checkpoints read)


def load_data(model, dataset, config_file_list=None, config_dict=None, *, preset: bool = True,
              logger: bool = False, check: Callable[[Any], None] | None = None) -> Run:
    """Config (the paper preset's files first unless ``preset`` is False), the checks that refuse a bad run
    before any work (and ``check``, the caller's own), the data set and its three loaders."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    from .quick_start import config_files, prepare_dataset

    files = config_files(config_file_list, model, dataset) if preset else list(config_file_list or [])
    config = prepare_dataset(model, dataset, files, config_dict)
    if check is not None:
        check(config)
    init_seed(config["seed"], config["reproducibility"])
    if logger:
        init_logger(config)
    full = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, full)
    return Run(config, full, train_data, valid_data, test_data)


def build_model(run: Run, trainer_class=None, with_trainer: bool = True) -> Run:
    """The model on the run's training split and its trainer (the model's own, or ``trainer_class``; none
    with ``with_trainer=False``: RecBole's Trainer creates log and checkpoint folders)."""
    from recbole.utils import init_seed

    from .registry import get_model, get_trainer

    config = run.config
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    started = time.perf_counter()
    run.model = get_model(config["model"])(config, run.train_data._dataset).to(config["device"])
    run.init_seconds = time.perf_counter() - started
    if with_trainer:
        trainer_class = trainer_class or get_trainer(config["MODEL_TYPE"], config["model"])
        run.trainer = trainer_class(config, run.model)
    return run


def build(model, dataset, config_file_list=None, config_dict=None, *, preset: bool = True, logger: bool = False,
          trainer_class=None) -> Run:
    """``load_data`` then ``build_model``."""
    return build_model(load_data(model, dataset, config_file_list, config_dict, preset=preset, logger=logger),
                       trainer_class)
