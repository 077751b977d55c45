"""Ray Tune throughput with 1 and 2 workers, side by side in one command (#39): the same trials (fixed
configurations drawn from the model's search space with a seed, tried in the same order, no pruning) run on the
local Ray of this machine's cores, at most 1, 2, 2 and then 1 trials side by side, one torch thread per trial (the
order cancels a drift of a shared machine's speed over the run: the same trial took 22 s in one pass and 28 s in the
next here). Reports the trials per hour of each pass, of each number of workers pooled over its passes and their
ratio, and whether every trial's validation score is identical in every pass (the same seed, the same result, however
many run side by side).

    python -m benchmarks.ray_throughput --model PaperSASRec --dataset ml-100k --trials 12 --epochs 2 --folds 1 \\
        --out benchmarks/results/profile/ray_throughput.json

Run it on an otherwise idle machine: the 2-worker run needs both cores.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def fixed_points(model: str, trials: int, seed: int) -> tuple[list[dict], str]:
    """``trials`` configurations of the model's ``.hyper`` space, drawn reproducibly: its continuous parameters
    (learning rate, weight decay, dropouts) only, so every trial trains the same architecture for the same epochs
    and costs the same: the ratio of trials per hour is then the workers' and not the draw's. Also returns that
    sub-space in RecBole's ``.hyper`` format."""
    from recbole_llm.tuning import search_space_file

    rng = np.random.default_rng(seed)
    ranges, lines = {}, []
    for line in Path(search_space_file(model)).read_text().splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in ("uniform", "loguniform"):
            low, high = (float(v) for v in parts[2].split(","))
            ranges[parts[0]] = (parts[1], low, high)
            lines.append(line)
    points = [{name: float(np.exp(rng.uniform(low, high)) if kind == "loguniform" else rng.uniform(low, high))
               for name, (kind, low, high) in ranges.items()} for _ in range(trials)]
    return points, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="PaperSASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--folds", default="1")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 2, 1],
                        help="the passes, in order; each count's trials per hour pools its passes (1 2 2 1: a drift "
                             "of the machine's speed during the run cancels out of the ratio)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import pandas as pd
    import ray

    import recbole_llm  # noqa: F401
    from recbole_llm.experiment import provenance
    from recbole_llm.presets import config_files
    from recbole_llm.ray_tuning import tune_on_ray

    from .passes import pooled_rates

    points, space = fixed_points(args.model, args.trials, args.seed)
    folds = [int(f) for f in args.folds.split(",")]
    base = {"epochs": args.epochs, "stopping_step": args.epochs + 1, "show_progress": False, "state": "ERROR"}
    report = {"command": "python -m benchmarks.ray_throughput " + shlex.join(sys.argv[1:]), "model": args.model,
              "dataset": args.dataset, "trials": args.trials, "epochs": args.epochs, "folds": folds,
              "points": points, "runs": [], "provenance": provenance(1)}
    scores = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "space.hyper").write_text(space)
            started = time.perf_counter()
            # every trial a fixed point (no TPE suggestion depends on which trial finished first), no pruning
            tune_on_ray(args.model, args.dataset, max_evals=args.trials, folds=folds, base_config=base,
                        params_file=Path(folder) / "space.hyper",
                        config_file_list=config_files(None, args.model, args.dataset, "paper"),
                        warmup=args.trials, output_dir=folder, seed=args.seed, points_to_evaluate=points,
                        grace_epochs=10**6, max_concurrent=workers)
            wall = time.perf_counter() - started
            ray.shutdown()
            rows = pd.read_csv(Path(folder) / f"{args.model}-{args.dataset}.csv")
        keys = list(points[0])
        scores.append(sorted((tuple(str(r[k]) for k in keys), round(float(r["score"]), 6))
                             for _, r in rows.iterrows() if r["status"] == "ok"))
        report["runs"].append({"workers": workers, "wall_s": round(wall, 1), "trials_ok": len(scores[-1]),
                               "trials_per_hour": round(3600 * len(scores[-1]) / wall, 1),
                               "mean_trial_s": round(float(rows["seconds"].mean()), 1)})
        print(report["runs"][-1], flush=True)
    report["pooled_trials_per_hour"], ratio = pooled_rates(report["runs"], "workers", "trials_ok")
    if ratio is not None:
        report["throughput_ratio"] = ratio
        report["identical_trial_scores"] = all(s == scores[0] for s in scores)
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
