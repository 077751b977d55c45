"""Item embeddings made elsewhere, read as a provider's output (``embedding_provider: file``).

A user who has the paper's released files (``product_embeddings_openai.csv.gz``,
``product_embeddings_palm.csv.gz`` of github dh-r/LLM-Sequential-Recommendation:
columns ``ItemId``, ``embedding`` as a JSON list, ``class``) reproduces the paper's
ada-002 / PaLM embeddings without paying again. ``embedding_model`` is the file;
``embedding_id_map`` (optional) a JSON object mapping our item ids to the file's
(Beauty: ``dhr_item_id_to_int.json``, ASIN -> ItemId). Also read: our own
``.itememb`` atomic files. The vectors then go through the usual reduction and
normalisation, so every recipe works on them.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SettingError


class ExternalEmbeddingError(SettingError):
    """An external embedding file that cannot serve this catalog."""


def _read_table(path: Path) -> tuple[list[str], np.ndarray]:
    frame = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)
    columns = {c.split(":")[0]: c for c in frame.columns}
    if "ItemId" in columns and "embedding" in columns:  # the paper's files
        ids = frame[columns["ItemId"]].tolist()
        rows = [json.loads(v) for v in frame[columns["embedding"]]]
    elif "iid" in columns and "item_emb" in columns:  # our .itememb files
        ids = frame[columns["iid"]].tolist()
        rows = [[float(x) for x in v.split()] for v in frame[columns["item_emb"]]]
    else:
        raise ExternalEmbeddingError(
            f"{path}: expected columns ItemId + embedding (JSON list), or iid + item_emb; found {list(frame.columns)}"
        )
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ExternalEmbeddingError(f"{path}: rows have different lengths {sorted(lengths)[:5]}")
    vectors = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ExternalEmbeddingError(f"{path}: {int((~np.isfinite(vectors)).any(1).sum())} rows hold NaN or inf")
    if len(set(ids)) != len(ids):
        raise ExternalEmbeddingError(f"{path}: item ids are not unique")
    return [str(i) for i in ids], vectors


def read_external_embeddings(path: os.PathLike, item_ids, id_map: os.PathLike | None = None) -> np.ndarray:
    """Vectors for ``item_ids`` (our ids, catalog order) from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ExternalEmbeddingError(f"embedding file {path} does not exist (embedding_model with provider 'file')")
    ids, vectors = _read_table(path)
    mapping = {}
    if id_map:
        opener = gzip.open if str(id_map).endswith(".gz") else open
        with opener(id_map, "rt", encoding="utf-8") as f:
            mapping = {str(k): str(v) for k, v in json.load(f).items()}
    row = {item: r for r, item in enumerate(ids)}
    wanted = [mapping.get(str(i), str(i)) for i in item_ids]
    missing = [str(i) for i, w in zip(item_ids, wanted) if w not in row]
    if missing:
        raise ExternalEmbeddingError(
            f"{path} has no embedding for {len(missing)} of {len(wanted)} catalog items (e.g. {missing[:3]}); "
            "give embedding_id_map when the file numbers items differently"
        )
    return vectors[[row[w] for w in wanted]]
