"""OpenAI embeddings through the official SDK (v1+).

The SDK retries 429, 5xx, connection errors and timeouts with exponential
backoff (honouring Retry-After); ``max_retries`` sets how often. ``base_url``
makes Azure/OpenAI-compatible servers (and our loopback tests) work.
"""
from __future__ import annotations

import os

import numpy as np

from ...errors import MissingAPIKeyError, ProviderError
from .base import EmbeddingProvider

# USD per 1M input tokens (OpenAI price list, 2025).
PRICES = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13, "text-embedding-ada-002": 0.10}


OFFICIAL_ENDPOINT = "https://api.openai.com/v1/"


class OpenAIProvider(EmbeddingProvider):
    name = "openai"
    # inputs per request (the API takes 2048): a process killed mid-request loses at most this many paid texts,
    # since every returned batch is cached at once
    max_batch = 256
    max_batch_tokens = 300_000  # tokens per request
    batch_discount = 0.5  # the Batch API's price against the synchronous one (recbole_llm/embeddings/batch_api.py)

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout: float = 30.0,
        dimensions: int | None = None,
    ):
        super().__init__(model)
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise MissingAPIKeyError(
                "The openai provider needs an API key: set the environment variable OPENAI_API_KEY (keys are never "
                "read from config files or the command line, which end up in logs and checkpoints)."
            )
        from openai import OpenAI

        self.client = OpenAI(
            api_key=api_key,
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            max_retries=max_retries,
            timeout=timeout,
        )
        self.dimensions = dimensions
        self.usd_per_million_tokens = PRICES.get(model, 0.13)
        self.max_retries, self.timeout = max_retries, timeout

    @property
    def cache_identity(self) -> str:
        endpoint = str(self.client.base_url)
        identity = self.name if endpoint.rstrip("/") == OFFICIAL_ENDPOINT.rstrip("/") else f"{self.name}@{endpoint}"
        return identity + (f"|dimensions={self.dimensions}" if self.dimensions else "")

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        import openai

        kwargs = {"dimensions": self.dimensions} if self.dimensions else {}
        endpoint = f"{self.client.base_url}embeddings"
        try:
            response = self.client.embeddings.create(model=self.model, input=texts, encoding_format="float", **kwargs)
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            raise ProviderError(
                f"OpenAI embeddings at {endpoint}: {type(error).__name__} after {self.max_retries + 1} attempts of "
                f"at most {self.timeout:g} s; check the server, or raise embedding_timeout / embedding_max_retries (embed: --timeout / --max_retries)"
            ) from None
        except (openai.APIResponseValidationError, ValueError) as error:
            raise ProviderError(f"OpenAI embeddings at {endpoint} answered something unreadable: {error}") from None
        except openai.APIStatusError as error:
            raise ProviderError(f"OpenAI embeddings at {endpoint} refused the request ({error.status_code}): "
                                f"{error.message}") from None
        try:
            data = sorted(response.data, key=lambda d: d.index)
            vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        except (AttributeError, TypeError, ValueError) as error:
            raise ProviderError(f"malformed OpenAI embeddings response: {error}") from error
        if len(data) != len(texts) or vectors.ndim != 2:
            raise ProviderError(f"OpenAI returned {len(data)} embeddings for {len(texts)} inputs")
        return vectors
