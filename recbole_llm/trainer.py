"""Trainers: for models fitted once, for a step budget, and resumable training (mixed into any of them)."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from recbole.trainer import Trainer

from .checkpoints import load_checkpoint, save_checkpoint
from .errors import SettingError


class FitOnceTrainer(Trainer):
    """Models fitted at construction (LLMSeqSim, SKNN, hybrids over trained
    checkpoints) set ``needs_training = False``: no training epochs, one
    validation pass, then RecBole's usual checkpoint and test evaluation.
    Models with ``needs_training = True`` train as with RecBole's Trainer."""

    def __init__(self, config, model):
        super().__init__(config, model)
        if not getattr(model, "needs_training", True):
            self.epochs = 1

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if getattr(self.model, "needs_training", True):
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        return 0.0

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation, plus any figures the model reports about itself
        (LLMSeqPrompt: unique recommendations, hallucination rate, ...)."""
        report = getattr(self.model, "evaluation_report", None)
        if report is not None:
            report()  # discard what was counted outside this evaluation (e.g. RecBole's FLOPs probe)
        result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if result is not None and report is not None:
            result.update(report())
        return result


class _FirstBatches:
    """A RecBole train loader seen through a budget: at most ``limit`` batches."""

    def __init__(self, loader, limit: int):
        self._loader, self._limit = loader, limit

    def __iter__(self):
        for number, batch in enumerate(self._loader):
            if number >= self._limit:
                break
            yield batch

    def __len__(self):
        return min(self._limit, len(self._loader))

    def __getattr__(self, name):
        return getattr(self._loader, name)


class StepBudgetTrainer(Trainer):
    """RecBole's Trainer with at most ``config[steps_key]`` batches per epoch (unset: all), for models whose
    steps are expensive (a forward and backward pass through an LLM)."""

    steps_key = "llmsrec_max_train_steps"

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        limit = self.config[self.steps_key]
        if limit:
            train_data = _FirstBatches(train_data, int(limit))
        return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)


class ResumableTraining:
    """Mixed into a model's own trainer by ``resumable``: each training epoch is timed, and after each
    validated epoch the whole training state goes to ``resume_file`` (RecBole's checkpoint fields, which its
    ``resume_checkpoint`` reads, plus what it leaves out but an exact continuation needs: the best result so
    far, where the best checkpoint is, every random generator), so a stopped run goes on where it stopped and
    ends as an uninterrupted one would. ``finish()`` removes the file once the run's results are written."""

    def setup_resume(self, resume_file, train_data, started: float | None = None) -> dict:
        """Restore from ``resume_file`` if it exists; returns the progress (epoch times, losses, valid curve)."""
        self.resume_file = Path(resume_file)
        self._train_data = train_data
        self._started = time.perf_counter() if started is None else started
        self.progress = {"epoch_seconds": [], "train_loss": [], "valid_curve": [], "wall_before": 0.0,
                         "resumed_at_epoch": None}
        if self.resume_file.exists():
            self.progress = self._restore()
        return self.progress

    def wall_seconds(self) -> float:
        """Wall time of the run, over every session it took."""
        return self.progress["wall_before"] + time.perf_counter() - self._started

    def _train_epoch(self, *args, **kwargs):
        started = time.perf_counter()
        loss = super()._train_epoch(*args, **kwargs)
        if hasattr(self, "progress"):
            self.progress["epoch_seconds"].append(time.perf_counter() - started)
            self.progress["train_loss"].append(float(sum(loss) if isinstance(loss, tuple) else loss))
        return loss

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        # fitted-once models have no epochs to go on from
        if getattr(self, "resume_file", None) is None or not getattr(self.model, "needs_training", True):
            return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

        def save_progress(epoch, score):
            self.progress["valid_curve"].append({"epoch": epoch, "valid_score": float(score),
                                                 "wall_seconds": round(self.wall_seconds(), 1)})
            self._save(epoch)
            if callback_fn is not None:
                callback_fn(epoch, score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, save_progress)

    def finish(self) -> None:
        self.resume_file.unlink(missing_ok=True)

    def _save(self, epoch: int) -> None:
        state = {
            "config": self.config, "epoch": epoch, "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score, "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(), "optimizer": self.optimizer.state_dict(),
            "best_valid_result": self.best_valid_result, "best_checkpoint": self.saved_model_file,
            "progress": {**self.progress, "wall_before": self.wall_seconds()},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "loader": self._train_data.generator.get_state()},
        }
        save_checkpoint(state, self.resume_file)  # plain data: read back with weights_only=True

    def _check_same_settings(self, record) -> None:
        """A resume file goes on only under the settings it was made with: resuming with another learning rate
        would mix two runs while the result recorded only the new one."""
        from .checkpoints import config_hashes

        if not isinstance(record, dict) or "hash" not in record:
            raise SettingError(f"resume file {self.resume_file} records no settings (an older format): delete it to "
                             "start the run again")
        if record["hash"] in config_hashes(self.config):  # also one made before a default moved into yaml
            return
        before = record.get("settings", {})
        now = {k: v for k, v in dict(self.config.external_config_dict).items() if k not in ("model", "dataset")}
        changed = sorted(k for k in set(before) | set(now)
                         if str(before.get(k)) != str(now.get(k)) and k not in ("state", "show_progress"))
        raise SettingError(f"resume file {self.resume_file} was made under other settings "
                         f"({', '.join(changed) or 'the preset files'} changed): resuming would mix two runs. "
                         "Run with the settings it was made with, or delete the file to start again")

    def _restore(self) -> dict:
        try:
            state = load_checkpoint(self.resume_file, self.device)
        except SettingError as error:  # cut short or overwritten: there is nothing to go on from
            raise SettingError(f"resume file {self.resume_file} is damaged ({error}): it cannot be resumed; delete "
                               "it to start the run again") from None
        if not isinstance(state, dict) or not {"config", "rng", "progress", "best_valid_result"} <= set(state):
            raise SettingError(f"resume file {self.resume_file} is not a resume file of this run (fields missing): "
                               "delete it to start the run again")
        self._check_same_settings(state.get("config"))
        self.resume_checkpoint(self.resume_file)  # model, optimizer, start epoch, early-stopping counters
        self.best_valid_result = state["best_valid_result"]
        self.saved_model_file = state["best_checkpoint"]  # resume_checkpoint pointed it at the resume file
        if self.cur_step > self.stopping_step:  # it had early-stopped: only the test evaluation was left
            self.start_epoch = self.epochs
        if self.start_epoch >= self.epochs:  # fit() then saves the model as is over the best checkpoint
            self.model.load_state_dict(load_checkpoint(self.saved_model_file, self.device)["state_dict"])
        torch.set_rng_state(state["rng"]["torch"])
        kind, keys, *rest = state["rng"]["numpy"]  # saved as plain data: the key array as a tensor
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(state["rng"]["python"])
        self._train_data.generator.set_state(state["rng"]["loader"])
        return {**state["progress"], "resumed_at_epoch": state["epoch"] + 1}


def resumable(trainer_class: type) -> type:
    """``trainer_class`` (the model's own trainer) with ``ResumableTraining`` mixed in."""
    if issubclass(trainer_class, ResumableTraining):
        return trainer_class
    return type(f"Resumable{trainer_class.__name__}", (ResumableTraining, trainer_class), {})
