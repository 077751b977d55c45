"""The same search as ``tuning.tune``, with its trials spread over a Ray cluster (Ray Tune).

Each trial is a Ray task with ``cpus_per_trial`` CPUs (one torch thread per CPU) that trains the model on the
temporal folds in turn and reports, after every validated epoch, the mean validation score (``valid_metric``) of the
folds so far, its current fold counting with its best epoch yet: the test sessions are never evaluated. The search
is TPE (Ray's HyperOptSearch over the model's RecBole ``.hyper`` space) after ``warmup`` random trials, and ASHA
stops trials that trail at the same number of epochs of the first fold. Only a trial that ran every fold counts for
the best configuration. The experiment folder (``<output_dir>/ray/<model>-<dataset>``)
is Ray's: a rerun of the same command resumes it (finished trials are kept, unfinished ones run again), and a failing
trial is recorded as failed while the search goes on. The results land where ``tune`` puts them: the CSV of trials
and the best configuration's yaml with the command that reruns it.

Ray starts a local cluster on this machine's cores unless ``ray_address`` names an existing one (``ray start --head``
on one node, ``ray start --address=<head>:6379`` on the others; every node needs this package and the dataset at the
same path). RecBole 1.2.1 pins ray <= 2.6.3, whose modules read NumPy names that NumPy 2 removed; every Ray worker
therefore runs ``recbole_llm.patches.apply`` (which restores them) before it imports anything else.
"""
from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path


from .tuning import _plain, search_space_file, write_best

logger = logging.getLogger(__name__)
METRIC = "mean_valid_score"


def fold_trial(params: dict, *, model: str, dataset: str, folds: tuple[int, ...], config_file_list, base_config: dict,
               threads: int = 1) -> None:
    """One trial, run by Ray: train and validate on each fold, reporting the running mean after every epoch."""
    import torch
    from ray.air import session

    from . import pipeline

    torch.set_num_threads(threads)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line: a Ray worker's is Ray's
    finished: list[float] = []
    started = time.perf_counter()
    first_fold_epochs = 0
    for fold in folds:
        run = pipeline.build(model, dataset, config_file_list, {**base_config, **params, "temporal_fold": fold},
                             preset=False, logger=False)
        bigger = bool(run.config["valid_metric_bigger"])
        best = [None]

        def report(epoch, score, fold=fold):
            nonlocal first_fold_epochs
            score = float(score)
            if best[0] is None or (score > best[0] if bigger else score < best[0]):
                best[0] = score
            if not finished:
                first_fold_epochs += 1
            session.report({METRIC: statistics.mean(finished + [best[0]]), "fold": fold, "folds_done": len(finished),
                            "first_fold_epochs": first_fold_epochs, "complete": False,
                            "seconds": round(time.perf_counter() - started, 1)})

        score, _ = run.trainer.fit(run.train_data, run.valid_data, verbose=False, saved=False, show_progress=False,
                                   callback_fn=report)
        finished.append(float(score))
    session.report({METRIC: statistics.mean(finished), "fold": folds[-1], "folds_done": len(finished),
                    "first_fold_epochs": first_fold_epochs, "complete": True,
                    "seconds": round(time.perf_counter() - started, 1)})


def tune_on_ray(model: str, dataset: str, *, max_evals: int = 20, folds=(1, 2, 3), params_file=None,
                config_file_list=None, base_config: dict | None = None, warmup: int = 5, output_dir="tuning",
                ray_address: str | None = None, cpus_per_trial: int = 1, grace_epochs: int = 2, seed: int = 0,
                points_to_evaluate: list[dict] | None = None, max_concurrent: int | None = None) -> dict:
    """Tune ``model`` on ``dataset`` with Ray Tune; writes ``<output_dir>/<model>-<dataset>.csv`` and ``.yaml`` as
    ``tune`` does. ``points_to_evaluate``: configurations tried first (e.g. the published one), before the warm-up.
    ``max_concurrent``: at most this many trials side by side (default: as many as the cluster's CPUs hold).
    Returns the best parameters and score."""
    import ray
    from ray import air, tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.hyperopt import HyperOptSearch
    from recbole.trainer import HyperTuning

    from . import patches

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    base = dict(base_config or {})
    for key in ("data_path", "checkpoint_dir"):  # trials run in other processes, maybe on other nodes
        if base.get(key):
            base[key] = str(Path(base[key]).resolve())
    base.setdefault("checkpoint_dir", str(output_dir / "saved"))
    files = [str(Path(f).resolve()) for f in (config_file_list or [])]
    space = HyperTuning._build_space_from_file(str(params_file or search_space_file(model)))
    mode = "max" if _bigger(model, dataset, files, base) else "min"
    runtime_env = {"worker_process_setup_hook": patches.apply, "env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    trainable = tune.with_resources(
        tune.with_parameters(fold_trial, model=model, dataset=dataset, folds=tuple(folds), config_file_list=files,
                             base_config=base, threads=cpus_per_trial),
        {"cpu": cpus_per_trial})
    folder = output_dir / "ray" / f"{model}-{dataset}"
    if tune.Tuner.can_restore(folder):
        print(f"resuming the Ray Tune experiment in {folder}", flush=True)
        tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=False)
    else:
        search = HyperOptSearch(space, metric=METRIC, mode=mode, n_initial_points=warmup, random_state_seed=seed,
                                points_to_evaluate=[dict(p) for p in points_to_evaluate or []] or None)
        # (copies: Ray's hyperopt searcher rewrites a point's categories as indices in place)
        # ASHA decides on the first fold's epochs only: later folds' running means are not comparable with a
        # trial still in its first fold, and a trial that passed the rungs of fold 1 runs its other folds through
        scheduler = ASHAScheduler(time_attr="first_fold_epochs", grace_period=grace_epochs, max_t=10**6)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=max_evals, metric=METRIC,
                                        mode=mode, max_concurrent_trials=max_concurrent),
            run_config=air.RunConfig(name=folder.name, storage_path=str(folder.parent), verbose=1,
                                     failure_config=air.FailureConfig(max_failures=0)))
    results = tuner.fit()
    return _write_results(results, model, dataset, folds, base_config or {}, output_dir, mode)


def _bigger(model, dataset, files, base) -> bool:
    """Whether the validation metric grows with quality, as the run's Config says (RecBole's valid_metric)."""
    from recbole.config import Config

    config = Config(model=model, dataset=dataset, config_file_list=files or None, config_dict=dict(base))
    return bool(config["valid_metric_bigger"])


def _write_results(results, model: str, dataset: str, folds, base_config: dict, output_dir: Path, mode: str) -> dict:
    import pandas as pd

    import json

    rows = []
    for result in results:
        config = result.config
        if not config and result.log_dir and (Path(result.log_dir) / "params.json").exists():
            config = json.loads((Path(result.log_dir) / "params.json").read_text())  # an errored trial's
        params = {k: _plain(v) for k, v in (config or {}).items()}
        metrics = result.metrics or {}
        if result.error is not None:
            cause = [line for line in str(result.error).splitlines() if line.strip()][-1:] or [repr(result.error)]
            rows.append({**params, "score": None, "folds_run": 0, "pruned": False, "seconds": None,
                         "status": f"failed: {cause[0].strip()}"[:300]})
            continue
        complete = bool(metrics.get("complete"))
        rows.append({**params, "score": metrics.get(METRIC), "folds_run": int(metrics.get("folds_done", 0)) +
                     (0 if complete else 1), "pruned": not complete, "seconds": metrics.get("seconds"), "status": "ok"})
    csv_path = output_dir / f"{model}-{dataset}.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    complete = [r for r in rows if r["status"] == "ok" and r["score"] is not None and not r["pruned"]]
    if not complete:
        raise RuntimeError(f"no tuning trial ran every fold; see {csv_path}")
    return write_best(rows, complete, mode == "max", model=model, dataset=dataset, folds=folds,
                      base_config=base_config, output_dir=output_dir, trials="Ray Tune trials")
