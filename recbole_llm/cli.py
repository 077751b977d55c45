"""The run / tune command line, shared by ``run_recbole_llm.py`` and ``python -m recbole_llm run|tune``.

Flags as RecBole's ``run_recbole.py``; every ``--key=value`` RecBole knows is read by RecBole's Config.
"""
from __future__ import annotations

import argparse
import sys


RUN_HELP = """Train and evaluate a model (ours or RecBole's) under the paper preset, or tune it on the temporal folds.

examples:
  python run_recbole_llm.py --model=LLM2SASRec --dataset=ml-100k --epochs=5
  python run_recbole_llm.py --model=LLMSeqSim --dataset=beauty --llmseqsim_pooling=harmonic
  python run_recbole_llm.py --model=SASRec --dataset=beauty --tune --max_evals=30 --folds=1,2,3
  any RecBole setting as --key=value; --config_files="a.yaml b.yaml"; --recbole_defaults for RecBole's own protocol"""


def add_search_options(parser) -> None:
    """The flags of a search on the temporal folds, the same for ``--tune`` and ``python -m recbole_llm tune``."""
    parser.add_argument("--max_evals", type=int, default=20, help="tuning trials")
    parser.add_argument("--folds", type=str, default="1,2,3", help="temporal folds each trial trains and validates on")
    parser.add_argument("--params_file", type=str, default=None, help="search space (default properties/hyper/)")
    parser.add_argument("--budget_seconds", type=float, default=None, help="wall-clock budget of the whole search")
    parser.add_argument("--warmup", type=int, default=5, help="random trials before TPE (the paper: 40)")
    parser.add_argument("--early_stop", type=int, default=10,
                        help="stop after N trials without improvement (the paper: 100)")
    parser.add_argument("--prune_after", type=int, default=4,
                        help="prune a trial in the bottom 20%% of a fold once N trials ran it (the paper: 10)")
    parser.add_argument("--output_dir", type=str, default="tuning", help="where the study's yaml/csv/trials go")


def add_common_options(parser) -> None:
    """The flags every run and search takes: files, preset, the check, the traceback."""
    parser.add_argument("--config_files", type=str, default=None, help="space-separated config files")
    parser.add_argument("--preset", choices=["paper", "best"], default="paper",
                        help="paper: the paper's protocol and published configurations (reproduction); best: the "
                             "same protocol with what validation chose beyond the paper (properties/best/)")
    parser.add_argument("--check", action="store_true",
                        help="check the model, settings, preset files and dataset, then stop: nothing is trained, "
                             "embedded or paid (what a long run would refuse, in seconds)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def refused_secrets(argv) -> bool:
    """Before anything is parsed or logged (RecBole writes the whole command line to its log): a key on the command
    line ends the command with one line, without echoing it."""
    from recbole_llm.errors import run_command
    from recbole_llm.secrets import refuse_secret_arguments

    return run_command(lambda: refuse_secret_arguments(list(argv))) != 0


def search(args, files, algo: str = "bayes", trial_epochs: int | None = None, backend: str = "hyperopt",
           settings: dict | None = None) -> int:
    """A search on the temporal folds with the flags of ``add_search_options`` (and a check only with ``--check``).
    ``backend: ray`` runs the trials on Ray Tune (``recbole_llm.ray_tuning``); ``settings`` are every trial's
    ``--key=value`` settings, which Ray's workers cannot read from this command line."""
    from recbole_llm.checks import prepare_dataset
    from recbole_llm.errors import SettingError
    from recbole_llm.presets import config_files
    from recbole_llm.tuning import tune

    chosen = config_files(files, args.model, args.dataset, args.preset)
    base = {"preset": args.preset} if args.preset != "paper" else {}
    if trial_epochs is not None:
        base["epochs"] = trial_epochs
    if backend == "ray" and algo != "bayes":
        raise SettingError(f"--backend ray searches with TPE (Ray's HyperOptSearch after --warmup random trials); "
                           f"--algo {algo} is the hyperopt backend's")
    prepare_dataset(args.model, args.dataset, chosen, base or None)
    if args.check:
        print(f"ok: tuning {args.model} on {args.dataset} ({algo} on {backend}, {args.max_evals} trials, folds "
              f"{args.folds}); nothing was run")
        return 0
    if backend == "ray":
        from recbole_llm.ray_tuning import tune_on_ray

        best = tune_on_ray(args.model, args.dataset, max_evals=args.max_evals,
                           folds=[int(f) for f in args.folds.split(",")], params_file=args.params_file,
                           config_file_list=chosen, base_config={**(settings or {}), **base}, warmup=args.warmup,
                           output_dir=args.output_dir, ray_address=args.ray_address,
                           cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent)
        print(f"best {best['best_score']:.4f} with {best['best_params']} -> {best['config_file']}")
        return 0
    best = tune(args.model, args.dataset, max_evals=args.max_evals, folds=[int(f) for f in args.folds.split(",")],
                params_file=args.params_file, config_file_list=chosen, base_config=base, warmup=args.warmup,
                early_stop=args.early_stop, budget_seconds=args.budget_seconds, output_dir=args.output_dir,
                algo=algo, prune_after=args.prune_after)
    print(f"best {best['best_score']:.4f} with {best['best_params']} -> {best['config_file']}")
    return 0


def run_main(argv=None, prog: str = "run_recbole_llm.py") -> int:
    """`python run_recbole_llm.py ...` / `python -m recbole_llm run|tune ...`: RecBole's flags, our models."""
    import recbole_llm
    from recbole_llm.errors import run_command
    parser = argparse.ArgumentParser(prog=prog, description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="LLM2SASRec", help="model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--nproc", type=int, default=1, help="processes for DDP (GPU)")
    parser.add_argument("--world_size", type=int, default=-1, help="DDP: total processes over all machines")
    parser.add_argument("--ip", type=str, default="localhost", help="DDP: address of the master process")
    parser.add_argument("--port", type=str, default="5678", help="DDP: port of the master process")
    parser.add_argument("--group_offset", type=int, default=0, help="DDP: rank offset of this machine")
    parser.add_argument(
        "--recbole_defaults", action="store_true", help="use RecBole's defaults instead of the paper's protocol"
    )
    parser.add_argument("--tune", action="store_true", help="tune with RecBole's HyperTuning on temporal folds")
    add_search_options(parser)
    add_common_options(parser)
    if refused_secrets(sys.argv[1:] if argv is None else argv):
        return 2
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.strip().split(" ") if args.config_files else None

    def work() -> int:
        recbole_llm.get_model(args.model)
        if args.check:
            from recbole_llm.checks import prepare_dataset
            from recbole_llm.presets import config_files

            chosen = config_files(files, args.model, args.dataset, args.preset) if not args.recbole_defaults else files
            config = prepare_dataset(args.model, args.dataset, chosen, {"preset": args.preset})
            print(f"ok: {args.model} on {config['dataset']} under the {args.preset} preset "
                  f"({len(chosen or [])} config files); nothing was run")
            return 0
        if args.tune:
            return search(args, files)
        result = recbole_llm.run(args.model, args.dataset, config_file_list=files, nproc=args.nproc,
                                 world_size=args.world_size, ip=args.ip, port=args.port,
                                 group_offset=args.group_offset, protocol_defaults=not args.recbole_defaults,
                                 preset=args.preset)
        print(format_result(result))
        return 0

    return run_command(work, debug=args.debug)


def format_result(result: dict) -> str:
    """RecBole's result dict as two readable lines (valid, test), plain floats."""
    lines = []
    for name, key in (("best valid", "best_valid_result"), ("test", "test_result")):
        metrics = result.get(key) or {}
        lines.append(f"{name:>10}: " + "  ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()))
    return "\n".join(lines)


TUNE_HELP = """Tune a model on the paper's temporal folds: every trial trains on each fold's earlier sessions and is scored
on its later ones (mean validation NDCG@20); the test split is never evaluated. Every other --key=value is a setting
of every trial. A rerun with the same --output_dir resumes the study (Ctrl-C reruns the interrupted trial).

examples:
  python -m recbole_llm tune --model=PaperSASRec --dataset=beauty --max_evals=30
  python -m recbole_llm tune --model=LLM2SASRec --dataset=ml-100k --algo=random --max_evals=6 --folds=1 --trial_epochs=2
  python -m recbole_llm tune --model=PaperSASRec --dataset=beauty --max_evals=30 --backend ray   # trials side by side
"""


def tune_main(argv=None, prog: str = "python -m recbole_llm tune") -> int:
    """``python -m recbole_llm tune``: its own flags (search, budget, folds); the remaining ``--key=value`` are the
    trials' settings, and only they reach RecBole's Config (no "will not be used" line in every trial)."""
    import recbole_llm
    from recbole_llm.errors import run_command

    parser = argparse.ArgumentParser(prog=prog, description=TUNE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name")
    parser.add_argument("--algo", choices=["bayes", "random", "exhaustive"], default="bayes",
                        help="TPE after --warmup random trials, random search, or every grid point")
    parser.add_argument("--trial_epochs", type=int, default=None, help="epochs per trial and fold (default: the "
                        "model's own, with early stopping)")
    parser.add_argument("--backend", choices=["hyperopt", "ray"], default="hyperopt",
                        help="hyperopt: trials one after another in this process; ray: trials side by side as Ray "
                             "Tune tasks (a local Ray on this machine's cores, or --ray_address), pruned by ASHA")
    parser.add_argument("--ray_address", default=None, help="with --backend ray: join this Ray cluster "
                        "(e.g. <head>:6379) instead of starting a local one")
    parser.add_argument("--cpus_per_trial", type=int, default=1, help="with --backend ray: CPUs (torch threads) "
                        "of each trial")
    parser.add_argument("--max_concurrent", type=int, default=None, help="with --backend ray: at most this many "
                        "trials side by side (default: as many as the cluster's CPUs hold)")
    add_search_options(parser)
    add_common_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    if refused_secrets(argv):
        return 2
    args, settings = parser.parse_known_args(argv)
    sys.argv = [prog] + settings  # only the trials' settings reach RecBole's Config
    files = args.config_files.strip().split(" ") if args.config_files else None

    def work() -> int:
        recbole_llm.get_model(args.model)
        return search(args, files, args.algo, args.trial_epochs, args.backend,
                      _settings(settings) if args.backend == "ray" else None)

    return run_command(work, debug=args.debug)


def setting_values(items, example: str) -> dict:
    """``key=value`` items (``--key=value`` too) as settings, each value read as a YAML literal (never evaluated);
    an item without a key and ``=`` is one clear error showing ``example``."""
    import yaml

    from recbole_llm.errors import SettingError

    settings = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.lstrip("-"):
            raise SettingError(f"{item!r}: write key=value, e.g. {example}")
        settings[key.lstrip("-")] = yaml.safe_load(value)
    return settings


def _settings(words: list[str]) -> dict:
    """A Ray search's trial settings: the ``--key=value`` words left on the tune command line."""
    from recbole_llm.errors import SettingError

    for word in words:
        if not word.startswith("--"):
            raise SettingError(f"{word!r}: a trial setting is written --key=value")
    return setting_values(words, "--learning_rate=0.001")
