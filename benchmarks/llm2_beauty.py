"""LLM2X vs X on Beauty under the temporal protocol (issue: LLM2SASRec/BERT4Rec/GRU4Rec).

    python benchmarks/llm2_beauty.py [--seeds 1 2 3] [--only LLM2SASRec-permuted GRU4Rec ...] [--report-only]

Every (variant, seed) goes through the report runner and lands in benchmarks/results/beauty
beside the other Beauty runs, so the leaderboard holds them all. Resumable: a finished
(variant, seed) is never recomputed. Same hyper-parameters and seeds within each pair.
Two processes with disjoint ``--only`` lists can share the queue on a 2-core machine.
"""
import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

from recbole_llm.analysis import has_session_ranks, paired_bootstrap  # noqa: E402
from recbole_llm.experiment import run_plan  # noqa: E402
from recbole_llm.report import load_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty"
COMMON = {"epochs": 40, "stopping_step": 5, "train_batch_size": 1024, "embedding_reduction": "pca"}
# CPU budgets for the GRU4Rec and BERT4Rec pairs (SASRec's pair early-stops within 40): both sides of a pair get
# the same epoch cap, so the comparison is fair, but neither model is trained to convergence.
GRU_BUDGET = "epochs=10"
BERT_BUDGET = "epochs=10"
SPECS = {
    "SASRec": "SASRec",
    "LLM2SASRec": "LLM2SASRec",
    "LLM2SASRec-permuted": "LLM2SASRec-permuted=LLM2SASRec[embedding_permute=true]",
    "GRU4Rec": f"GRU4Rec[{GRU_BUDGET}]",
    "LLM2GRU4Rec": f"LLM2GRU4Rec[{GRU_BUDGET}]",
    "BERT4Rec": f"BERT4Rec[{BERT_BUDGET}]",
    "LLM2BERT4Rec": f"LLM2BERT4Rec[{BERT_BUDGET}]",
}
PAIRS = [("LLM2SASRec", "SASRec"), ("LLM2SASRec-permuted", "LLM2SASRec"), ("LLM2GRU4Rec", "GRU4Rec"),
         ("LLM2BERT4Rec", "BERT4Rec")]
SHOWN = ["ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10", "mrr@20", "catalogcoverage@20", "serendipity@20",
         "novelty@20"]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f}±{statistics.stdev(values):.4f}"


def _difference(a: dict, b: dict, seeds: list[int]) -> str:
    """NDCG@20 gap a - b averaged over those of ``seeds`` whose runs kept per-session ranks, with its
    session-bootstrap interval."""
    kept = [s for s in seeds if has_session_ranks(a[s]) and has_session_ranks(b[s])]
    if not kept:
        return "-"
    mean, low, high = paired_bootstrap(np.stack([a[s]["sessions"]["rank_cut1"] for s in kept]),
                                       np.stack([b[s]["sessions"]["rank_cut1"] for s in kept]))
    which = f" (seeds {', '.join(map(str, kept))})" if len(seeds) > 1 else ""
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{which}"


def report() -> None:
    runs = {}
    for run in load_runs(OUT):
        runs.setdefault(run["label"], {})[run["seed"]] = run
    header = ["variant", "seeds"] + SHOWN + ["s/epoch", "epochs"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in SPECS:
        mine = list(runs.get(name, {}).values())
        cells = [name, str(len(mine))] + [_cell([r["test"][m] for r in mine]) for m in SHOWN]
        cells += [_cell([r["sec_per_epoch"] for r in mine]), _cell([float(r["epochs"]) for r in mine])]
        print("| " + " | ".join(cells) + " |")
    print("\n| run | seed | epochs | NDCG@10 | NDCG@20 | HR@20 | MRR@20 | CatalogCoverage@20 | best valid NDCG@20 |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name in SPECS:
        for seed, r in sorted(runs.get(name, {}).items()):
            t = r["test"]
            print(f"| {name} | {seed} | {r['epochs']} | {t['ndcg@10']:.4f} | {t['ndcg@20']:.4f} | {t['hit@20']:.4f} | "
                  f"{t['mrr@20']:.4f} | {t['catalogcoverage@20']:.3f} | {r['valid']['ndcg@20']:.4f} |")
    print("\n| pair | seeds | NDCG@20 ratio per seed | mean | NDCG@20 difference per seed [95% CI over test sessions] |"
          " seed-averaged difference [95% CI] |\n|---|---|---|---|---|---|")
    for a, b in PAIRS:
        seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not seeds:
            print(f"| {a} / {b} | - | - | - | - | - |")
            continue
        ratios = [runs[a][s]["test"]["ndcg@20"] / runs[b][s]["test"]["ndcg@20"] for s in seeds]
        per_seed = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"| {a} / {b} | {seeds} | {per_seed} | {statistics.mean(ratios):.3f} | "
              f"{'; '.join(_difference(runs[a], runs[b], [s]) for s in seeds)} | "
              f"{_difference(runs[a], runs[b], seeds)} |")
    print("\nSeconds per epoch in these runs depend on what else shared the CPU; the like-for-like ratio is"
          " measured by benchmarks/llm2_epoch_time.py.")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", nargs="+", choices=list(SPECS), default=list(SPECS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        build_beauty()
        run_plan(OUT, "beauty", [SPECS[name] for name in args.only], args.seeds, COMMON, args.threads, DATA_PATH)
    report()


if __name__ == "__main__":
    main()
