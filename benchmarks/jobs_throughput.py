"""``report --jobs``: wall time of the same plan with 1 and 2 runs side by side, in one command (#43).

The plan: ``--model`` on ``--dataset`` for seeds 1..``--runs``, ``--epochs`` epochs each, one torch thread per run,
written to a fresh folder per pass. Passes run with 1, 2, 2 and 1 jobs (the order cancels a drift of a shared
machine's speed over the command); each number of jobs pools its passes (``benchmarks/passes.py``). Reports the speed-up and whether every
run's validation and test figures are identical in every pass (each run is its own seeded process, so ``--jobs``
must not change a digit).

    python -m benchmarks.jobs_throughput --model PaperSASRec --dataset ml-100k --runs 4 --epochs 3 \\
        --out benchmarks/results/profile/jobs_throughput.json

Run it on an otherwise idle machine: the 2-job passes need both cores.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="PaperSASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 2, 1], help="the passes, in order")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from recbole_llm.experiment import provenance, run_plan

    from .passes import pooled_rates

    seeds = list(range(1, args.runs + 1))
    common = {"epochs": args.epochs, "stopping_step": args.epochs + 1}
    report = {"command": "python -m benchmarks.jobs_throughput " + shlex.join(sys.argv[1:]), "model": args.model,
              "dataset": args.dataset, "runs": args.runs, "epochs": args.epochs, "passes": [],
              "provenance": provenance(1)}
    figures = []
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            run_plan(Path(folder), args.dataset, [args.model], seeds, common, threads=1, jobs=jobs)
            wall = time.perf_counter() - started
            runs = {seed: json.loads((Path(folder) / f"{args.model}__seed{seed}.json").read_text()) for seed in seeds}
        figures.append({seed: (run["valid"], run["test"]) for seed, run in runs.items()})
        report["passes"].append({"jobs": jobs, "wall_s": round(wall, 1), "runs": len(runs),
                                 "mean_run_wall_s": round(sum(r["wall_seconds"] for r in runs.values()) / len(runs), 1)})
        print(report["passes"][-1], flush=True)
    report["pooled_runs_per_hour"], report["speedup"] = pooled_rates(report["passes"], "jobs", "runs")
    report["identical_run_results"] = all(f == figures[0] for f in figures)
    print(json.dumps({k: v for k, v in report.items() if k != "provenance"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
