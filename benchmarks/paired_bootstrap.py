"""Paired bootstrap of test NDCG@20 between rows of finished experiments, on the same test sessions and seeds: the
mean gap (row - baseline) and its 95% interval from resampling sessions (``analysis.paired_bootstrap``; the
seeds both rows share are averaged per session first).

    python -m benchmarks.paired_bootstrap --baseline benchmarks/results/beauty/LLM2SASRec \
        --rows benchmarks/results/beauty_ensemble/SASRec+LLM2SASRec+LLMSeqSim ... \
        --out benchmarks/results/beauty_ensemble/bootstrap.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def ranks(prefix: str, seeds: list[int]) -> tuple[np.ndarray, list[float]]:
    arrays, ndcg = [], []
    for seed in seeds:
        base = Path(f"{prefix}__seed{seed}")
        arrays.append(np.load(base.with_suffix(".npz"))["rank_cut1"])
        ndcg.append(json.loads(base.with_suffix(".json").read_text())["test"]["ndcg@20"])
    return np.stack(arrays), ndcg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="<results folder>/<label> of the baseline row")
    parser.add_argument("--rows", nargs="+", required=True, help="<results folder>/<label> of each row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from recbole_llm.analysis import paired_bootstrap

    base, base_ndcg = ranks(args.baseline, args.seeds)
    lines = [f"# Paired bootstrap of test NDCG@20 against `{args.baseline}` (seeds {args.seeds}, 2,000 resamples of "
             "the test sessions)", "", f"`python -m benchmarks.paired_bootstrap --baseline {args.baseline} --rows "
             f"{' '.join(args.rows)} --seeds {' '.join(map(str, args.seeds))} --out {args.out}`", "",
             "| row | NDCG@20 per seed | baseline per seed | mean gap | 95% interval |", "|---|---|---|---|---|"]
    for row in args.rows:
        mine, mine_ndcg = ranks(row, args.seeds)
        gap, low, high = paired_bootstrap(mine, base)
        lines.append(f"| `{row}` | {' / '.join(f'{x:.4f}' for x in mine_ndcg)} | "
                     f"{' / '.join(f'{x:.4f}' for x in base_ndcg)} | {gap:+.4f} | [{low:+.4f}, {high:+.4f}] |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
