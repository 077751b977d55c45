"""Cache, reduction and the item-embedding files every model reads."""
import json
import sqlite3

import numpy as np
import pytest
import torch
from conftest import build, make_config

from recbole_llm.embeddings import EmbeddingMismatchError, EmbeddingSpec, build_item_embeddings
from recbole_llm.embeddings.cache import EmbeddingCache
from recbole_llm.embeddings.embed import embed_texts
from recbole_llm.embeddings.providers.base import EmbeddingProvider
from recbole_llm.embeddings.reduction import make_reducer
from recbole_llm.embeddings.store import item_embedding_table, read_itememb


class CountingProvider(EmbeddingProvider):
    """Deterministic vectors; counts texts sent; can crash after some batches."""

    name = "counting"
    max_batch = 2

    def __init__(self, crash_after=None):
        super().__init__("m")
        self.sent, self.crash_after, self.calls = [], crash_after, 0

    def _embed_batch(self, texts):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.sent += texts
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


TEXTS = ["alpha", "beta", "gamma", "delta", "epsilon", "alpha"]


def test_cache_resume_after_crash_makes_no_repeated_call(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    crashing = CountingProvider(crash_after=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_texts(crashing, TEXTS, cache, show_progress=False)
    assert crashing.sent == ["alpha", "beta"]
    resumed = CountingProvider()
    vectors = embed_texts(resumed, TEXTS, EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False)
    assert resumed.sent == ["gamma", "delta", "epsilon"], "only what the crash lost is sent, duplicates once"
    again = CountingProvider()
    assert np.array_equal(embed_texts(again, TEXTS, EmbeddingCache(tmp_path / "c.sqlite"), show_progress=False),
                          vectors)
    assert again.sent == []
    assert np.array_equal(vectors[0], vectors[5])


def test_corrupt_cache_entry_is_recomputed_not_trusted(tmp_path):
    path = tmp_path / "c.sqlite"
    embed_texts(CountingProvider(), TEXTS[:2], EmbeddingCache(path), show_progress=False)
    db = sqlite3.connect(path)
    db.execute("UPDATE emb SET vec = substr(vec, 1, 4)")  # truncated blob
    db.commit()
    db.close()
    provider = CountingProvider()
    vectors = embed_texts(provider, TEXTS[:2], EmbeddingCache(path), show_progress=False)
    assert provider.sent == ["alpha", "beta"]
    assert vectors.shape == (2, 3)


def test_unreadable_cache_file_is_set_aside(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = EmbeddingCache(path)
    assert len(cache) == 0
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))


@pytest.mark.parametrize("method", ["pca", "lda", "autoencoder", "random"])
def test_reducers_shape_and_determinism(method):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20)).astype(np.float32)
    y = np.repeat(np.arange(6), 10)
    options = {"epochs": 5} if method == "autoencoder" else {}
    a = make_reducer(method, 4, random_state=3, **options).fit_transform(X, y)
    b = make_reducer(method, 4, random_state=3, **options).fit_transform(X, y)
    assert a.shape == (60, 4)
    assert np.allclose(a, b)


def test_lda_is_capped_at_classes_minus_one(caplog):
    X = np.random.default_rng(0).normal(size=(30, 10))
    reducer = make_reducer("lda", 8)
    out = reducer.fit_transform(X, np.repeat([0, 1, 2], 10))
    assert out.shape == (30, 2) and reducer.n_components_ == 2
    assert "capped 8 -> 2" in caplog.text
    with pytest.raises(ValueError, match="classes"):
        make_reducer("lda", 2).fit(X)
    with pytest.raises(ValueError, match="Unknown reduction"):
        make_reducer("tsne", 2)


def test_item_file_written_reused_and_aligned(tiny):
    spec = EmbeddingSpec(reduction="pca", dim=8, options={"cache_path": tiny["config"]["embedding_cache_path"]})
    path = build_item_embeddings("tiny", spec, tiny["path"])
    assert path.name == "tiny.itememb_local_all-minilm-l6-v2_pca_8"
    recipe = json.loads(path.with_name(path.name + ".json").read_text())
    assert recipe["reduction"] == "pca" and recipe["dim"] == 8 and recipe["items"] == 20
    ids, vectors = read_itememb(path)
    assert vectors.shape == (20, 8)
    stamp = path.stat().st_mtime_ns
    assert build_item_embeddings("tiny", spec, tiny["path"]) == path and path.stat().st_mtime_ns == stamp
    # RecBole's own preload_weight mechanism reads the same file
    config, dataset, _, _ = build(
        "SASRec", tiny, additional_feat_suffix=[spec.suffix], alias_of_item_id=["iid"],
        load_col={"inter": ["user_id", "item_id", "timestamp"], spec.suffix: ["iid", "item_emb"]},
        preload_weight={"iid": "item_emb"},
    )
    ours = item_embedding_table(make_config("SASRec", tiny, embedding_reduction="pca", embedding_dim=8), dataset)
    assert torch.allclose(ours[1:], torch.as_tensor(dataset.get_preload_weight("iid")[1:]).float(), atol=1e-5)
    assert torch.all(ours[0] == 0)


def test_an_lda_file_is_rebuilt_when_the_item_classes_change(tiny):
    """LDA is supervised by the class column: a file made from other classes is not reused."""
    spec = EmbeddingSpec(reduction="lda", dim=1, options={"cache_path": tiny["config"]["embedding_cache_path"]})
    path = build_item_embeddings("tiny", spec, tiny["path"])
    first = json.loads(path.with_name(path.name + ".json").read_text())["classes"]
    stamp = path.stat().st_mtime_ns
    assert build_item_embeddings("tiny", spec, tiny["path"]) == path and path.stat().st_mtime_ns == stamp
    item_file = tiny["path"] / "tiny" / "tiny.item"
    lines = item_file.read_text().splitlines()
    lines[1:] = [line.rsplit("\t", 1)[0] + "\t" + ("even" if i % 2 else "odd") for i, line in enumerate(lines[1:])]
    item_file.write_text("\n".join(lines) + "\n")
    build_item_embeddings("tiny", spec, tiny["path"])
    second = json.loads(path.with_name(path.name + ".json").read_text())["classes"]
    assert second["count"] == 2 and second["sha256"] != first["sha256"] and path.stat().st_mtime_ns != stamp


def test_a_model_table_larger_than_lda_can_give_is_refused_before_any_embedding_call(tiny, monkeypatch):
    from recbole_llm.embeddings import store

    def no_call(spec):
        raise AssertionError("the provider was called")

    monkeypatch.setattr(store, "text_embedder", no_call)
    config = make_config("LLM2SASRec", tiny, embedding_reduction="lda")  # 5 classes: at most 4 dimensions
    with pytest.raises(EmbeddingMismatchError, match="at most classes - 1 = 4 dimensions .* to at most 4"):
        store.prepare_item_embeddings(config, 16)
    monkeypatch.undo()
    path = store.prepare_item_embeddings(config, 4)
    assert read_itememb(path)[1].shape == (20, 4)


def test_empty_titles_are_embedded_as_fallback_with_a_warning(tiny, caplog):
    item_file = tiny["path"] / "tiny" / "tiny.item"
    lines = item_file.read_text().splitlines()
    first = lines[1].split("\t")
    lines[1] = "\t".join([first[0], "", first[2]])
    item_file.write_text("\n".join(lines) + "\n")
    spec = EmbeddingSpec(options={"cache_path": tiny["config"]["embedding_cache_path"]})
    path = build_item_embeddings("tiny", spec, tiny["path"])
    assert "1 items have empty text" in caplog.text
    assert json.loads(path.with_name(path.name + ".json").read_text())["empty_texts"] == 1


def test_mismatched_file_and_dimension_fail_clearly(tiny, tmp_path):
    config, dataset, _, _ = build("SASRec", tiny)
    bad = tmp_path / "bad.itememb"
    bad.write_text("iid:token\titem_emb:float_seq\nilipstick0\t1 2 3\n")
    with pytest.raises(EmbeddingMismatchError, match="does not match the catalog: 19 of 20 items"):
        item_embedding_table(make_config("SASRec", tiny, embedding_file=str(bad)), dataset)
    good = tmp_path / "good.itememb"
    good.write_text("iid:token\titem_emb:float_seq\n" + "".join(
        f"{t}\t1 2 3\n" for t in dataset.field2id_token["item_id"][1:]))
    with pytest.raises(EmbeddingMismatchError, match="3-d embeddings but the model needs 16"):
        item_embedding_table(make_config("SASRec", tiny, embedding_file=str(good)), dataset, dim=16)
    with pytest.raises(EmbeddingMismatchError, match="embedding_dim=32 but the model's item embedding size is 16"):
        item_embedding_table(make_config("SASRec", tiny, embedding_dim=32), dataset, dim=16)


@pytest.mark.parametrize("reducer", ["pca", "lda", "autoencoder", "random"])
def test_reducers_are_scikit_learn_transformers(reducer):
    import warnings

    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_estimator

    options = {"epochs": 2} if reducer == "autoencoder" else {}
    estimator = make_reducer(reducer, 1 if reducer == "lda" else 2, random_state=0, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        failed = [(r["check_name"], str(r["exception"])[:200]) for r in check_estimator(estimator, on_fail=None)
                  if r["status"] == "failed"]
    assert failed == []
    assert clone(estimator).get_params() == estimator.get_params()


def test_the_autoencoder_leaves_the_global_random_state_alone():
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_reducer("autoencoder", 2, random_state=5, epochs=3).fit(X)
    assert torch.equal(torch.rand(3), expected)
