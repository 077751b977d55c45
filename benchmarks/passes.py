"""Pooling the passes of a side-by-side benchmark (``ray_throughput``, ``jobs_throughput``): run in the order 1, 2,
2, 1 workers, each number of workers counts the work of all its passes over their summed wall time, so a drift of
a shared machine's speed during the command cancels out of the ratio."""
from __future__ import annotations


def pooled_rates(passes: list[dict], workers_key: str, done_key: str) -> tuple[dict, float | None]:
    """Per number of workers (``passes[i][workers_key]``), the work done (``done_key``) per hour over its passes'
    ``wall_s``; and the rate of the most workers over the rate of the fewest (None with one number of workers)."""
    pooled: dict = {}
    for run in passes:
        done, wall = pooled.get(run[workers_key], (0, 0.0))
        pooled[run[workers_key]] = (done + run[done_key], wall + run["wall_s"])
    rates = {w: round(3600 * done / wall, 1) for w, (done, wall) in sorted(pooled.items())}
    ratio = round(rates[max(rates)] / rates[min(rates)], 2) if len(rates) >= 2 else None
    return rates, ratio
