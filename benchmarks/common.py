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
