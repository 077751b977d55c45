"""Vertex AI text embeddings through google-cloud-aiplatform's PredictionServiceClient.

This is the client ``vertexai.language_models.TextEmbeddingModel`` uses under the
hood, called directly so that project, location and endpoint come from our
config. Retries 429 / 5xx / deadline with exponential backoff.
"""
from __future__ import annotations

import os

import numpy as np

from ...errors import ProviderError
from .base import EmbeddingProvider

# USD per 1M input characters (~4 chars per token) for text-embedding-00x / gecko.
USD_PER_MILLION_CHARS = 0.025


class VertexProvider(EmbeddingProvider):
    name = "vertex"
    max_batch = 250  # instances per request
    max_batch_tokens = 20_000

    def __init__(
        self,
        model: str = "text-embedding-005",
        project: str | None = None,
        location: str | None = None,
        api_endpoint: str | None = None,
        task_type: str | None = "RETRIEVAL_DOCUMENT",
        credentials=None,
        max_retry_seconds: float = 120.0,
    ):
        super().__init__(model)
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION", "us-central1")
        if not self.project:
            raise RuntimeError(
                "The vertex provider needs a Google Cloud project: set vertex_project in the config or "
                "GOOGLE_CLOUD_PROJECT, and authenticate with `gcloud auth application-default login`."
            )
        from google.api_core import exceptions, retry
        from google.cloud.aiplatform_v1 import PredictionServiceClient

        endpoint = api_endpoint or f"{self.location}-aiplatform.googleapis.com"
        transport = "rest" if endpoint.startswith("http://") else None
        self.client = PredictionServiceClient(
            credentials=credentials, transport=transport, client_options={"api_endpoint": endpoint}
        )
        self.retry = retry.Retry(
            predicate=retry.if_exception_type(
                exceptions.TooManyRequests,
                exceptions.ResourceExhausted,
                exceptions.ServiceUnavailable,
                exceptions.InternalServerError,
                exceptions.DeadlineExceeded,
            ),
            initial=0.5,
            maximum=30.0,
            multiplier=2.0,
            timeout=max_retry_seconds,
        )
        self.task_type = task_type
        self.usd_per_million_tokens = USD_PER_MILLION_CHARS * 4
        self.endpoint = f"projects/{self.project}/locations/{self.location}/publishers/google/models/{model}"

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        instances = [{"content": t, **({"task_type": self.task_type} if self.task_type else {})} for t in texts]
        response = self.client.predict(endpoint=self.endpoint, instances=instances, retry=self.retry)
        vectors = []
        for prediction in response.predictions:
            try:
                vectors.append(list(prediction["embeddings"]["values"]))
            except (KeyError, TypeError) as error:
                raise ProviderError(f"malformed Vertex embedding prediction: {prediction!r}") from error
        if len(vectors) != len(texts):
            raise ProviderError(f"Vertex returned {len(vectors)} embeddings for {len(texts)} inputs")
        return np.asarray(vectors, dtype=np.float32)
