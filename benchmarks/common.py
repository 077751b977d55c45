"""Shared helpers of the benchmark scripts (run by hand, never by the test suite)."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECBOLE_LLM_SHARED", ROOT.parent / "shared")) / "data"
DATA_PATH = ROOT / "dataset"


def build_beauty(force: bool = False) -> dict | None:
    """dataset/beauty from the staged Amazon Beauty pair (generic-table converter),
    with S3-Rec's attributes as the item class (sorted attribute ids joined by '_')."""
    from recbole_llm.data.convert import convert_tables

    if (DATA_PATH / "beauty" / "beauty.inter").exists() and not force:
        return None
    joined = SHARED / "amazon-beauty" / "joined"
    items = pd.read_csv(joined / "beauty_items.tsv.gz", sep="\t", keep_default_na=False, dtype=str)
    with gzip.open(SHARED / "amazon-beauty" / "raw" / "s3rec_Beauty_item2attributes.json.gz", "rt") as f:
        attributes = json.load(f)
    items["class"] = items["p5_item_int"].map(lambda i: "_".join(str(a) for a in sorted(attributes.get(i, []))))
    tmp = DATA_PATH / "beauty_items_with_class.tsv"
    DATA_PATH.mkdir(exist_ok=True)
    items.to_csv(tmp, sep="\t", index=False)
    stats = convert_tables(joined / "beauty_interactions.tsv.gz", tmp, DATA_PATH, "beauty", class_col="class")
    tmp.unlink()
    return stats


def fold_data(model: str, fold: int, settings: dict | None = None):
    """(config, train, valid) of one temporal fold of Beauty under the paper preset, built once per fold so that
    many fitted-once candidates can be scored on it."""
    from recbole_llm import pipeline

    run = pipeline.load_data(model, "beauty", None, {"data_path": str(DATA_PATH), "temporal_fold": fold,
                                                     "show_progress": False, "state": "ERROR", **(settings or {})})
    return run.config, run.train_data, run.valid_data


def validation_ndcg(config, train, valid) -> float:
    """Validation NDCG@20 of config's model, fitted once on ``train`` (kNN, LLMSeqSim, hybrids): never test."""
    from recbole_llm import pipeline

    trainer = pipeline.build_model(pipeline.Run(config, None, train, valid, None)).trainer
    trainer.eval_collector.data_collect(train)
    return float(trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@20"])
