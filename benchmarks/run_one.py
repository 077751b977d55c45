"""Train and evaluate one (model, seed) under the temporal protocol; write a JSON result.

Thin wrapper over ``recbole_llm.report.run_single`` with the Beauty data path of the
benchmarks; used by the benchmark scripts in a subprocess per run.

    python benchmarks/run_one.py --model LLM2SASRec --dataset beauty --seed 1 --out r.json [key=value ...]
"""
import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value (yaml values)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    from common import DATA_PATH

    import recbole_llm  # noqa: F401
    from recbole_llm.report import run_single

    overrides = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    result = run_single(args.model, args.dataset, args.seed, Path(args.out), overrides, args.threads, str(DATA_PATH))
    print(json.dumps({k: result[k] for k in ("model", "seed", "epochs", "sec_per_epoch")}), result["test"])


if __name__ == "__main__":
    main()
