"""Experiments: models x seeds, each (model, seed) run in its own process through the one pipeline.

    python -m recbole_llm report --dataset beauty --models SASRec LLM2SASRec Pop ... --seeds 1 2 3 --out DIR

Each run leaves ``<label>__seed<s>.json`` (metrics, seconds per epoch, checkpoint, provenance; with
``report_order_test: true`` also ``test_shuffled``, the test metrics with every prompt's items shuffled) and ``.npz``
(per test session, from ``analysis.session_analysis``). A finished run is never recomputed; a run that stops
mid-training goes on from its last validated epoch (``<label>__seed<s>.resume.pth``, see
``trainer.ResumableTraining``). ``report`` turns the files into tables and plots.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from .errors import SettingError


def parse_model_spec(spec: str) -> tuple[str, str, dict]:
    """``Label=Model[key=value,key=value]`` | ``Model[...]`` | ``Model`` -> (label, model, overrides)."""
    match = re.fullmatch(r"(?:([\w.+-]+)=)?(\w+)(?:\[(.*)\])?", spec)
    if not match:
        raise SettingError(f"bad model spec {spec!r}: use Model, Model[key=value,...] or Label=Model[...]")
    label, model, body = match.groups()
    overrides = {}
    for item in filter(None, _top_level_items(body or "")):
        if "=" not in item:
            raise SettingError(f"model spec {spec!r}: {item!r} is not key=value")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise SettingError(f"model spec {spec[:60]!r}...: the value of {key.strip()} is not valid YAML "
                             f"({str(error).splitlines()[0]}); quote strings holding {{ }} or ':'") from None
    return label or model, model, overrides


def _top_level_items(body: str) -> list[str]:
    """``a=1,b={x: 1, y: 2}`` -> ['a=1', 'b={x: 1, y: 2}']: commas inside braces/brackets stay."""
    items, depth, current = [], 0, ""
    for char in body:
        depth += char in "{["
        depth -= char in "}]"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return items + [current]


def provenance(threads: int) -> dict:
    """What produced a result: code version, package versions, hardware and threads."""
    import importlib.metadata
    import platform

    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        # the code and settings, not the results folder (a run writes there, and a stale run is moved aside)
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                     ":(exclude,top)benchmarks/results"], cwd=Path(__file__).parent,
                                    capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    versions = {}
    for package in ("recbole-llm", "recbole", "torch", "numpy", "pandas", "scikit-learn", "transformers",
                    "sentence-transformers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"git_sha": sha, "git_dirty": dirty, "versions": versions, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "threads": threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_settings(seed: int, overrides: dict | None, data_path: str | None) -> dict:
    """The settings a plan's run hands to its Config (also what decides whether a finished run is still valid)."""
    settings = {"seed": seed, "show_progress": False, "state": "INFO", **(overrides or {})}
    if data_path:
        settings["data_path"] = data_path
    return settings


def requested_hashes(model: str, dataset: str, seed: int, overrides: dict, data_path: str | None,
                     old_names: bool = False) -> tuple[str, ...]:
    """``config_hashes`` of the Config a run with these settings would resolve, then with ``old_names`` (for a
    record made before the move into our own classes) its ``hashes_before_our_classes``; none where the Config
    cannot be built here, e.g. a dataset not yet converted: the run itself then reports what is wrong."""
    from recbole.config import Config

    from .checkpoints import config_hashes, hashes_before_our_classes
    from .presets import config_files, preset_name

    try:
        files = config_files(None, model, dataset, preset_name(overrides))
        config = Config(model=model, dataset=dataset, config_file_list=files,
                        config_dict=run_settings(seed, overrides, data_path))
        return config_hashes(config) + (hashes_before_our_classes(config) if old_names else ())
    except Exception:  # noqa: BLE001 - only a cache check: the run will raise the real error
        return ()


def finished_run_is_current(target: Path, model: str, dataset: str, seed: int, settings: dict,
                            data_path: str | None) -> bool:
    """Whether the finished run in ``target`` was made under the settings asked for now: its resolved config's
    hash where it recorded one (under the old model names for a run made before the move into our own classes),
    else (runs saved before the hash) its recorded overrides."""
    from .checkpoints import made_before_our_classes

    try:
        done = json.loads(Path(target).read_text())
    except (OSError, ValueError):
        return False
    if "config_hash" in done:
        return done["config_hash"] in requested_hashes(model, dataset, seed, settings, data_path,
                                                       old_names=made_before_our_classes(done))
    recorded = done.get("overrides", {})
    if recorded == settings:
        return True
    # a run saved before the hash, whose recorded settings resolve to the ones asked for now (an override since made
    # the preset's value, e.g. bert_padding: left_mask): the same run, not to be trained again
    asked = requested_hashes(model, dataset, seed, settings, data_path)
    return bool(asked) and requested_hashes(model, dataset, seed, recorded, data_path)[:1] == asked[:1]


@contextlib.contextmanager
def only_writer(out: Path):
    """An exclusive lock on ``out`` (``<out>.lock``) for the run that writes it: a second process asked for the
    same run (two reports on one folder) is refused at once instead of training beside it into the same resume
    file, checkpoint and results."""
    from .locks import LockHeld, exclusive

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(out, wait=False):
            yield
    except LockHeld:
        raise SettingError(f"another process is already running {out.name} into {out.parent}: let it finish "
                           "(this command then finds its result), or give this run another --out") from None


def run_single(model_name: str, dataset_name: str, seed: int, out: Path, overrides: dict | None = None,
               threads: int = 1, data_path: str | None = None, config_files_: list | None = None) -> dict:
    """Train and evaluate one (model, seed) through the pipeline; write ``out`` (.json) and its .npz. One process
    at a time per ``out`` (``only_writer``)."""
    with only_writer(out):
        return _run_single(model_name, dataset_name, seed, out, overrides, threads, data_path, config_files_)


def _run_single(model_name: str, dataset_name: str, seed: int, out: Path, overrides: dict | None = None,
                threads: int = 1, data_path: str | None = None, config_files_: list | None = None) -> dict:
    import torch

    from . import pipeline
    from .analysis import session_analysis
    from .checkpoints import config_hash
    from .registry import get_trainer
    from .trainer import resumable

    torch.set_num_threads(threads)
    config_dict = run_settings(seed, overrides, data_path)
    run = pipeline.load_data(model_name, dataset_name, config_files_, config_dict, logger=True)
    config = run.config
    started = time.perf_counter()
    run = pipeline.build_model(run, resumable(get_trainer(config["MODEL_TYPE"], config["model"])))
    trainer, train_data, test_data = run.trainer, run.train_data, run.test_data
    # RecBole names the best checkpoint <Model>-<second>.pth: two runs started in the same second (the report
    # runs side by side) would overwrite each other's and test the other's model
    saved = Path(trainer.saved_model_file)
    trainer.saved_model_file = str(saved.with_name(f"{saved.stem}-seed{seed}-pid{os.getpid()}.pth"))
    out = Path(out)
    progress = trainer.setup_resume(out.with_suffix(".resume.pth"), train_data, started)
    _, valid_result = trainer.fit(train_data, run.valid_data, saved=True, show_progress=False)
    t = time.perf_counter()
    # a model scored only by LLM calls is scored once, and a general one (Pop) has no prompt to cut: both keep the
    # ranks of this pass, so every row can be paired in a bootstrap
    one_pass_ranks = getattr(trainer.model, "expensive_scoring", False) or not hasattr(trainer.model, "ITEM_SEQ")
    with _target_ranks(trainer) if one_pass_ranks else contextlib.nullcontext([]) as ranks:
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_seconds = time.perf_counter() - t
    shuffled_result = None
    if config["report_order_test"]:  # the order test: the same model on the same sessions, prompts shuffled
        from .analysis import shuffled_prompts

        if hasattr(trainer.model, "ITEM_SEQ"):
            with shuffled_prompts(trainer.model, seed=0):
                shuffled_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        else:  # a general model (Pop) never sees the prompt's order
            shuffled_result = test_result
    # per-session analysis needs the prompt (general models such as Pop score users) and rescores the test
    # set five times: skipped for models whose every score is an LLM call
    model = trainer.model
    analysis = None
    if hasattr(model, "ITEM_SEQ") and not getattr(model, "expensive_scoring", False):
        analysis = session_analysis(model, test_data, train_data._dataset,
                                    mask_prompts=bool(config["exclude_session_items"]))
    elif ranks:  # one scoring pass only: the target's rank as that pass ranked it, for the paired bootstrap
        analysis = {"rank_cut1": np.concatenate(ranks)}
    details = model.evaluation_arrays() if hasattr(model, "evaluation_arrays") else {}
    if details:
        analysis = {**(analysis or {}), **details}
    epoch_seconds = progress["epoch_seconds"]
    result = {
        "model": model_name, "dataset": dataset_name, "seed": seed, "overrides": overrides or {},
        "valid": {k: float(v) for k, v in (valid_result or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs": len(epoch_seconds), "train_loss": progress["train_loss"],
        "sec_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "init_seconds": run.init_seconds, "eval_seconds": eval_seconds,
        "wall_seconds": trainer.wall_seconds(),
        "checkpoint": trainer.saved_model_file, "test_sessions": len(test_data.dataset.inter_feat),
        "config_hash": config_hash(config),  # the resolved settings: a plan reuses this run only for the same hash
        "trained_in": _trained_in(trainer),  # train_precision: auto is hashed as asked, like the device
        "valid_curve": progress.get("valid_curve", []),  # validation score and wall time after each epoch
        "provenance": provenance(threads),
    }
    if shuffled_result is not None:
        result["test_shuffled"] = {k: float(v) for k, v in shuffled_result.items()}
    if progress["resumed_at_epoch"] is not None:
        result["resumed_at_epoch"] = progress["resumed_at_epoch"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if analysis is not None:
        np.savez_compressed(out.with_suffix(".npz"), **analysis)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)  # the JSON last: its presence means the run is complete
    trainer.finish()
    return result


def _trained_in(trainer) -> str:
    """The precision the trainer's autocast ran in. ``enable_amp`` is the switch (CatalogTrainer sets it from
    ``train_precision``); CatalogTrainer's autocast is bf16, RecBole's names no dtype: bf16 on a CPU, fp16 on CUDA."""
    if not getattr(trainer, "enable_amp", False):
        return "fp32"
    return "bf16" if getattr(trainer, "bf16", False) or str(trainer.device).startswith("cpu") else "fp16"


@contextlib.contextmanager
def _target_ranks(trainer):
    """While the trainer evaluates: each evaluated session's 1-based rank of its target, from the scores the metrics
    see (item 0, history and prompt masks applied), so a model too costly to score twice still gets per-session
    ranks (``rank_cut1``), by the convention of ``session_analysis`` (``analysis.target_ranks``)."""
    from .analysis import target_ranks

    ranks: list[np.ndarray] = []
    scored = trainer._full_sort_batch_eval

    def recording(batched_data):
        interaction, scores, positive_u, positive_i = scored(batched_data)
        ranks.append(target_ranks(scores[positive_u.to(scores.device)], positive_i).cpu().numpy())
        return interaction, scores, positive_u, positive_i

    trainer._full_sort_batch_eval = recording
    try:
        yield ranks
    finally:
        del trainer._full_sort_batch_eval


def default_jobs(threads: int = 1) -> int:
    """How many runs go side by side when ``--jobs`` is not given: one per ``threads`` cores on a CPU machine (both
    cores here, each run with one thread), one at a time where a GPU is visible (the runs would share its memory)."""
    import torch

    if torch.cuda.is_available():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))  # the cores this process may use (a container's, not the host's)


def run_plan(out_dir: Path, dataset: str, specs: list[str], seeds: list[int], common: dict | None = None,
             threads: int = 1, data_path: str | None = None, jobs: int = 1, final: dict | None = None) -> None:
    """Run every missing (spec, seed), each in a subprocess, ``jobs`` of them side by side (each with ``threads``
    torch threads: on a 2-core machine two one-thread runs go furthest), showing progress for the whole plan. A
    run's result does not depend on ``jobs``: each is its own seeded process. Settings: ``common``, then each
    spec's own, then ``final`` (a user's command-line ``--set``, the last word)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    if jobs < 1:
        raise SettingError(f"--jobs must be 1 or more; got {jobs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = []
    for seed in seeds:
        for spec in specs:
            label, model, overrides = parse_model_spec(spec)
            settings = {**(common or {}), **overrides, **(final or {})}
            plan.append((label, model, seed, settings, out_dir / f"{label}__seed{seed}.json"))
    todo = []
    for job in plan:
        label, model, seed, settings, target = job
        if target.exists() and not finished_run_is_current(target, model, dataset, seed, settings, data_path):
            stale = target.with_name(f"{target.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}.json")
            target.replace(stale)  # kept, not lost: made under other settings, so not shown as this run
            if target.with_suffix(".npz").exists():
                target.with_suffix(".npz").replace(stale.with_suffix(".npz"))
            tqdm.write(f"{label} seed {seed}: the finished run was made under other settings; kept as {stale.name}, "
                       "running it again")
        if not target.exists():
            todo.append(job)

    stopping = threading.Event()
    running: set[subprocess.Popen] = set()
    guard = threading.Lock()

    def run_one(label, model, seed, settings, target) -> tuple[str, int, int]:
        command = run_one_command(model, dataset, seed, target, threads, settings, data_path)
        # the default memory budget of a run (prepare.check_catalog_memory) is its share of the machine's
        env = {**os.environ, "RECBOLE_LLM_RUNS_SIDE_BY_SIDE": str(jobs)}
        if stopping.is_set():
            return label, seed, None
        with open(target.with_suffix(".log"), "a") as log:  # a resumed run keeps its earlier log
            with guard:
                if stopping.is_set():  # the plan is being stopped: start nothing more
                    return label, seed, None
                child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.add(child)
            try:
                return label, seed, child.wait()
            finally:
                with guard:
                    running.discard(child)

    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"report plan ({jobs} side by side)") as bar, \
            ThreadPoolExecutor(max_workers=jobs) as pool, _stop_on_sigterm():
        try:
            for wave in waves(todo, out_dir):  # an ensemble row that reads this plan's run files waits for them
                futures = [pool.submit(run_one, *job) for job in wave]
                for future in as_completed(futures):
                    label, seed, code = future.result()
                    if code != 0:
                        tqdm.write(f"{label} seed {seed} failed (exit {code}); see "
                                   f"{out_dir / f'{label}__seed{seed}.log'}")
                    bar.set_postfix_str(f"{label} seed {seed} done")
                    bar.update(1)
        except BaseException as error:  # Ctrl-C, SIGTERM, an error: stop the runs under way, start no other
            stopping.set()
            with _signals_deferred():  # a second Ctrl-C / SIGTERM must not cut the stop short
                with guard:
                    children = list(running)
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_children(children)
            reason = {KeyboardInterrupt: "Ctrl-C", SystemExit: "SIGTERM"}.get(type(error), f"an error ({error!r})")
            tqdm.write(f"report stopped by {reason}: {len(children)} run(s) under way were stopped, queued runs not "
                       "started; each resumes from its last finished epoch when the report is run again")
            raise


def run_one_command(model: str, dataset: str, seed: int, target: Path, threads: int, settings: dict,
                    data_path: str | None) -> list[str]:
    """The command line of one (model, seed) of a report: ``run-one`` in its own process."""
    command = [sys.executable, "-m", "recbole_llm", "run-one", "--model", model, "--dataset", dataset,
               "--seed", str(seed), "--out", str(target), "--threads", str(threads),
               "--overrides", json.dumps(settings)]
    if data_path:
        command += ["--data_path", str(data_path)]
    return command


@contextlib.contextmanager
def _signal_handlers(handlers: dict):
    """``handlers`` (signal number -> handler) for the block, the previous ones restored after it; in the main thread
    only (elsewhere Python cannot set them, and the block runs as it is)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


def _stop_on_sigterm():
    """SIGTERM raises SystemExit in the report's main thread for the block, so its runs are stopped and no queued run
    starts. Said explicitly because otherwise it depends on the import order: RecBole's quick_start imports Ray, whose
    handler does the same; without it SIGTERM would end the report at once and leave its runs going."""
    import signal

    return _signal_handlers({signal.SIGTERM: _raise_system_exit})


def _signals_deferred():
    """SIGINT and SIGTERM ignored for the block: the report's own cleanup is bounded (``_stop_children``), and an
    impatient second signal would otherwise leave runs going."""
    import signal

    return _signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


STOP_GRACE_SECONDS = 30.0


def _stop_children(children: list) -> None:
    """SIGTERM to each run under way, then SIGKILL to any still alive after ``STOP_GRACE_SECONDS``. A stopped run
    keeps its checkpoint of the last finished epoch (and its lock dies with it)."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def waves(todo: list[tuple], out_dir: Path) -> list[list[tuple]]:
    """The plan's runs in order of need: a run whose settings name another run's file in ``out_dir`` (a
    ScoreEnsemble member given as ``<out>/<label>__seed{seed}.json``) goes in a later wave than that run."""
    labels = {job[0] for job in todo}
    folder = Path(out_dir).name  # the run files are named relative or absolute: match the folder and the label

    def needs(job) -> set[str]:
        text = json.dumps(job[3])
        return {label for label in labels if label != job[0] and f"{folder}/{label}__seed" in text}

    done, left, ordered = set(), list(todo), []
    while left:
        wave = [job for job in left if needs(job) <= done]
        if not wave:  # a cycle: run the rest as they come (each run reports a missing file plainly)
            wave = left
        ordered.append(wave)
        done |= {job[0] for job in wave}
        left = [job for job in left if job not in wave]
    return ordered


EXPERIMENT_KEYS = {"dataset", "models", "seeds", "one_pass_seeds", "out", "set", "data_path", "build", "paper",
                   "compare", "notes", "title", "grid", "headline", "unclean",
                   "convergence_reference"}


def _label_part(value) -> str:
    return re.sub(r"[^\w.+-]", "_", str(value))


def expand_grid(models: list[str], grid: dict) -> list[str]:
    """Every model spec crossed with every combination of the grid's axes, as ``Label=Model[...]`` specs.

    An axis is either ``key: [values]`` (the setting ``key`` takes each value; the label gains the value) or
    ``name: {choice: {settings}}`` (named bundles of settings; the label gains the choice). ``temporal_fold``
    goes last in the label (``...-fold2``), which is how the fold table groups a candidate's folds. A bundle's
    dict-valued setting is merged into the spec's own dict of that name (e.g. a hybrid's partner config)."""
    import itertools

    axes = sorted(grid.items(), key=lambda axis: axis[0] == "temporal_fold")
    choices = []
    for name, values in axes:
        if isinstance(values, dict):
            choices.append([(_label_part(choice), settings or {}) for choice, settings in values.items()])
        elif isinstance(values, list) and values:
            prefix = "fold" if name == "temporal_fold" else ""
            choices.append([(prefix + _label_part(value), {name: value}) for value in values])
        else:
            raise SettingError(f"grid axis {name!r}: a non-empty list of values or a mapping of named settings")
    expanded = []
    for spec in models:
        label, model, overrides = parse_model_spec(spec)
        for combination in itertools.product(*choices):
            settings = dict(overrides)
            for _, bundle in combination:
                for key, value in bundle.items():
                    both_dicts = isinstance(value, dict) and isinstance(settings.get(key), dict)
                    settings[key] = {**settings[key], **value} if both_dicts else value
            name = "-".join([label, *(part for part, _ in combination)])
            items = ",".join(f"{key}={json.dumps(value)}" for key, value in settings.items())
            expanded.append(f"{name}={model}[{items}]")
    return expanded


def load_experiment(path: os.PathLike) -> dict:
    """An experiment file (yaml): what to run and where its results go. Paths inside it are relative to the
    file's folder's repository root (the folder holding ``benchmarks/``) unless absolute.

    ``dataset``, ``models`` (report specs), ``seeds``, ``out``; optional ``one_pass_seeds`` (the seeds of models
    fitted in one pass, deterministic given the data; default ``seeds``), ``set`` (settings of every run),
    ``data_path``, ``build`` (``paper_beauty: <staged folder>``: build the dataset first), ``paper`` (a Table 4
    yaml: adds the paper comparison), ``compare`` ({column name: another experiment's out}: one more NDCG@20
    column), ``notes`` (a markdown file appended to the comparison), ``title``, ``grid`` (settings crossed with
    every model, see ``expand_grid``; with ``temporal_fold`` in it, ``folds.md`` compares the candidates by their
    mean validation NDCG@20 over the folds)."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - EXPERIMENT_KEYS
    missing = {"dataset", "models", "out"} - set(spec)
    if unknown or missing:
        raise SettingError(f"{path}: unknown keys {sorted(unknown)}" if unknown else f"{path}: needs {sorted(missing)}")
    root = path.resolve().parent
    while not (root / "benchmarks").is_dir() and root.parent != root:
        root = root.parent

    def resolve(value):
        return str(value if Path(value).is_absolute() else root / value)

    spec = dict(spec, seeds=spec.get("seeds", [1]), set=spec.get("set") or {}, file=str(path))
    for key in ("out", "data_path", "paper", "notes"):
        if spec.get(key):
            spec[key] = resolve(spec[key])
    spec["compare"] = {name: resolve(folder) for name, folder in (spec.get("compare") or {}).items()}
    spec["build"] = {kind: resolve(folder) for kind, folder in (spec.get("build") or {}).items()}
    if spec.get("grid"):
        spec["models"] = expand_grid(spec["models"], spec["grid"])
    return spec


def _fits_in_one_pass(spec: str, common: dict) -> bool:
    from collections import defaultdict

    from .registry import fits_in_one_pass

    _, model, overrides = parse_model_spec(spec)
    return fits_in_one_pass(defaultdict(lambda: None, {**common, **overrides, "model": model}))


def run_experiment(path: os.PathLike, only: list[str] | None = None, tables_only: bool = False,
                   threads: int = 1, jobs: int = 1, settings: dict | None = None, dataset: str | None = None,
                   data_path: str | None = None, out: str | None = None) -> str:
    """Run an experiment file's missing runs (``only``: these labels), then write its tables. ``settings`` (a
    command line's ``--set``) apply to every run over the file's own, row settings included; ``dataset``,
    ``data_path`` and ``out`` run the same plan on other data or into another folder (as a test runs a GPU
    experiment on tiny data, or a user on their own)."""
    from .report import build_report, write_paper_comparison

    spec = load_experiment(path)
    settings = dict(settings or {})
    if (settings or (dataset and dataset != spec["dataset"])) and not out and not tables_only:
        raise SettingError(f"{spec['file']}: --set or --dataset change the file's runs: give --out, a folder of their "
                           f"own (else the committed runs in {spec['out']} would be set aside as stale)")
    if dataset and dataset != spec["dataset"]:
        spec = dict(spec, dataset=dataset, build={}, paper=None)  # the file's build and paper table are its data's
    for key, value in (("data_path", data_path), ("out", out)):
        if value:
            spec[key] = str(Path(value).resolve())
    labels = [parse_model_spec(m)[0] for m in spec["models"]]
    unknown = sorted(set(only or ()) - set(labels))
    if unknown:  # a mistyped label would otherwise run nothing and still rewrite the tables
        raise SettingError(f"{spec['file']}: --only names no run of this file: {unknown}; its labels are {labels}")
    if not tables_only:
        if "paper_beauty" in spec["build"]:
            from .data.datasets import build_paper_beauty

            build_paper_beauty(spec["build"]["paper_beauty"], spec.get("data_path") or "dataset")
        models = [m for m, label in zip(spec["models"], labels) if not only or label in only]
        once = [m for m in models if _fits_in_one_pass(m, {**spec["set"], **settings})]
        for group, seeds in ((once, spec.get("one_pass_seeds") or spec["seeds"]),
                             ([m for m in models if m not in once], spec["seeds"])):
            if group:
                run_plan(Path(spec["out"]), spec["dataset"], group, seeds, spec["set"], threads, spec.get("data_path"),
                         jobs, final=settings)
    text = build_report(Path(spec["out"]), bool(spec.get("headline")), spec.get("unclean"),
                        spec.get("convergence_reference"))
    if spec.get("paper"):
        text = write_paper_comparison(spec, f"python -m recbole_llm report --experiment {spec['file']}")
    return text


def write_results(experiments: os.PathLike = "benchmarks/experiments", out: os.PathLike = "benchmarks/RESULTS.md") -> str:
    """``RESULTS.md`` generated from the runs: one section per experiment file (its description and commands, as the
    file's leading comments state them, then its table rebuilt from the finished runs, with each row's provenance).
    The history of decisions lives in ``DECISIONS.md``; this file is rebuilt, never edited."""
    sections = []
    for path in sorted(Path(experiments).glob("*.yaml")):
        spec = load_experiment(path)
        comments = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comments.append(line[1:].strip())
        described = "\n".join(f"\n    {c}\n" if c.startswith("python ") else c for c in comments)
        folder = os.path.relpath(spec["out"])
        heading = f"## {spec.get('title') or path.stem}\n\n`{path.as_posix()}` -> `{folder}`\n\n{described}\n\n"
        try:
            table = run_experiment(path, tables_only=True)
        except FileNotFoundError:
            table = "_Not run yet._"
        sections.append(heading + table + "\n")
    index = "\n".join(f"- [{s.splitlines()[0][3:]}](#{_anchor(s.splitlines()[0][3:])})" for s in sections)
    text = ("# Results\n\nGenerated from the committed runs by `python -m recbole_llm report --results`; do not edit "
            "(the decisions and their history: [DECISIONS.md](DECISIONS.md)). Every table is test-split unless it says "
            "otherwise; each row names the commit its runs were made from.\n\n" + index + "\n\n" + "\n".join(sections))
    Path(out).write_text(text)
    return text


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
