"""The one place a run is assembled: config -> dataset -> splits -> prepare (files that cost) -> model -> trainer.

The report's runs, tuning trials, ``recommend``, the benchmarks and the tests all build through here, so
how a run is put together (the preset's files, the checks before any work, when the seed is set) is written
once. ``run_recbole_llm.py`` itself hands the same files to RecBole's own ``run``, which does these steps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)


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
    from recbole.data import create_dataset
    from recbole.utils import init_logger, init_seed

    from .checks import prepare_dataset
    from .patches import original
    from .prepare import prepare
    from .presets import config_files, preset_name

    files = (config_files(config_file_list, model, dataset, preset_name(config_dict)) if preset
             else list(config_file_list or []))
    config = prepare_dataset(model, dataset, files, config_dict)
    if check is not None:
        check(config)
    train_missing_members(config)  # an ensemble's members without a checkpoint, when it asks for that
    init_seed(config["seed"], config["reproducibility"])
    if logger:
        init_logger(config)
    full = create_dataset(config)  # through paper_dataset.create_dataset_route: our class for our models
    # RecBole's split into loaders, then the prepare stage on the training part: the files that cost (embeddings,
    # LLM states, indexes) are made here, before any model is built (RecBole's own flows reach the same stage through
    # the patched data_preparation)
    train_data, valid_data, test_data = original("recbole.data.utils:data_preparation")(config, full)
    prepare(config, train_data._dataset)
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


def train_missing_members(config) -> list[str]:
    """A ScoreEnsemble's members that have no checkpoint yet (``ensemble_train_members: True``), trained before the
    ensemble is built (its constructor only reads checkpoints): each its own run through this pipeline, under its own
    preset files and settings, seeded with the ensemble's seed, resumable from its last validated epoch, and kept
    where ``member_checkpoint`` names it (model, seed, resolved settings), so a finished member is never trained again
    and every ensemble asking for it reads it. On Beauty a PaperSASRec member takes ~5 minutes on one thread, an
    LLM2SASRec ~30. Returns the checkpoints made."""
    from .locks import exclusive
    from .model.ensemble import member_specs
    from .registry import get_model

    if not getattr(get_model(config["model"]), "trains_members", False) or not config["ensemble_train_members"]:
        return []
    made = []
    todo = [spec for spec in member_specs(config) if spec["train"] and not Path(spec["checkpoint"]).is_file()]
    for number, spec in enumerate(todo, 1):
        target = Path(spec["checkpoint"])
        target.parent.mkdir(parents=True, exist_ok=True)
        # one lock per member file: two ensembles sharing a member (two report rows side by side, two terminals)
        # train it once; the second waits, then reads its file
        with exclusive(target):
            if target.is_file():
                continue
            made.append(_train_member(config, spec, target, number, len(todo)))
    return made


def _train_member(config, spec: dict, target: Path, number: int, count: int) -> str:
    """One member's run: its own files and settings, resumable, its best checkpoint moved to ``target`` at the end."""
    from .model.ensemble import member_files_and_settings
    from .registry import get_trainer
    from .trainer import resumable

    files, settings = member_files_and_settings(config, spec)
    settings = {**settings, "checkpoint_dir": str(target.parent), "show_progress": config["show_progress"]}
    logger.info("ensemble member %d/%d: training %s (seed %s) -> %s", number, count, spec["model"],
                settings["seed"], target)
    run = load_data(spec["model"], config["dataset"], files, settings, preset=False)
    run = build_model(run, resumable(get_trainer(run.config["MODEL_TYPE"], run.config["model"])))
    trainer = run.trainer
    trainer.saved_model_file = str(target.with_name(f"{target.stem}.training.pth"))
    trainer.setup_resume(target.with_suffix(".resume.pth"), run.train_data, time.perf_counter())
    trainer.fit(run.train_data, run.valid_data, saved=True, show_progress=bool(config["show_progress"]))
    Path(trainer.saved_model_file).replace(target)  # complete only now: a killed run leaves no member file
    trainer.finish()
    return str(target)
