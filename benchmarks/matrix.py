"""Resumable runs of (variant, seed) jobs, one subprocess each, and side-by-side tables."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METRICS = [
    "ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10", "mrr@20",
    "catalogcoverage@10", "catalogcoverage@20", "serendipity@10", "serendipity@20", "novelty@10", "novelty@20",
]


def run_jobs(out_dir: Path, dataset: str, variants: dict, seeds: list[int], common: dict, threads: int = 1) -> None:
    """``variants``: name -> (model, overrides). Finished (variant, seed) files are skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, name) for seed in seeds for name in variants]
    for number, (seed, name) in enumerate(jobs, 1):
        target = out_dir / f"{name}__seed{seed}.json"
        if target.exists():
            continue
        model, overrides = variants[name]
        settings = {**common, **overrides}
        command = [sys.executable, str(HERE / "run_one.py"), "--model", model, "--dataset", dataset,
                   "--seed", str(seed), "--out", str(target), "--threads", str(threads)]
        command += [f"{k}={json.dumps(v)}" for k, v in settings.items()]
        print(f"[{number}/{len(jobs)}] {name} seed {seed} ...", flush=True)
        started = time.perf_counter()
        log = out_dir / f"{name}__seed{seed}.log"
        with open(log, "w") as f:
            code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
        print(f"    exit {code} after {time.perf_counter() - started:.0f}s (log {log})", flush=True)


def load_results(out_dir: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for file in sorted(out_dir.glob("*__seed*.json")):
        name = file.name.split("__seed")[0]
        results.setdefault(name, []).append(json.loads(file.read_text()))
    return results


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f}±{statistics.stdev(values):.4f}"


def table(results: dict[str, list[dict]], names: list[str], metrics=METRICS, extra=("sec_per_epoch", "epochs")) -> str:
    header = ["variant", "seeds"] + list(metrics) + list(extra)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        runs = results.get(name, [])
        row = [name, str(len(runs))]
        row += [mean_std([r["test"][m] for r in runs]) for m in metrics]
        row += [mean_std([float(r[e]) for r in runs]) for e in extra]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired_ratio(results, numerator: str, denominator: str, key) -> str:
    """Mean over seeds present in both of key(num)/key(den)."""
    a = {r["seed"]: r for r in results.get(numerator, [])}
    b = {r["seed"]: r for r in results.get(denominator, [])}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "-"
    ratios = [key(a[s]) / key(b[s]) for s in seeds if key(b[s])]
    return f"{statistics.mean(ratios):.3f} (seeds {seeds})"
