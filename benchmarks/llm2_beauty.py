"""LLM2X vs X on Beauty under the temporal protocol (issue: LLM2SASRec/BERT4Rec/GRU4Rec).

    python benchmarks/llm2_beauty.py [--seeds 1 2 3] [--report-only]

Resumable: each (variant, seed) writes benchmarks/runs/llm2_beauty/<variant>__seed<s>.json;
rerunning skips finished ones. Same hyper-parameters and seeds within each pair.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_beauty  # noqa: E402
from matrix import load_results, paired_ratio, run_jobs, table  # noqa: E402

OUT = Path(__file__).resolve().parent / "runs" / "llm2_beauty"
COMMON = {"epochs": 40, "stopping_step": 5, "train_batch_size": 1024, "embedding_reduction": "pca"}
VARIANTS = {
    "SASRec": ("SASRec", {}),
    "LLM2SASRec": ("LLM2SASRec", {}),
    "LLM2SASRec-permuted": ("LLM2SASRec", {"embedding_permute": True}),
    "GRU4Rec": ("GRU4Rec", {}),
    "LLM2GRU4Rec": ("LLM2GRU4Rec", {}),
    "BERT4Rec": ("BERT4Rec", {}),
    "LLM2BERT4Rec": ("LLM2BERT4Rec", {}),
}
PAIRS = [("LLM2SASRec", "SASRec"), ("LLM2SASRec-permuted", "LLM2SASRec"), ("LLM2GRU4Rec", "GRU4Rec"),
         ("LLM2BERT4Rec", "BERT4Rec")]


def report():
    results = load_results(OUT)
    print(table(results, list(VARIANTS)))
    print()
    print("| pair | NDCG@20 ratio | sec/epoch ratio |\n|---|---|---|")
    for a, b in PAIRS:
        ndcg = paired_ratio(results, a, b, lambda r: r["test"]["ndcg@20"])
        speed = paired_ratio(results, a, b, lambda r: r["sec_per_epoch"])
        print(f"| {a} / {b} | {ndcg} | {speed} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        build_beauty()
        run_jobs(OUT, "beauty", VARIANTS, args.seeds, COMMON, threads=args.threads)
    report()


if __name__ == "__main__":
    main()
