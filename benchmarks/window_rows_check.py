"""The all_positions data path builds only the rows it keeps (``recbole_llm/data/windows.py:prefix_rows``): on the
real data, every split it gives must equal the splits built the way before, by RecBole's own augmentation (every
prefix row, its per-row loop) and then selected. Compares train / valid / test interactions field by field (dtype and values) and the training
popularity counter, per model, under the ``paper`` preset.

    python -m benchmarks.window_rows_check --dataset beauty --models PaperSASRec LLM2BERT4Rec \\
        --out benchmarks/results/profile/window_rows_check.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def splits(model: str, dataset: str, data_path: str):
    from recbole_llm import pipeline

    started = time.perf_counter()
    run = pipeline.load_data(model, dataset, None, {"data_path": data_path, "save_dataset": False, "state": "ERROR",
                                                    "show_progress": False})
    return [d._dataset for d in (run.train_data, run.valid_data, run.test_data)], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--models", nargs="+", default=["PaperSASRec", "LLM2BERT4Rec"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line

    import torch

    import recbole_llm  # noqa: F401
    from recbole_llm.data import protocol
    from recbole.data.dataset import SequentialDataset

    from recbole_llm.experiment import provenance
    from recbole_llm.paper_dataset import PaperSequentialDataset as sequential

    torch.set_num_threads(1)
    report = {"command": "python -m benchmarks.window_rows_check " + shlex.join(
        ["--dataset", args.dataset, "--data_path", args.data_path, "--models", *args.models]
        + (["--out", str(args.out)] if args.out else [])), "models": {}, "provenance": provenance(1)}
    for model in args.models:
        kept, kept_s = splits(model, args.dataset, args.data_path)
        # the path before: RecBole's own augmentation (its per-row loop, every prefix row), then to_all_positions
        # selects the window rows
        original, ours = protocol.window_rows_width, sequential.data_augmentation
        protocol.window_rows_width = lambda dataset: None
        sequential.data_augmentation = lambda self, keep=None: SequentialDataset.data_augmentation(self)
        try:
            every, every_s = splits(model, args.dataset, args.data_path)
        finally:
            protocol.window_rows_width, sequential.data_augmentation = original, ours
        same = all(sorted(a.inter_feat.columns) == sorted(b.inter_feat.columns)
                   and all(a.inter_feat[f].dtype == b.inter_feat[f].dtype and torch.equal(a.inter_feat[f], b.inter_feat[f])
                           for f in a.inter_feat.columns) for a, b in zip(kept, every))
        same = same and kept[0].train_item_counter == every[0].train_item_counter
        report["models"][model] = {"identical_splits": bool(same), "window_rows_only": bool(
            getattr(kept[0], "window_rows_only", False)), "train_rows": len(kept[0].inter_feat),
            "prefix_rows": int(getattr(kept[0], "prefix_rows_count", 0)), "load_s_kept_rows": round(kept_s, 1),
            "load_s_recboles_prefix_rows": round(every_s, 1)}
        print(model, report["models"][model], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
