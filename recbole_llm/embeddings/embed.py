"""Embed texts with any provider through the cache, with progress and a cost gate."""
from __future__ import annotations

import contextlib
import logging

import numpy as np
from tqdm.auto import tqdm

from ..errors import RecboleLLMError, SettingError
from .cache import EmbeddingCache, checked_vectors, text_key
from .providers import EmbeddingProvider

logger = logging.getLogger(__name__)


class CostConfirmationRequired(RecboleLLMError, RuntimeError):
    pass


def embed_texts(
    provider: EmbeddingProvider,
    texts: list[str],
    cache: EmbeddingCache | None = None,
    *,
    max_cost_usd: float = 1.0,
    confirm_cost: bool = False,
    show_progress: bool = True,
    batch_api: bool | str = "auto",
    batch_min_texts: int = 10_000,
    batch_poll_seconds: float = 30.0,
) -> np.ndarray:
    """Vectors for ``texts`` (rows in order). Only texts missing from the cache
    reach the provider; each batch is cached as soon as it returns. A paid call
    estimated above ``max_cost_usd`` needs ``confirm_cost``. With OpenAI, ``batch_api`` (``auto``: from
    ``batch_min_texts`` missing texts on) sends them as one Batch API job at half the price
    (``recbole_llm/embeddings/batch_api.py``: resumable, never paid twice)."""
    cache = EmbeddingCache() if cache is None else cache
    identity = getattr(provider, "cache_identity", provider.name)
    keys = [text_key(identity, provider.model, t) for t in texts]
    found = cache.get_many(list(dict.fromkeys(keys)))
    missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
    if missing:
        tokens, cost = provider.estimate_cost(missing)
        mode = str(batch_api).lower()  # True | False | "auto", as a setting or a literal
        use_batch = getattr(provider, "batch_discount", None) is not None and (
            mode == "true" or (mode == "auto" and len(missing) >= int(batch_min_texts)))
        if use_batch:
            cost *= provider.batch_discount
        if cost > 0:
            logger.warning(
                "%s/%s: %d texts to embed, ~%d tokens, estimated cost $%.4f",
                provider.name, provider.model, len(missing), tokens, cost,
            )
            print(f"[recbole-llm] {provider.name}/{provider.model}: {len(missing)} texts, ~{tokens} tokens, ~${cost:.4f}")
        if cost > max_cost_usd and not confirm_cost:
            raise CostConfirmationRequired(
                f"Embedding {len(missing)} texts with {provider.name}/{provider.model} is estimated at ${cost:.2f}, "
                f"above embedding_max_cost_usd={max_cost_usd}. Rerun with embedding_confirm_cost=True to pay for it."
            )
        if use_batch:
            from .batch_api import MAX_JOB_TEXTS, embed_through_batch

            for start in range(0, len(missing), MAX_JOB_TEXTS):  # OpenAI takes at most 50,000 inputs a batch
                part = missing[start:start + MAX_JOB_TEXTS]
                found.update(embed_through_batch(provider, part, [text_key(identity, provider.model, t) for t in part],
                                                 cache, poll_seconds=float(batch_poll_seconds),
                                                 show_progress=show_progress))
            missing = []
        bar = tqdm(total=len(missing), desc=f"embed {provider.name}/{provider.model}",
                   disable=not show_progress or not missing)
        for batch in provider.batches(missing):
            batch_keys = [text_key(identity, provider.model, t) for t in batch]
            # a paid batch is claimed across processes: a second process waits, then reads what the first paid for
            with cache.claim() if cost > 0 else contextlib.nullcontext():
                done = cache.get_many(batch_keys) if cost > 0 else {}
                todo = [(t, k) for t, k in zip(batch, batch_keys) if k not in done]
                if todo:
                    vectors = checked_vectors(provider, provider._embed_batch([t for t, _ in todo]), len(todo))
                    cache.put_many([k for _, k in todo], vectors)
                    done.update(zip([k for _, k in todo], np.asarray(vectors, dtype=np.float32)))
            found.update(done)
            bar.update(len(batch))
        bar.close()
    dims = {v.shape[0] for v in found.values()}
    if len(dims) > 1:
        raise SettingError(f"cached embeddings of {provider.name}/{provider.model} have mixed dimensions {sorted(dims)}")
    return np.stack([found[k] for k in keys]).astype(np.float32)
