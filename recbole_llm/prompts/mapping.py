"""Mapping generated titles back to catalog items, with hallucination statistics."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

_SPACE = re.compile(r"\s+")


def normalise(title: str) -> str:
    return _SPACE.sub(" ", title).strip().lower()


@dataclass
class MappingStats:
    generated: int = 0
    hallucinated: int = 0
    parse_failures: int = 0
    similarities: list = field(default_factory=list)
    recommended: set = field(default_factory=set)

    def report(self) -> dict:
        return {
            "unique_recommendations": len(self.recommended),
            "generated_titles": self.generated,
            "hallucination_rate": round(self.hallucinated / self.generated, 4) if self.generated else 0.0,
            "mean_mapped_similarity": round(float(np.mean(self.similarities)), 4) if self.similarities else 0.0,
            "parse_failures": self.parse_failures,
        }


class TitleMapper:
    """Exact (normalised) title match first; otherwise the catalog item whose
    embedding is nearest (cosine) to the generated title's embedding."""

    def __init__(self, titles: list[str], item_table: np.ndarray, embed):
        self.index = {}
        for item, title in enumerate(titles):
            if item and title:
                self.index.setdefault(normalise(title), item)
        table = np.asarray(item_table, dtype=np.float32)
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self.table = table / np.maximum(norms, 1e-12)
        self.table[0] = 0.0
        self.embed = embed  # list[str] -> (n, d) array, cached by the embeddings subsystem
        self.stats = MappingStats()

    def map(self, titles: list[str], allowed: list[int] | None = None) -> list[int]:
        """Catalog ids for ``titles`` (restricted to ``allowed`` candidates when given)."""
        items, unknown = [None] * len(titles), []
        for j, title in enumerate(titles):
            self.stats.generated += 1
            item = self.index.get(normalise(title))
            if item is not None and (allowed is None or item in allowed):
                items[j] = item
            else:
                unknown.append(j)
        if unknown:
            self.stats.hallucinated += len(unknown)
            vectors = np.asarray(self.embed([titles[j] for j in unknown]), dtype=np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            table = self.table if allowed is None else self.table[allowed]
            sims = vectors @ table.T
            best = sims.argmax(1)
            for j, b, s in zip(unknown, best, sims[np.arange(len(best)), best]):
                items[j] = int(b) if allowed is None else int(allowed[b])
                self.stats.similarities.append(float(s))
        self.stats.recommended.update(items)
        return items
