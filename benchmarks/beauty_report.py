"""The Beauty reproduction report in one command: every model, the same protocol, resumable.

    python benchmarks/beauty_report.py [--seeds 1 2 3] [--tables-only]

Runs the plans of neighbours_beauty.py (Pop, SKNN family, SKNNEmb, LLMSeqSim chosen on the
validation folds, hybrids), llm2_beauty.py (SASRec/GRU4Rec/BERT4Rec, their LLM2 versions and the
permuted control) and llmseqprompt_beauty.py (LLMSeqPrompt base and fine-tuned, local SmolLM2)
into benchmarks/results/beauty, seed by seed, skipping every finished (model, seed); then writes
results.csv, leaderboard.md and the plots there.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm2_beauty  # noqa: E402
import llmseqprompt_beauty  # noqa: E402
import neighbours_beauty  # noqa: E402
from common import DATA_PATH, build_beauty  # noqa: E402

from recbole_llm.experiment import run_plan  # noqa: E402
from recbole_llm.report import build_report  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "beauty"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args()
    if not args.tables_only:
        build_beauty()
        groups = [(neighbours_beauty.plan(), {}), (list(llm2_beauty.SPECS.values()), llm2_beauty.COMMON),
                  (llmseqprompt_beauty.SPECS, llmseqprompt_beauty.common())]
        for seed in args.seeds:
            for specs, common in groups:
                run_plan(OUT, "beauty", specs, [seed], common, args.threads, DATA_PATH)
    print(build_report(OUT))


if __name__ == "__main__":
    main()
