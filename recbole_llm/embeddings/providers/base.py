"""What every embedding provider offers; providers know nothing about RecBole."""
from __future__ import annotations

import numpy as np

from ...costs import estimate_tokens


class EmbeddingProvider:
    """Turns texts into vectors. Subclasses set ``name``, ``max_batch``
    (inputs per request) and implement ``_embed_batch``."""

    name = "base"
    max_batch = 64
    max_batch_tokens = None  # provider limit on tokens per request, if any
    usd_per_million_tokens = 0.0  # 0 for local models: nothing to confirm

    def __init__(self, model: str):
        self.model = model

    @property
    def cache_identity(self) -> str:
        """What, besides the model and the text, decides a vector: the cache keys by it (another endpoint or
        output size of the same model name gives other vectors)."""
        return self.name

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def batches(self, texts: list[str]):
        """Split texts by the provider's input and token limits."""
        batch, tokens = [], 0
        for text in texts:
            n = estimate_tokens(text)
            limit = self.max_batch_tokens
            if batch and (len(batch) >= self.max_batch or (limit and tokens + n > limit)):
                yield batch
                batch, tokens = [], 0
            batch.append(text)
            tokens += n
        if batch:
            yield batch

    def estimate_cost(self, texts: list[str]) -> tuple[int, float]:
        tokens = sum(estimate_tokens(t) for t in texts)
        return tokens, tokens * self.usd_per_million_tokens / 1e6
