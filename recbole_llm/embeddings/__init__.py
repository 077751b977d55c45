"""Item embeddings from LLMs: providers, cache, reduction, pooling, RecBole files."""
from .store import EmbeddingMismatchError, EmbeddingSpec, build_item_embeddings, item_embedding_table

__all__ = ["EmbeddingMismatchError", "EmbeddingSpec", "build_item_embeddings", "item_embedding_table"]
