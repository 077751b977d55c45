"""PaperSASRec on a synthetic catalog of a million items (#39): one epoch with the sampled softmax, its peak memory,
and the full softmax refused before any training, naming the setting that fits.

The data: ``--items`` items in ``--clusters`` clusters with Zipf popularity inside each, ``--interactions``
interactions in sessions of 2-20 items drawn from one cluster each (a category a user browses), one day per session
in order, written as RecBole atomic files (``user_id``, ``item_id``, ``timestamp``, the paper preset's columns) under
``--data_path``. The run is the paper preset's protocol (the temporal SESSION split; validation on a seeded sample
of ``--eval_sessions`` sessions) with ``train_mode: all_positions`` and ``softmax_negatives``, one thread. The full
softmax is checked on the same data by the check the prepare stage runs before a model is built
(``prepare.check_catalog_memory``), which must refuse it within ``--budget_gb``.

    python -m benchmarks.scale_sasrec --items 1000000 --interactions 10000000 \\
        --out benchmarks/results/profile/scale_sasrec.json

``--learner lazy_adam`` trains the epoch with Adam on the touched item rows only (``recbole_llm/lazy_adam.py``);
``--compare_steps K`` first times K steps of both on the same batches.

Peak memory is the process's maximum resident set (``ru_maxrss``), data generation included (run with
``--generate_only`` first to leave it out: the files are reused).
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def write_synthetic(folder: Path, name: str, items: int, interactions: int, clusters: int, seed: int = 0) -> Path:
    """The atomic ``.inter`` file (reused when it exists with the same sizes)."""
    import pandas as pd

    target = folder / name / f"{name}.inter"
    stamp = target.with_suffix(".sizes.json")
    sizes = {"items": items, "interactions": interactions, "clusters": clusters, "seed": seed}
    if target.exists() and stamp.exists() and json.loads(stamp.read_text()) == sizes:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cluster_of = rng.integers(0, clusters, items)
    members = np.argsort(cluster_of, kind="stable")
    starts = np.searchsorted(cluster_of[members], np.arange(clusters + 1))
    lengths = rng.integers(2, 21, interactions // 10 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), interactions) + 1]
    lengths[-1] -= lengths.sum() - interactions
    if lengths[-1] < 2:
        lengths = lengths[:-1]
    sessions = len(lengths)
    session_cluster = rng.integers(0, clusters, sessions)
    session_cluster = np.where(starts[session_cluster + 1] > starts[session_cluster], session_cluster,
                               cluster_of[members[0]])
    size = starts[session_cluster + 1] - starts[session_cluster]
    owner = np.repeat(np.arange(sessions), lengths)
    # Zipf-like popularity inside a cluster: rank r drawn with probability ~ 1 / (r + 1)
    u = rng.random(len(owner))
    rank = np.minimum((np.exp(u * np.log(size[owner] + 1.0)) - 1).astype(np.int64), size[owner] - 1)
    item = members[starts[session_cluster[owner]] + rank] + 1
    position = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    frame = pd.DataFrame({"user_id:token": owner + 1, "item_id:token": item,
                          "timestamp:float": owner * 86400.0 + position})
    frame.to_csv(target, sep="\t", index=False)
    stamp.write_text(json.dumps(sizes))
    return target


def compare_learners(model, train_data, steps: int, lr: float) -> dict:
    """Median ms per training step of Adam and LazyAdam on the same ``steps`` batches (after one warm-up step), in
    the passes adam, lazy_adam, lazy_adam, adam, each on a fresh copy of the model; and their ratio."""
    import copy
    import statistics

    import torch

    from recbole_llm.lazy_adam import LazyAdam, item_row_parameters

    batches = []
    for batch in train_data:
        batches.append(batch)
        if len(batches) > steps:
            break
    times = {"adam": [], "lazy_adam": []}
    for learner in ("adam", "lazy_adam", "lazy_adam", "adam"):
        net = copy.deepcopy(model).train()
        optimizer = (torch.optim.Adam(net.parameters(), lr=lr) if learner == "adam"
                     else LazyAdam(net.parameters(), item_row_parameters(net), lr=lr))
        for number, batch in enumerate(batches):
            started = time.perf_counter()
            optimizer.zero_grad()
            net.calculate_loss(batch).backward()
            optimizer.step()
            if number:  # the first step allocates the optimizer's state
                times[learner].append(1000 * (time.perf_counter() - started))
        del net, optimizer
    medians = {learner: round(statistics.median(values), 1) for learner, values in times.items()}
    return {**medians, "lazy_over_adam": round(medians["lazy_adam"] / medians["adam"], 3)}


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--eval_sessions", type=int, default=1000)
    parser.add_argument("--budget_gb", type=float, default=8.0)
    parser.add_argument("--data_path", type=Path, default=Path("dataset"))
    parser.add_argument("--learner", default="adam", help="the epoch's optimizer: adam or lazy_adam")
    parser.add_argument("--compare_steps", type=int, default=0,
                        help="before the epoch, time this many steps with adam and with lazy_adam on the same "
                             "batches (passes adam, lazy_adam, lazy_adam, adam, each on a fresh copy of the model)")
    parser.add_argument("--compare_only", action="store_true", help="with --compare_steps: stop after the comparison")
    parser.add_argument("--generate_only", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    name = f"synthetic{args.items // 1000}k"
    started = time.perf_counter()
    write_synthetic(args.data_path, name, args.items, args.interactions, args.clusters)
    generated_s = time.perf_counter() - started
    if args.generate_only:
        print(f"{name}: written in {generated_s:.0f} s")
        return

    import recbole_llm  # noqa: F401  (registers our models)
    from recbole_llm import pipeline
    from recbole_llm.errors import SettingError
    from recbole_llm.experiment import provenance
    from recbole_llm.prepare import check_catalog_memory

    settings = {"data_path": str(args.data_path), "epochs": 1, "train_batch_size": args.batch,
                "eval_batch_size": 64, "hidden_size": args.hidden, "inner_size": args.hidden, "n_layers": 2,
                "n_heads": 2, "train_mode": "all_positions", "max_test_sessions": args.eval_sessions,
                "metrics": ["NDCG", "Hit"], "valid_metric": "NDCG@20", "show_progress": True,
                "memory_budget_gb": args.budget_gb, "save_dataset": False, "worker": 0, "learner": args.learner}
    row = {"command": "python -m benchmarks.scale_sasrec " + shlex.join(sys.argv[1:]), "items": args.items,
           "interactions": args.interactions, "generate_s": round(generated_s, 1), "budget_gb": args.budget_gb,
           "provenance": provenance(1)}

    started = time.perf_counter()
    print(f"loading {name} ({args.interactions:,} interactions)...", flush=True)
    run = pipeline.load_data("PaperSASRec", name, None, {**settings, "softmax_negatives": args.negatives})
    print(f"loaded in {time.perf_counter() - started:.0f} s, peak {peak_gib():.2f} GiB; training one epoch", flush=True)
    row["load_s"] = round(time.perf_counter() - started, 1)
    row["peak_gib_after_load"] = round(peak_gib(), 2)
    # the plain full softmax on the same data: the check the prepare stage runs before any model is built (the fused
    # one, the default since stop 53, holds one chunk and passes it; its time still grows with the catalog)
    run.config["softmax_negatives"], run.config["full_softmax"] = None, "plain"
    try:
        check_catalog_memory(run.config, run.train_data._dataset)
        row["full_softmax_refused"] = None
    except SettingError as error:
        row["full_softmax_refused"] = str(error)
    run.config["softmax_negatives"], run.config["full_softmax"] = args.negatives, "fused"
    run = pipeline.build_model(run)
    row["train_rows"] = len(run.train_data._dataset.inter_feat)
    row["parameters"] = sum(p.numel() for p in run.model.parameters())
    if args.compare_steps:
        row["step_ms"] = compare_learners(run.model, run.train_data, args.compare_steps, run.config["learning_rate"])
        print(f"ms per step: {row['step_ms']}", flush=True)
    if not (args.compare_steps and args.compare_only):
        started = time.perf_counter()
        best_valid, _ = run.trainer.fit(run.train_data, run.valid_data, saved=False, show_progress=True)  # per epoch
        row["epoch_and_validation_s"] = round(time.perf_counter() - started, 1)
        row["valid_ndcg@20"] = float(best_valid) if best_valid is not None else None
    row["peak_gib"] = round(peak_gib(), 2)
    row["within_budget"] = row["peak_gib"] <= args.budget_gb
    print(json.dumps(row, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
