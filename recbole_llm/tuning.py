"""Hyper-parameter tuning through RecBole's HyperTuning on the paper's temporal folds.

The objective is the mean validation score (``valid_metric``, NDCG@20 by
default) over forward-chaining folds (``temporal_fold`` 1..3): the test sessions
are never evaluated while tuning. The paper's search discipline is available:
random warm-up trials before TPE, pruning a trial in the bottom 20% after a fold,
early stop after N trials with no improvement, and a wall-clock budget.
"""
from __future__ import annotations

import logging
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from recbole.config import Config
from recbole.trainer import HyperTuning
from tqdm.auto import tqdm

from .errors import MissingFileError
from .registry import PROPERTIES_DIR

logger = logging.getLogger(__name__)
TRIAL_FIELDS = ("score", "folds_run", "pruned", "seconds", "status")  # a trial row's columns beside its settings


def search_space_file(model: str) -> Path:
    """``properties/hyper/<Model>.hyper``, else the nearest base class's (PaperSASRec searches SASRec's space)."""
    from .registry import get_model

    for cls in get_model(model).__mro__:
        path = PROPERTIES_DIR / "hyper" / f"{cls.__name__}.hyper"
        if path.is_file():
            return path
    raise MissingFileError(f"no search space for {model}: expected {PROPERTIES_DIR / 'hyper' / (model + '.hyper')} "
                            "(RecBole's .hyper format)")


def train_and_validate(model: str, dataset: str, config_file_list, config_dict) -> tuple[float, dict, Config]:
    """Train on one fold and return the best validation score; never evaluates test."""
    from . import pipeline

    run = pipeline.build(model, dataset, config_file_list, config_dict, preset=False, logger=True)
    score, result = run.trainer.fit(run.train_data, run.valid_data, verbose=False, saved=False, show_progress=False)
    return float(score), dict(result), run.config


class FoldObjective:
    """RecBole HyperTuning objective: mean validation score over temporal folds,
    with pruning of trials in the bottom ``prune_quantile`` after any fold."""

    def __init__(self, model: str, dataset: str, folds=(1, 2, 3), base_config: dict | None = None,
                 prune_quantile: float | None = 0.2, min_trials_to_prune: int = 4, csv_path: Path | None = None):
        self.model, self.dataset, self.folds = model, dataset, tuple(folds)
        self.base_config = dict(base_config or {})
        self.prune_quantile = prune_quantile
        self.min_trials_to_prune = min_trials_to_prune
        self.fold_history: dict[int, list[float]] = {fold: [] for fold in self.folds}
        self.rows: list[dict] = []
        self.bigger = True
        self.csv_path = Path(csv_path) if csv_path else None
        if self.csv_path and self.csv_path.exists():  # a rerun: the finished trials stay, and count
            import pandas as pd

            self.rows = [{k: _plain(v) for k, v in row.items()}  # empty cells come back as NaN: they were None
                         for row in pd.read_csv(self.csv_path).to_dict("records")]

    def record(self, row: dict) -> None:
        """Keep a finished (or failed) trial and append it to the CSV at once."""
        self.rows.append(row)
        if self.csv_path:
            import pandas as pd

            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(self.rows).to_csv(self.csv_path, index=False)

    def __call__(self, params: dict, config_file_list=None) -> dict:
        started, scores, pruned = time.perf_counter(), [], False
        for fold in self.folds:
            config_dict = {**self.base_config, **params, "temporal_fold": fold}
            score, _, config = train_and_validate(self.model, self.dataset, config_file_list, config_dict)
            self.bigger = bool(config["valid_metric_bigger"])
            scores.append(score)
            history = self.fold_history[fold]
            if self._in_bottom(score, history) and fold != self.folds[-1]:
                pruned = True
                history.append(score)
                break
            history.append(score)
        mean = statistics.mean(scores)
        row = {**params, "score": mean, "folds_run": len(scores), "pruned": pruned,
               "seconds": round(time.perf_counter() - started, 1), "status": "ok"}
        self.record(row)
        return {"model": self.model, "best_valid_score": mean, "valid_score_bigger": self.bigger,
                "best_valid_result": {"mean_valid_score": round(mean, 6), "folds_run": len(scores), "pruned": pruned},
                "test_result": {"test": "not evaluated while tuning"}}

    def _in_bottom(self, score: float, history: list[float]) -> bool:
        if not self.prune_quantile or len(history) < self.min_trials_to_prune:
            return False
        q = self.prune_quantile if self.bigger else 1 - self.prune_quantile
        cutoff = float(np.quantile(history, q))
        return score < cutoff if self.bigger else score > cutoff


class TuningInterrupted(KeyboardInterrupt):
    """Ctrl-C during tuning: what was kept and how to resume (one line, exit 130)."""


def _trial_line(row: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in row.items() if k not in TRIAL_FIELDS)
    if row.get("status", "ok") != "ok":
        return f"{params}: {row['status']}"
    score = row.get("score")
    return (f"{params}: mean validation {score:.4f} over {row.get('folds_run')} folds"
            f"{' (pruned)' if row.get('pruned') else ''}, {row.get('seconds')} s")


class TemporalHyperTuning(HyperTuning):
    """RecBole's HyperTuning plus TPE warm-up trials and a wall-clock budget."""

    def __init__(self, objective_function, *, warmup: int = 5, budget_seconds: float | None = None,
                 trials_path: Path | None = None, **kwargs):
        super().__init__(objective_function, **kwargs)
        self.trials_path = Path(trials_path) if trials_path else None
        self.trials = None
        if kwargs.get("algo", "bayes") == "bayes":
            from hyperopt import tpe

            self.algo = partial(tpe.suggest, n_startup_jobs=warmup)
        self.budget_seconds = budget_seconds
        self._bar = None

    def trial(self, params):
        """RecBole's trial; a trial that raises (an invalid combination, a crash) is logged, written
        to the CSV as failed and reported to hyperopt as failed, and the search goes on."""
        import hyperopt

        try:
            result = super().trial(params)
        except Exception as error:  # noqa: BLE001  (any failure of one trial must not end the search)
            logger.warning("trial failed, the search goes on: %s: %s", type(error).__name__, error)
            self.objective_function.record({**{k: _plain(v) for k, v in params.items()}, "score": None,
                                            "folds_run": 0, "pruned": False, "seconds": None,
                                            "status": f"failed: {type(error).__name__}: {error}"[:300]})
            result = {"status": hyperopt.STATUS_FAIL, "loss": float("inf")}  # early stopping reads a loss
        if self._bar is not None:
            self._bar.update(1)
            if self.best_score is not None:
                self._bar.set_postfix(best=f"{self.best_score:.4f}")
            self._bar.write(f"trial {len(self.objective_function.rows)}: {_trial_line(self.objective_function.rows[-1])}")
        return result

    def _finished_trials(self):
        """The study's trials without one left unfinished (hyperopt enters a trial before running it): an
        interrupted trial must run again, not count as done."""
        from hyperopt import JOB_STATE_DONE, JOB_STATE_ERROR

        self.trials._dynamic_trials = [t for t in self.trials._dynamic_trials
                                       if t["state"] in (JOB_STATE_DONE, JOB_STATE_ERROR)]
        self.trials.refresh()
        return self.trials

    def _save_trials(self) -> None:
        if self.trials_path is not None and self.trials is not None:
            import pickle

            tmp = self.trials_path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self._finished_trials()))
            tmp.replace(self.trials_path)

    def run(self):
        import pickle

        from hyperopt import Trials, fmin

        self.trials = Trials()
        if self.trials_path is not None and self.trials_path.exists():  # resume the study where it stopped
            self.trials = pickle.loads(self.trials_path.read_bytes())  # our own file, written by _save_trials
            self._finished_trials()
            print(f"resuming the study in {self.trials_path}: {len(self.trials.trials)} trials done", flush=True)

        def save_after_each_trial(*args):  # hyperopt's early-stop hook runs after every finished trial
            self._save_trials()
            return self.early_stop_fn(*args) if self.early_stop_fn else (False, args[1:])

        with tqdm(total=self.max_evals, initial=len(self.trials.trials), desc="tuning trials") as self._bar:
            try:
                fmin(self.trial, self.space, algo=self.algo, max_evals=self.max_evals,
                     early_stop_fn=save_after_each_trial, timeout=self.budget_seconds, show_progressbar=False,
                     trials=self.trials)
            except KeyboardInterrupt:
                self._save_trials()
                raise TuningInterrupted(f"interrupted: {len(self.trials.trials)} finished trials kept in "
                                        f"{self.trials_path}; the interrupted trial is not counted. Run the same "
                                        "command again to resume the study") from None
        self._save_trials()


def tune(model: str, dataset: str, *, max_evals: int = 20, folds=(1, 2, 3), params_file=None, config_file_list=None,
         base_config: dict | None = None, warmup: int = 5, early_stop: int = 10, budget_seconds=None,
         prune_quantile: float | None = 0.2, output_dir: str | Path = "tuning", algo: str = "bayes",
         prune_after: int = 4) -> dict:
    """Tune ``model`` on ``dataset``; writes ``<output_dir>/<model>-<dataset>.yaml`` (rerunnable config)
    and ``.csv`` (every trial, appended as it ends; failed ones marked). A rerun resumes the study from
    ``.trials.pkl``. The paper's search: ``warmup=40, early_stop=100, prune_after=10``. Returns the best
    parameters and score."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / f"{model}-{dataset}.csv"
    objective = FoldObjective(model, dataset, folds, base_config, prune_quantile, prune_after, csv_path=csv_path)
    tuner = TemporalHyperTuning(
        objective, params_file=str(params_file or search_space_file(model)), fixed_config_file_list=config_file_list,
        algo=algo, max_evals=max_evals, early_stop=early_stop, warmup=warmup, budget_seconds=budget_seconds,
        trials_path=output_dir / f"{model}-{dataset}.trials.pkl",
    )
    tuner.run()
    finished = [r for r in objective.rows if r.get("status", "ok") == "ok" and r.get("score") is not None]
    if not finished:
        raise RuntimeError(f"every tuning trial failed; see {csv_path}")
    return write_best(objective.rows, finished, objective.bigger, model=model, dataset=dataset, folds=folds,
                      base_config=base_config, output_dir=output_dir)


def write_best(rows: list[dict], candidates: list[dict], bigger: bool, *, model: str, dataset: str, folds,
               base_config: dict | None, output_dir: Path, trials: str = "trials") -> dict:
    """The best of ``candidates`` (rows that may win) as ``<output_dir>/<model>-<dataset>.yaml``, a config file
    whose header says how to rerun it, and every trial of ``rows`` printed best first; the search's result."""
    import pandas as pd

    best_row = (max if bigger else min)(candidates, key=lambda r: r["score"])
    best = {k: _plain(v) for k, v in best_row.items() if k not in TRIAL_FIELDS}
    best_config = {**(base_config or {}), **best}
    best_config.pop("temporal_fold", None)
    target = Path(output_dir) / f"{model}-{dataset}.yaml"
    header = (f"# best of {len(rows)} {trials}, mean validation {best_row['score']:.4f} over folds {list(folds)}\n"
              f"# rerun: python run_recbole_llm.py --model={model} --dataset={dataset} --config_files={target}\n")
    target.write_text(header + yaml.safe_dump(best_config, sort_keys=True))
    print(pd.DataFrame(rows).sort_values("score", ascending=not bigger, na_position="last").to_string(index=False))
    return {"best_params": best, "best_score": best_row["score"], "config_file": str(target), "trials": rows}


def _plain(value):
    """A numpy scalar as Python's; NaN (an empty CSV cell: a setting that was None) as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
