"""OpenAI's Batch API for large catalogs, against a loopback server: one upload and one batch, polled; a run killed
while polling reattaches and pays nothing twice; a run killed before the batch id was stored finds the batch."""
import numpy as np
import pytest
from loopback import Loopback, OpenAIBatches, fake_vector

from recbole_llm.embeddings.cache import EmbeddingCache
from recbole_llm.embeddings.embed import embed_texts
from recbole_llm.embeddings.providers.openai_provider import OpenAIProvider

TEXTS = [f"item {i} lipstick" for i in range(600)]


def _provider(server):
    return OpenAIProvider("text-embedding-3-small", api_key="sk-test", base_url=server.url + "/v1", max_retries=0)


def _posts(server, path):
    return [r for r in server.requests if r["method"] == "POST" and r["path"].startswith(path)]


def test_a_large_catalog_goes_as_one_batch_job_and_is_cached(tmp_path):
    with Loopback() as server:
        OpenAIBatches(server)
        cache = EmbeddingCache(tmp_path / "cache.sqlite")
        vectors = embed_texts(_provider(server), TEXTS, cache, batch_api="auto", batch_min_texts=500,
                              batch_poll_seconds=0, show_progress=False)
        assert np.allclose(vectors[7], fake_vector(TEXTS[7]), atol=1e-6)
        assert len(_posts(server, "/v1/files")) == 1 and len(_posts(server, "/v1/batches")) == 1
        assert not _posts(server, "/v1/embeddings"), "nothing through the synchronous endpoint"
        again = embed_texts(_provider(server), TEXTS, cache, batch_api="auto", batch_min_texts=500,
                            batch_poll_seconds=0, show_progress=False)
        assert np.array_equal(again, vectors) and len(_posts(server, "/v1/batches")) == 1, "cached: no new job"


def test_killed_while_polling_a_rerun_reattaches_and_pays_nothing_twice(tmp_path, monkeypatch):
    from recbole_llm.embeddings import batch_api

    with Loopback() as server:
        fake = OpenAIBatches(server, polls_until_done=3)
        cache = EmbeddingCache(tmp_path / "cache.sqlite")
        original = batch_api.embed_through_batch

        def killed(*args, **kwargs):
            def kill(seconds):
                raise KeyboardInterrupt
            return original(*args, **{**kwargs, "sleep": kill})

        monkeypatch.setattr(batch_api, "embed_through_batch", killed)
        with pytest.raises(KeyboardInterrupt):
            embed_texts(_provider(server), TEXTS, cache, batch_api=True, batch_poll_seconds=0, show_progress=False)
        monkeypatch.setattr(batch_api, "embed_through_batch", original)
        vectors = embed_texts(_provider(server), TEXTS, cache, batch_api=True, batch_poll_seconds=0,
                              show_progress=False)
        assert len(_posts(server, "/v1/batches")) == 1 and len(_posts(server, "/v1/files")) == 1
        assert len(fake.batches) == 1 and np.allclose(vectors[0], fake_vector(TEXTS[0]), atol=1e-6)


def test_killed_before_the_batch_id_was_stored_the_batch_is_found_by_its_metadata(tmp_path, monkeypatch):
    with Loopback() as server:
        fake = OpenAIBatches(server)
        cache = EmbeddingCache(tmp_path / "cache.sqlite")
        stored = cache.put_batch_job

        def killed(job, batch_id):
            raise KeyboardInterrupt

        monkeypatch.setattr(cache, "put_batch_job", killed)
        with pytest.raises(KeyboardInterrupt):
            embed_texts(_provider(server), TEXTS, cache, batch_api=True, batch_poll_seconds=0, show_progress=False)
        monkeypatch.setattr(cache, "put_batch_job", stored)
        embed_texts(_provider(server), TEXTS, cache, batch_api=True, batch_poll_seconds=0, show_progress=False)
        assert len(fake.batches) == 1, "the batch made before the kill was found, not made again"


def test_failed_requests_keep_the_others_and_a_failed_batch_says_so(tmp_path):
    from recbole_llm.errors import ProviderError

    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    with Loopback() as server:
        OpenAIBatches(server, fail_requests=("-0",))  # the first request of the job
        with pytest.raises(ProviderError, match="came back without a vector"):
            embed_texts(_provider(server), TEXTS, cache, batch_api=True, batch_poll_seconds=0, show_progress=False)
        assert 0 < len(cache) < len(TEXTS), "the other requests' vectors are cached"
    with Loopback() as server:
        OpenAIBatches(server, final_status="expired")
        with pytest.raises(ProviderError, match="ended expired"):
            embed_texts(_provider(server), [t + " new" for t in TEXTS], cache, batch_api=True, batch_poll_seconds=0,
                        show_progress=False)


def test_more_texts_than_one_batch_takes_go_as_several_jobs(tmp_path, monkeypatch):
    from recbole_llm.embeddings import batch_api

    monkeypatch.setattr(batch_api, "MAX_JOB_TEXTS", 250)
    with Loopback() as server:
        fake = OpenAIBatches(server)
        vectors = embed_texts(_provider(server), TEXTS, EmbeddingCache(tmp_path / "cache.sqlite"), batch_api=True,
                              batch_poll_seconds=0, show_progress=False)
        assert len(fake.batches) == 3 and np.allclose(vectors[599], fake_vector(TEXTS[599]), atol=1e-6)
