"""SASRec on Beauty (paper preset), RecBole's prefix rows vs all-position training, side by side.

    python benchmarks/train_mode_beauty.py --mode prefixes        # one process per mode, 1 thread each,
    python benchmarks/train_mode_beauty.py --mode all_positions   # run both at once on 2 cores
    python benchmarks/train_mode_beauty.py --report

Same model settings and seed in both (RecBole's SASRec defaults, N = 20, early
stopping patience 5 on the 500-session holdout's NDCG@20). A batch holds about
the same number of supervised targets in both modes: 2,048 prefix rows, or 256
session rows (~8 targets each on Beauty). Results (with the validation curve:
score and wall time after every epoch) in benchmarks/results/train_mode_beauty/.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_PATH, build_beauty  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "train_mode_beauty"
SETTINGS = {"epochs": 200, "stopping_step": 5, "eval_step": 1}
BATCH = {"prefixes": 2048, "all_positions": 256}


def report() -> None:
    runs = {m: json.loads((OUT / f"SASRec-{m}__seed1.json").read_text())
            for m in BATCH if (OUT / f"SASRec-{m}__seed1.json").exists()}
    for mode, run in runs.items():
        best = max(c["valid_score"] for c in run["valid_curve"])
        print(f"{mode}: {run['epochs']} epochs, {run['sec_per_epoch']:.1f} s/epoch (training only), "
              f"best valid NDCG@20 {best:.4f}, wall {run['wall_seconds']:.0f} s, test NDCG@20 {run['test']['ndcg@20']:.4f}")
    if len(runs) == 2:
        # the lower of the two best validation scores: a level both runs reach
        level = min(max(c["valid_score"] for c in run["valid_curve"]) for run in runs.values())
        reach = {m: next(c for c in run["valid_curve"] if c["valid_score"] >= level) for m, run in runs.items()}
        print(f"first epoch at valid NDCG@20 >= {level:.4f} (the lower best): "
              + ", ".join(f"{m} epoch {c['epoch']} at {c['wall_seconds']:.0f} s" for m, c in reach.items()))
        print(f"wall time to that level, all_positions / prefixes: "
              f"{reach['all_positions']['wall_seconds'] / reach['prefixes']['wall_seconds']:.3f}")
        ratio = runs["all_positions"]["sec_per_epoch"] / runs["prefixes"]["sec_per_epoch"]
        print(f"seconds per epoch, all_positions / prefixes: {ratio:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=list(BATCH))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--speed", action="store_true",
                        help="2 epochs only (label <mode>-speed): seconds per epoch on the current code")
    args = parser.parse_args()
    if args.mode:
        build_beauty()
        from recbole_llm.experiment import run_plan

        label = f"SASRec-{args.mode}" + ("-speed" if args.speed else "")
        spec = f"{label}=SASRec[train_mode={args.mode},train_batch_size={BATCH[args.mode]}]"
        settings = {**SETTINGS, "epochs": 2} if args.speed else SETTINGS
        run_plan(OUT, "beauty", [spec], [1], settings, threads=1, data_path=str(DATA_PATH))
    report()
    speed = {m: json.loads((OUT / f"SASRec-{m}-speed__seed1.json").read_text()) for m in BATCH
             if (OUT / f"SASRec-{m}-speed__seed1.json").exists()}
    for mode, run in speed.items():
        print(f"{mode}, current code, 2 epochs: {run['sec_per_epoch']:.1f} s/epoch")
    if len(speed) == 2:
        print(f"seconds per epoch on the current code, all_positions / prefixes: "
              f"{speed['all_positions']['sec_per_epoch'] / speed['prefixes']['sec_per_epoch']:.3f}")


if __name__ == "__main__":
    main()
