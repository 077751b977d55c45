"""Embedding providers, selected by name."""
from __future__ import annotations

from ...errors import SettingError
from .base import EmbeddingProvider

DEFAULT_MODELS = {"local": "all-MiniLM-L6-v2", "openai": "text-embedding-3-small", "vertex": "text-embedding-005"}


def make_provider(name: str, model: str | None = None, **options) -> EmbeddingProvider:
    """Build a provider; ``options`` are provider-specific (base_url, project, ...)."""
    model = model or DEFAULT_MODELS.get(name)
    if name == "local":
        from .local import LocalProvider

        return LocalProvider(model, **{k: v for k, v in options.items() if k in ("device", "normalize")})
    if name == "openai":
        from .openai_provider import OpenAIProvider

        keys = ("api_key", "base_url", "max_retries", "timeout", "dimensions")
        return OpenAIProvider(model, **{k: v for k, v in options.items() if k in keys})
    if name == "vertex":
        from .vertex import VertexProvider

        keys = ("project", "location", "api_endpoint", "task_type", "credentials", "max_retry_seconds")
        return VertexProvider(model, **{k: v for k, v in options.items() if k in keys})
    raise SettingError(f"Unknown embedding provider '{name}': choose local, openai or vertex.")


__all__ = ["EmbeddingProvider", "make_provider", "DEFAULT_MODELS"]
