"""OpenAI's Batch API for embedding large catalogs: one JSONL upload, one batch job, polled until done, at half the
synchronous price and without a connection held per request.

Resumable and idempotent: the job is named by the texts it embeds (``job_key``: provider, model and every text's
cache key), its batch id is stored in the embedding cache as soon as OpenAI returns it, and the batch carries that
name in its metadata. A run killed while polling (or even between creating the batch and storing its id) finds the
same batch again on the next run (in the cache, else among the account's batches by its metadata) and pays
nothing twice. Finished vectors go through the same checks and cache as the synchronous path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import ProviderError
from .cache import checked_vectors

logger = logging.getLogger(__name__)
DONE, FAILED = "completed", ("failed", "expired", "cancelled")
MAX_JOB_TEXTS = 50_000  # OpenAI's limit of embedding inputs in one batch (over all its requests)


def job_key(identity: str, model: str, keys: list[str]) -> str:
    return hashlib.sha256("\n".join([identity, model, *sorted(keys)]).encode()).hexdigest()


def request_lines(provider, texts: list[str], job: str) -> list[dict]:
    """One request a chunk of ``texts`` (the provider's own batching), named ``<job prefix>-<chunk>``."""
    body = {"model": provider.model, "encoding_format": "float"}
    if getattr(provider, "dimensions", None):
        body["dimensions"] = provider.dimensions
    return [{"custom_id": f"{job[:16]}-{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {**body, "input": chunk}} for i, chunk in enumerate(provider.batches(texts))]


def find_batch(client, job: str) -> str | None:
    """A batch this job created before its id could be stored (a run killed in between): by its metadata."""
    for batch in client.batches.list(limit=100):
        if (getattr(batch, "metadata", None) or {}).get("recbole_llm_job") == job[:32] and batch.status not in FAILED:
            return batch.id
    return None


def embed_through_batch(provider, texts: list[str], keys: list[str], cache, *, poll_seconds: float = 30.0,
                        show_progress: bool = True, sleep=time.sleep) -> dict:
    """Vectors (cache key -> vector) of ``texts`` embedded through a batch job, stored in ``cache``; texts a batch
    request failed for are left out and named in the error raised after the others are stored."""
    client = provider.client
    identity = getattr(provider, "cache_identity", provider.name)
    order = sorted(range(len(texts)), key=lambda i: keys[i])  # a job's chunks do not depend on the caller's order
    texts, keys = [texts[i] for i in order], [keys[i] for i in order]
    job = job_key(identity, provider.model, keys)
    lines = request_lines(provider, texts, job)
    with cache.claim():  # a second process waits, then finds the job the first one created
        batch_id = cache.batch_job(job) or find_batch(client, job)
        if batch_id is None:
            payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
            uploaded = client.files.create(file=("embeddings.jsonl", payload), purpose="batch")
            batch_id = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                             completion_window="24h", metadata={"recbole_llm_job": job[:32]}).id
            logger.info("%s/%s: batch %s created for %d texts in %d requests", provider.name, provider.model,
                        batch_id, len(texts), len(lines))
        else:
            logger.info("%s/%s: reattached to batch %s (%d texts)", provider.name, provider.model, batch_id, len(texts))
        cache.put_batch_job(job, batch_id)
    bar = tqdm(total=len(lines), desc=f"batch {batch_id}", disable=not show_progress)
    while True:
        batch = client.batches.retrieve(batch_id)
        counts = getattr(batch, "request_counts", None)
        if counts is not None:
            bar.n = int(counts.completed or 0) + int(counts.failed or 0)
            bar.refresh()
        if batch.status == DONE or batch.status in FAILED:
            break
        sleep(poll_seconds)
    bar.close()
    if batch.status in FAILED:
        cache.drop_batch_job(job)  # a new run makes a new job
        raise ProviderError(f"OpenAI batch {batch_id} ended {batch.status}: {getattr(batch, 'errors', None)}; "
                            "nothing was cached from it, a rerun creates a new batch")
    chunks = {line["custom_id"]: line["body"]["input"] for line in lines}
    by_text = dict(zip(texts, keys))
    stored, failed = {}, 0
    answers = client.files.content(batch.output_file_id).text if batch.output_file_id else ""
    for row in filter(None, (json.loads(line) for line in answers.splitlines() if line.strip())):
        chunk = chunks.get(row.get("custom_id"))
        response = row.get("response") or {}
        if chunk is None or row.get("error") or response.get("status_code") != 200:
            failed += len(chunk or [])
            continue
        data = sorted(response["body"]["data"], key=lambda item: item["index"])
        vectors = checked_vectors(provider, [item["embedding"] for item in data], len(chunk))
        chunk_keys = [by_text[text] for text in chunk]
        cache.put_many(chunk_keys, vectors)
        stored.update(zip(chunk_keys, np.asarray(vectors, dtype=np.float32)))
    missing = len(texts) - len(stored)
    cache.drop_batch_job(job)
    if missing:
        raise ProviderError(f"OpenAI batch {batch_id}: {missing} of {len(texts)} texts came back without a vector "
                            f"({failed} in failed requests); the other {len(stored)} are cached, a rerun embeds only "
                            "the missing ones")
    return stored
