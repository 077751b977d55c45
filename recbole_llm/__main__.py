"""Command line: ``python -m recbole_llm embed|convert ...``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


from .errors import SettingError


def _embed(args) -> int:
    from .data.datasets import artifact_dir, ensure_dataset, recbole_builtin_path
    from .embeddings.cache import EmbeddingCache
    from .embeddings.store import EmbeddingSpec, build_item_embeddings, read_itememb
    from .registry import PROPERTIES_DIR, load_yaml

    ensure_dataset(args.dataset, args.data_path)
    defaults = {}
    dataset_yaml = PROPERTIES_DIR / "dataset" / f"{args.dataset}.yaml"
    if dataset_yaml.is_file():
        defaults = load_yaml(dataset_yaml)
    fields = args.fields or defaults.get("embedding_text_fields", ["title"])
    options = {"base_url": args.base_url, "project": args.project, "location": args.location,
               "confirm_cost": args.confirm_cost, "max_cost_usd": args.max_cost_usd, "timeout": args.timeout,
               "max_retries": args.max_retries}
    spec = EmbeddingSpec(provider=args.provider, model=args.embedding_model, reduction=args.reduce, dim=args.dim,
                         text_fields=tuple(fields), template=args.template,
                         class_field=defaults.get("embedding_class_field", "class"), seed=args.seed, options=options)
    if args.speed:
        return _embedding_speed(args, spec)
    target = artifact_dir(args.dataset, args.data_path) / f"{args.dataset}.{spec.suffix}"
    if args.force and target.exists():
        target.unlink()
    cached_before = len(EmbeddingCache())
    started = time.perf_counter()
    path = build_item_embeddings(args.dataset, spec, args.data_path)
    seconds = time.perf_counter() - started
    ids, vectors = read_itememb(path)
    source = "RecBole's built-in copy" if recbole_builtin_path(args.dataset) else "dataset folder"
    new = len(EmbeddingCache()) - cached_before
    print(f"{path}: {len(ids)} items x {vectors.shape[1]} ({source}); {seconds:.1f}s, "
          f"{new} texts newly embedded ({len(ids) / seconds:.0f} items/s overall)")
    return 0


def _embedding_speed(args, spec) -> int:
    """Titles per second of a local embedder on the dataset's first ``--speed`` item texts, on the threads torch
    has, nothing cached: the figure beside each embedder's validation score. Paid providers are refused."""
    import torch

    from .data.catalog import item_texts, read_catalog
    from .data.datasets import dataset_dir
    from .embeddings.providers import make_provider

    if args.provider != "local":
        raise SystemExit("--speed measures local embedders only: a remote provider would be paid for every title")
    texts = item_texts(read_catalog(dataset_dir(args.dataset, args.data_path), args.dataset), spec)[0][: args.speed]
    provider = make_provider("local", args.embedding_model)
    provider._embed_batch(texts[:8])  # load the weights before the clock starts
    started = time.perf_counter()
    for batch in provider.batches(texts):
        provider._embed_batch(batch)
    seconds = time.perf_counter() - started
    print(f"{provider.model}: {len(texts) / seconds:.1f} titles/s ({len(texts)} titles, {torch.get_num_threads()} "
          f"thread(s), nothing cached)")
    return 0


def _convert(args) -> int:
    from .data.convert import convert_amazon2014, convert_tables

    if args.paper_beauty:
        from .data.datasets import build_paper_beauty

        if args.name not in (None, "beauty"):
            raise SystemExit("--paper_beauty writes the dataset 'beauty' (the name its published configurations in "
                             f"properties/paper/beauty/ are found by); drop --name {args.name}")
        others = [flag for flag, value in (("--amazon_category", args.amazon_category),
                                           ("--interactions", args.interactions), ("--items", args.items),
                                           ("--core", args.core), ("--clean_titles", args.clean_titles)) if value]
        if others:
            raise SystemExit(f"--paper_beauty builds the paper's Beauty as published; {', '.join(others)} would be "
                             "ignored: drop them, or convert your own tables without --paper_beauty")
        stats = build_paper_beauty(args.paper_beauty, args.data_path, force=args.force)
        print(stats or f"{Path(args.data_path) / 'beauty'} already holds the paper's Beauty; nothing to do")
        return 0
    if not args.name:
        raise SystemExit("convert needs --name (the dataset to write), or --paper_beauty FOLDER")
    if args.force:
        raise SystemExit("--force only replaces another Beauty build with --paper_beauty; a conversion with --name "
                         "always rewrites its dataset")
    if args.amazon_category:
        stats = convert_amazon2014(args.raw_dir, args.amazon_category, args.data_path, args.name, core=args.core)
    else:
        stats = convert_tables(args.interactions, args.items, args.data_path, args.name, user_col=args.user_col,
                               item_col=args.item_col, time_col=args.time_col, title_col=args.title_col,
                               class_col=args.class_col, text_cols=args.text_cols, core=args.core,
                               clean_titles=args.clean_titles)
    print(stats)
    return 0


def _run_one(args) -> int:
    import json

    from .experiment import run_single

    result = run_single(args.model, args.dataset, args.seed, args.out, json.loads(args.overrides), args.threads,
                        args.data_path)
    print(json.dumps({k: result[k] for k in ("model", "seed", "epochs", "sec_per_epoch")}), result["test"])
    return 0


class ExamplesAndDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help that keeps the examples' lines and shows every option's default."""


def _set_values(items) -> dict:
    """``--set key=value ...`` as settings (``cli.setting_values``)."""
    from .cli import setting_values

    return setting_values(items, "--set learning_rate=0.001")


def _llm_states(args) -> int:
    """Fill the shared LLM state store with every prompt a fixed-token LLMSRec run on this data reads (items,
    training rows, validation, test and the order test's shuffled test prompts), this process's shard only:
    ``--shard 1/2`` and ``--shard 2/2`` side by side halve the wall time. Stop it at any time; rerun to resume."""
    import torch

    from .llm.local import resolve_local_llm
    from .llm.states import parse_shard
    from .model.llmsrec import load_frozen_llm, run_prompts, state_functions, state_precision, state_store
    from .pipeline import load_data

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    shard = parse_shard(args.shard)
    overrides = {"llm_state_shard": [shard[0] + 1, shard[1]], "show_progress": False}
    overrides.update(_set_values(args.set))
    if args.data_path:
        overrides["data_path"] = args.data_path
    run = load_data(args.model, args.dataset, config_dict=overrides)  # the prepare stage fills the item states
    config = run.config
    if config["model"] != "LLMSRec":
        raise SettingError(f"llm-states fills the states LLMSRec reads; --model {config['model']} reads none")
    parts = run_prompts(config, run.train_data, run.valid_data, run.test_data)
    precision = state_precision(config)
    store = state_store(resolve_local_llm(config["llm_model"]), precision)
    todo = {name: store.missing(prompts, shard) for name, prompts in parts.items()}
    print(f"llm states ({precision}, shard {args.shard}) in {store.cache.path}: "
          + ", ".join(f"{name} {len(todo[name])} of {len(set(p))} missing" for name, p in parts.items()), flush=True)
    if any(todo.values()):
        tokenizer, llm, _ = load_frozen_llm(config["llm_model"], precision)
        functions = state_functions(tokenizer, llm, precision, config["device"])
        done = set()
        for name, prompts in todo.items():  # a prompt shared by two parts (a test prompt also trained on) once
            store.compute([p for p in prompts if p not in done], *functions, int(config["llmsrec_state_batch_size"]),
                          f"LLM states ({name})")
            done.update(prompts)
    print(f"llm states of shard {args.shard} complete ({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


def _report(args) -> int:
    from .experiment import run_experiment, run_plan
    from .report import build_report

    if args.results:
        from .experiment import write_results

        write_results()
        print("benchmarks/RESULTS.md rebuilt from every experiment file's runs")
        return 0
    settings = _set_values(args.set)
    if args.jobs is None:
        from .experiment import default_jobs

        args.jobs = default_jobs(args.threads)
    if args.experiment:
        started = time.perf_counter()
        print(run_experiment(args.experiment, args.only, args.tables_only, args.threads, args.jobs, settings,
                             args.dataset, args.data_path, args.out))
        print(f"report of {args.experiment} written in {time.perf_counter() - started:.0f}s")
        return 0
    if not (args.out and (args.tables_only or (args.dataset and args.models))):
        raise SystemExit("report needs --experiment FILE, --dataset, --models and --out, or --out with --tables_only")
    started = time.perf_counter()
    if not args.tables_only:
        run_plan(args.out, args.dataset, args.models, args.seeds, settings, args.threads, args.data_path, args.jobs)
    print(build_report(args.out))
    print(f"report written to {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


def _model_for(args):
    """The checkpoint's model, or a model fitted in one pass on the spot (--model, --dataset)."""
    from .recommend import _load, build_fitted_model

    if args.checkpoint:
        return _load(args.checkpoint, args.trust_checkpoint)
    if not (args.model and args.dataset):
        raise SettingError("give --checkpoint, or --model and --dataset for a model that needs no training")
    settings = {"data_path": args.data_path} if args.data_path else {}
    files = args.config_files.split() if args.config_files else None
    return build_fitted_model(args.model, args.dataset, files, settings)


def _recommend_many(args) -> int:
    from .recommend import recommend_many

    logging.getLogger().setLevel(logging.WARNING)
    if not args.out:
        print("error: --sessions needs --out FILE (.csv, .tsv or .jsonl)", file=sys.stderr)
        return 2
    try:
        frame = recommend_many(_model_for(args), args.sessions, args.k, skip_unknown=args.skip_unknown)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_table(frame, args.out)
    skipped = frame.attrs.get("unknown_entries_skipped", 0)
    print(f"{args.out}: top {args.k} for {frame['session_id'].nunique()} sessions"
          + (f" ({skipped} unknown entries skipped)" if skipped else ""))
    return 0


def write_table(frame, path) -> None:
    """A DataFrame as .csv, .tsv or .jsonl (one record a line), by the file's extension."""
    path = Path(path)
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_csv(path, sep="\t" if path.suffix in (".tsv", ".tab") else ",", index=False)


def _export_items(args) -> int:
    """A trained model's item table, as an .itememb atomic file (iid:token, item_emb:float_seq) with its sidecar."""
    from .embeddings.store import write_itememb
    from .recommend import item_table

    ids, vectors = item_table(args.checkpoint, args.trust_checkpoint)
    write_itememb(Path(args.out), ids, vectors, {"source": "item_table", "checkpoint": str(args.checkpoint)})
    print(f"{args.out}: {len(ids)} items x {vectors.shape[1]}")
    return 0


def _recommend(args) -> int:
    import json

    logging.getLogger().setLevel(logging.WARNING)  # the answer on stdout, no dataset or config report on stderr

    from .recommend import UnknownItemError, recommend

    if args.k < 1:
        print(f"error: -k must be 1 or more (how many items to recommend); got {args.k}", file=sys.stderr)
        return 2
    if bool(args.session) == bool(args.sessions):
        print("error: give --session ITEM ... (one session) or --sessions FILE (many)", file=sys.stderr)
        return 2
    if args.sessions:
        return _recommend_many(args)
    try:
        results = recommend(_model_for(args), args.session, args.k)
    except (UnknownItemError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        width = max((len(r.item_id) for r in results), default=4)
        for r in results:
            print(f"{r.rank:>3}  {r.item_id:<{width}}  {r.score:>10.4f}  {r.title}")
    return 0


EXAMPLES = """examples:
  python -m recbole_llm run --model=LLM2SASRec --dataset=ml-100k --epochs=5
  python -m recbole_llm tune --model=SASRec --dataset=beauty --max_evals=30
  python -m recbole_llm recommend --dataset ml-100k --model LLMSeqSim --session "toy story" 50 -k 10
  python -m recbole_llm embed --dataset beauty --reduce pca --dim 128
  python -m recbole_llm convert --name mydata --interactions inter.csv --items items.csv
  python -m recbole_llm report --dataset beauty --models SASRec LLMSeqSim --seeds 1 2 3 --out results/
run `python -m recbole_llm <command> --help` for a command's options"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # in any position, before or after the subcommand
    argv = [a for a in argv if a != "--debug"]
    if debug:  # run/tune parse their own --debug; the other subcommands read it before the subcommand
        argv = argv + ["--debug"] if argv[:1] in (["run"], ["tune"]) else ["--debug"] + argv
    from .cli import refused_secrets

    if refused_secrets(argv):  # every subcommand: nothing that carries a key is parsed, logged or passed on
        return 2
    if argv and argv[0] == "tune":  # its own flags; the rest are settings (--key=value) for every trial
        from .cli import tune_main

        return tune_main(argv[1:])
    if argv and argv[0] == "run":  # RecBole's flags (--key=value), read by RecBole's Config
        from .cli import run_main

        sys.argv = ["python -m recbole_llm run"] + argv[1:]
        return run_main(argv[1:], prog="python -m recbole_llm run")
    parser = argparse.ArgumentParser(prog="python -m recbole_llm", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{run,tune,recommend,embed,convert,report,llm-states,export-items}")
    commands.add_parser("run", help="train and evaluate a model (RecBole's flags; see run --help)")
    commands.add_parser("tune", help="tune a model on the temporal folds (RecBole's HyperTuning)")

    embed = commands.add_parser("embed", help="compute (or reuse) item embeddings of a dataset")
    embed.add_argument("--dataset", required=True, help="dataset name")
    embed.add_argument("--data_path", default="dataset", help="folder holding <dataset>/")
    embed.add_argument("--provider", default="local", choices=["local", "openai", "vertex", "file"], help="who embeds the titles (file: --embedding_model is an embedding file)")
    embed.add_argument("--embedding_model", default=None,
                       help="embedding model (provider default) or file; --model means the recommender everywhere")
    embed.add_argument("--reduce", default="none", choices=["none", "pca", "lda", "autoencoder", "random"], help="dimensionality reduction")
    embed.add_argument("--dim", type=int, default=None, help="target size of the reduction")
    embed.add_argument("--fields", nargs="+", default=None, help="item columns holding the text")
    embed.add_argument("--template", default=None, help='e.g. "{title} ({class})"')
    embed.add_argument("--seed", type=int, default=42, help="random state of the reduction")
    embed.add_argument("--base_url", default=None, help="OpenAI-compatible server")
    embed.add_argument("--project", default=None, help="Vertex AI project")
    embed.add_argument("--location", default=None, help="Vertex AI location")
    embed.add_argument("--max_cost_usd", type=float, default=1.0, help="paid providers: refuse above this estimate")
    embed.add_argument("--timeout", type=float, default=30.0, help="seconds per provider request (embedding_timeout)")
    embed.add_argument("--max_retries", type=int, default=3,
                       help="provider retries on 429 / 5xx / timeouts (embedding_max_retries)")
    embed.add_argument("--confirm_cost", action="store_true", help="allow a paid run above --max_cost_usd")
    embed.add_argument("--force", action="store_true", help="rebuild the file (the cache still answers)")
    embed.add_argument("--speed", type=int, default=0, metavar="N",
                       help="only measure a local embedder's titles/s on the first N item texts (nothing written)")
    embed.set_defaults(func=_embed)

    convert = commands.add_parser("convert", help="raw data -> RecBole atomic files")
    convert.add_argument("--name", default=None, help="dataset name to write")
    convert.add_argument("--data_path", default="dataset", help="where <name>/ is written")
    convert.add_argument("--amazon_category", default=None, help="e.g. Beauty (reads --raw_dir)")
    convert.add_argument("--raw_dir", default="dataset/raw", help="Amazon 2014 raw files")
    convert.add_argument("--interactions", help="table of (user, item, time) rows")
    convert.add_argument("--items", help="table of items with their titles")
    convert.add_argument("--user_col", default="user_id", help="user (session) column")
    convert.add_argument("--item_col", default="item_id", help="item column")
    convert.add_argument("--time_col", default="timestamp",
                         help="time column: seconds, or ISO 8601 dates (2014-03-01, 2014-03-01T12:30:00Z)")
    convert.add_argument("--title_col", default="title", help="title column of the items table")
    convert.add_argument("--class_col", default=None, help="item class column (LDA labels)")
    convert.add_argument("--text_cols", nargs="+", default=None, metavar="COLUMN",
                         help="more item text columns to keep (brand, description, categories), for "
                              "embedding_text_fields / embedding_text_template")
    convert.add_argument("--core", type=int, default=0, help="iterative k-core filter (0: none)")
    convert.add_argument("--clean_titles", action="store_true", help="strip HTML entities and spaces from titles")
    convert.add_argument("--paper_beauty", default=None, metavar="FOLDER",
                         help="build 'beauty' as the paper used it from its staged tables (joined/, raw/; e.g. "
                              "../shared/data/amazon-beauty)")
    convert.add_argument("--force", action="store_true", help="with --paper_beauty: replace another Beauty build")
    convert.set_defaults(func=_convert)

    states = commands.add_parser("llm-states", help="fill the frozen-LLM state store an LLMSRec run reads")
    states.add_argument("--model", default="LLMSRec", help="the recommender whose prompts are filled")
    states.add_argument("--dataset", required=True, help="dataset name")
    states.add_argument("--shard", default="1/1", help="i/n: this process fills shard i of n (run n side by side)")
    states.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    states.add_argument("--set", nargs="*", help="key=value settings of the run (e.g. llm_state_precision=fp32)")
    states.add_argument("--data_path", default=None, help="folder holding <dataset>/")
    states.set_defaults(func=_llm_states)

    report = commands.add_parser(
        "report", help="models x seeds -> results.csv, leaderboard.md, plots",
        description="Run the missing (model, seed) runs of an experiment, each in its own process, then write its "
                    "tables and plots. A finished run is reused only under the same resolved settings; a stopped "
                    "one resumes from its last validated epoch.\n\nexamples:\n"
                    "  python -m recbole_llm report --experiment benchmarks/experiments/beauty.yaml --jobs 2\n"
                    "  python -m recbole_llm report --experiment benchmarks/experiments/beauty.yaml --only SASRec\n"
                    "  python -m recbole_llm report --experiment benchmarks/experiments/beauty.yaml --tables_only\n"
                    "  python -m recbole_llm report --dataset ml-100k --models Pop SASRec 'LLM2SASRec[epochs=5]' "
                    "--seeds 1 2 --out results/",
        formatter_class=ExamplesAndDefaults)
    report.add_argument("--experiment", default=None, help="an experiment file (benchmarks/experiments/*.yaml)")
    report.add_argument("--only", nargs="+", help="with --experiment: run only these labels")
    report.add_argument("--dataset", default=None, help="dataset name (with --experiment: run its plan on this dataset)")
    report.add_argument("--models", nargs="+", default=None, help="Model | Model[key=value,...] | Label=Model[...]")
    report.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds per model")
    report.add_argument("--out", default=None, help="folder of the run files and tables (with --experiment: "
                        "instead of the file's)")
    report.add_argument("--set", nargs="*", help="key=value applied to every run (with --experiment: over the "
                        "file's settings, its rows' included)")
    report.add_argument("--threads", type=int, default=1, help="torch threads per run")
    report.add_argument("--jobs", type=int, default=None,
                        help="runs side by side, each in its own process (default: one per --threads cores, i.e. "
                             "both cores of a 2-core machine; 1 where a GPU is visible); a run's result does not "
                             "depend on it")
    report.add_argument("--data_path", default=None, help="folder holding <dataset>/")
    report.add_argument("--tables_only", action="store_true", help="rebuild tables/plots from finished runs")
    report.add_argument("--results", action="store_true",
                        help="rebuild benchmarks/RESULTS.md from every experiment file's finished runs")
    report.set_defaults(func=_report)

    rec = commands.add_parser(
        "recommend", help="top-k items for one session, with titles",
        description="Top-k recommendations for one session. Examples:\n"
                    "  python -m recbole_llm recommend --dataset ml-100k --model LLMSeqSim --session 'toy story' 50\n"
                    "  python -m recbole_llm recommend --checkpoint saved/SASRec-X.pth --session 50 181 -k 5 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rec.add_argument("--session", nargs="+", default=None, help="item ids or titles, oldest first")
    rec.add_argument("--sessions", default=None, metavar="FILE",
                     help="many sessions: a .csv/.tsv (session_id, item_id[, timestamp]) or .jsonl "
                          "({\"session_id\": ..., \"items\": [...]}); with --out")
    rec.add_argument("--out", default=None, help="with --sessions: .csv, .tsv or .jsonl of (session_id, rank, "
                                                 "item_id, title, score)")
    rec.add_argument("--skip_unknown", action="store_true", help="with --sessions: leave unknown entries out")
    rec.add_argument("-k", type=int, default=10, help="how many items to recommend")
    rec.add_argument("--checkpoint", default=None, help="a RecBole checkpoint (saved/<Model>-<time>.pth)")
    rec.add_argument("--model", default=None, help="a model that needs no training (LLMSeqSim, SKNN, ..., Pop)")
    rec.add_argument("--dataset", default=None, help="dataset name (with --model)")
    rec.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's dataset/)")
    rec.add_argument("--config_files", default=None, help="space-separated yaml files (with --model)")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.add_argument("--trust_checkpoint", action="store_true",
                     help="also read a pickled checkpoint (RecBole's own format): it could run code, use it only for "
                          "files you made")
    rec.set_defaults(func=_recommend)

    export = commands.add_parser("export-items", help="a trained model's item table as an .itememb file")
    export.add_argument("--checkpoint", required=True, help="a checkpoint of a model with an item table (LLM2X, ...)")
    export.add_argument("--out", required=True, help="the .itememb file to write")
    export.add_argument("--trust_checkpoint", action="store_true", help="also read a pickled checkpoint")
    export.set_defaults(func=_export_items)

    one = commands.add_parser("run-one")  # one (model, seed) of a report, in its own process; not listed
    one.add_argument("--model", required=True)
    one.add_argument("--dataset", required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--overrides", default="{}")
    one.add_argument("--data_path", default=None)
    one.set_defaults(func=_run_one)

    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import recbole_llm  # noqa: F401  (RecBole patches)
    from .errors import run_command

    return run_command(lambda: args.func(args), debug=args.debug)

if __name__ == "__main__":
    sys.exit(main())
