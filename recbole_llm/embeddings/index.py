"""Nearest items to a query vector, exactly or approximately, behind one interface (``ItemIndex.search``).

LLMSeqSim scores every catalog item against the pooled session vector: one [sessions x items] product, which is
what a catalog of Beauty's size wants (12,101 items: ~0.2 ms a session). A catalog of a million items makes that a
gigabyte of scores per batch of 256 sessions and tens of milliseconds a session, so above ``ann_min_items`` the
search goes to a faiss index (HNSW by default, or IVF), built once by the prepare stage and saved beside the
embedding file, and returns the top candidates only.

- ``exact``: torch's matrix product and top-k, the reference.
- ``hnsw``: faiss ``IndexHNSWFlat`` (``ann_hnsw_m`` links per node, ``ann_ef_search`` candidates per query).
- ``ivf``: faiss ``IndexIVFFlat`` (``4 * sqrt(items)`` lists, ``ann_nprobe`` probed per query).

Similarities: ``cosine`` (unit rows, inner product), ``dot`` (inner product), ``euclidean`` (negative L2 distance).
Recall@k against exact search on a sample of queries is measured when the index is built and logged
(``recall_at_k``), so a user sees what the approximation costs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingFileError, SettingError
from ..settings import ModelSettings

logger = logging.getLogger(__name__)
KINDS = ("exact", "hnsw", "ivf")
SIMILARITIES = ("cosine", "dot", "euclidean")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingFileError("an approximate index needs faiss: pip install 'recbole-llm[scale]' (faiss-cpu), or "
                               "set the index to exact") from None
    return faiss


def prepared_vectors(vectors: torch.Tensor | np.ndarray, similarity: str) -> np.ndarray:
    """float32 rows as the index compares them (unit rows for cosine)."""
    if similarity not in SIMILARITIES:
        raise SettingError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {similarity!r}")
    array = np.ascontiguousarray(torch.as_tensor(vectors).detach().cpu().float().numpy())
    if similarity == "cosine":
        array = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
    return array


class ItemIndex:
    """The items (rows of ``vectors``; row 0, RecBole's padding, is never returned) searchable by a query vector."""

    def __init__(self, vectors, similarity: str = "cosine", kind: str = "exact", faiss_index=None,
                 ef_search: int = 128, nprobe: int = 32):
        if kind not in KINDS:
            raise SettingError(f"the index must be one of {', '.join(KINDS)}; got {kind!r}")
        self.similarity, self.kind = similarity, kind
        self.vectors = torch.from_numpy(prepared_vectors(vectors, similarity))
        self.faiss_index = faiss_index
        if faiss_index is not None:
            self.set_search_effort(ef_search, nprobe)

    @classmethod
    def build(cls, vectors, similarity: str = "cosine", kind: str = "hnsw", hnsw_m: int = 32, ef_construction: int = 80,
              ef_search: int = 128, nprobe: int = 32, seed: int = 0) -> "ItemIndex":
        """Build ``kind`` over the items (minutes for a million items on two cores: the prepare stage's work)."""
        if kind == "exact":
            return cls(vectors, similarity, "exact")
        faiss = _faiss()
        array = prepared_vectors(vectors, similarity)
        items, dim = array[1:], array.shape[1]
        metric = faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, metric)
            index.hnsw.efConstruction = ef_construction
        else:
            lists = max(1, min(int(4 * np.sqrt(len(items))), len(items) // 39))  # faiss wants >= 39 points a list
            index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, lists, metric)
            sample = np.random.default_rng(seed).choice(len(items), min(len(items), 64 * lists), replace=False)
            index.train(items[np.sort(sample)])
        index.add(items)  # faiss ids 0.. are item ids 1..
        return cls(vectors, similarity, kind, index, ef_search, nprobe)

    def set_search_effort(self, ef_search: int = 128, nprobe: int = 32) -> None:
        if self.kind == "hnsw":
            self.faiss_index.hnsw.efSearch = int(ef_search)
        elif self.kind == "ivf":
            self.faiss_index.nprobe = int(nprobe)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, item ids), each [queries, k], best first; higher scores are closer."""
        k = min(int(k), len(self.vectors) - 1)
        query = prepared_vectors(queries, self.similarity)
        if self.kind == "exact":
            scores = self.exact_scores(torch.from_numpy(query))
            return scores.topk(k, dim=1)
        distances, ids = self.faiss_index.search(query, k)
        # faiss' L2 metric gives squared distances; exact search scores -distance: the same scale either way
        scores = torch.from_numpy(-np.sqrt(np.maximum(distances, 0)) if self.similarity == "euclidean" else distances)
        ids = torch.from_numpy(ids).long() + 1
        missing = ids <= 0  # faiss returns -1 when fewer than k were reached
        return scores.masked_fill(missing, -torch.inf), ids.masked_fill(missing, 0)

    def exact_scores(self, query: torch.Tensor) -> torch.Tensor:
        """[queries, items]: every item's score, padding -inf."""
        if self.similarity == "euclidean":
            scores = -torch.cdist(query, self.vectors)
        else:
            scores = query @ self.vectors.T
        scores[:, 0] = -torch.inf
        return scores

    def save(self, path: os.PathLike) -> None:
        if self.faiss_index is not None:
            tmp = Path(f"{path}.{os.getpid()}.tmp")
            _faiss().write_index(self.faiss_index, str(tmp))
            tmp.replace(path)

    @classmethod
    def load(cls, path: os.PathLike, vectors, similarity: str, kind: str, ef_search: int = 128,
             nprobe: int = 32) -> "ItemIndex":
        if kind == "exact":
            return cls(vectors, similarity, "exact")
        if not Path(path).is_file():
            raise MissingFileError(f"{path}: the {kind} index is not built yet; the prepare stage builds it before the "
                                   "model (recbole_llm.prepare.prepare)")
        return cls(vectors, similarity, kind, _faiss().read_index(str(path)), ef_search, nprobe)


def chosen_kind(key: str, kind: str, min_rows: int, rows: int) -> str:
    """The index the setting ``key`` (= ``kind``) asks for over ``rows`` vectors: ``auto`` is HNSW above
    ``min_rows`` rows, exact below; or one of ``KINDS``."""
    if kind == "auto":
        return "hnsw" if rows > min_rows else "exact"
    if kind not in KINDS:
        raise SettingError(f"{key} must be auto or one of {', '.join(KINDS)}; got {kind!r}")
    return kind


@dataclass(frozen=True)
class AnnSettings(ModelSettings):
    """The faiss settings every approximate index here is built and searched with (defaults in the yaml of each
    model that searches one)."""

    ann_hnsw_m: int
    ann_ef_construction: int
    ann_ef_search: int
    ann_nprobe: int

    def index_params(self) -> dict:
        return {"hnsw_m": self.ann_hnsw_m, "ef_construction": self.ann_ef_construction,
                "ef_search": self.ann_ef_search, "nprobe": self.ann_nprobe}


def recall_at_k(index: ItemIndex, queries: torch.Tensor, k: int = 20) -> float:
    """Share of the exact top-k items that ``index`` returns in its top-k, over ``queries``."""
    exact = ItemIndex(index.vectors, "dot" if index.similarity == "cosine" else index.similarity, "exact")
    query = torch.from_numpy(prepared_vectors(queries, index.similarity))
    truth = exact.search(query, k)[1]
    found = index.search(queries, k)[1]
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / truth.numel()


def index_file(embedding_file: Path, similarity: str, kind: str, params: dict) -> Path:
    """Beside the embedding file, named by what it was built from and how."""
    stat = embedding_file.stat()
    key = json.dumps({"file": embedding_file.name, "bytes": stat.st_size, "mtime": stat.st_mtime_ns,
                      "similarity": similarity, "kind": kind, **params}, sort_keys=True)
    return embedding_file.with_name(f"{embedding_file.name}.{kind}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.faiss")


def build_and_save(vectors, path: Path, similarity: str, kind: str, params: dict, seed: int = 0) -> ItemIndex:
    """Build the index (with progress in the log), measure its recall@20 on 1,000 item vectors as queries, save."""
    started = time.perf_counter()
    logger.info("building the %s index of %d items (%s)", kind, len(vectors) - 1, params)
    index = ItemIndex.build(vectors, similarity, kind, seed=seed, **params)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randint(1, len(vectors), (min(1000, len(vectors) - 1),), generator=generator)
    queries = torch.as_tensor(vectors)[sample].float() + 0.1 * torch.randn(len(sample), vectors.shape[1],
                                                                          generator=generator)
    recall = recall_at_k(index, queries, 20)
    logger.info("%s index built in %.0f s; recall@20 against exact search on %d queries: %.3f", kind,
                time.perf_counter() - started, len(sample), recall)
    index.save(path)
    return index
