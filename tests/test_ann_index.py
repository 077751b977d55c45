"""Approximate nearest items (faiss HNSW / IVF) behind LLMSeqSim's API: recall against exact search, built by the
prepare stage, read by the constructor, the prompt's items still refused."""
import pytest
import torch
from conftest import build

from recbole_llm.embeddings.index import ItemIndex, recall_at_k


def clustered(items=5000, dim=32, clusters=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)
    vectors = centres[torch.randint(0, clusters, (items,), generator=generator)] + 0.3 * torch.randn(
        items, dim, generator=generator)
    vectors[0] = 0.0  # padding
    return vectors


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_exact_search_is_the_brute_force_top_k(similarity):
    vectors = clustered(500)
    queries = torch.randn(7, 32)
    scores, ids = ItemIndex(vectors, similarity, "exact").search(queries, 10)
    if similarity == "cosine":
        brute = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(vectors, dim=1).T
    elif similarity == "dot":
        brute = queries @ vectors.T
    else:
        brute = -torch.cdist(queries, vectors)
    brute[:, 0] = -torch.inf
    assert torch.equal(ids, brute.topk(10, dim=1).indices) and 0 not in ids


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_what_exact_search_finds(kind, tmp_path):
    vectors = clustered()
    index = ItemIndex.build(vectors, "cosine", kind, ef_search=64, nprobe=16)
    queries = vectors[1:201] + 0.05 * torch.randn(200, 32)
    assert recall_at_k(index, queries, 20) >= 0.9
    index.save(tmp_path / "items.faiss")
    again = ItemIndex.load(tmp_path / "items.faiss", vectors, "cosine", kind)
    assert torch.equal(again.search(queries, 20)[1], index.search(queries, 20)[1])
    assert not (index.search(queries, 20)[1] == 0).any(), "padding is never an answer"


def test_llmseqsim_with_an_index_built_by_the_prepare_stage_ranks_like_exact_search(tiny):
    from recbole_llm.embeddings.store import EmbeddingSpec, embedding_file

    config, dataset, (train, _, test), exact = build("LLMSeqSim", tiny)
    _, _, _, approximate = build("LLMSeqSim", tiny, llmseqsim_index="hnsw", llmseqsim_ann_candidates=5)
    folder = embedding_file(config, EmbeddingSpec.from_config(config))[0].parent
    assert list(folder.glob("*.hnsw-*.faiss")), "the prepare stage saved the index beside the embedding file"
    assert approximate.index is not None and exact.index is None, "auto on a small catalog: exact"
    batch = next(iter(test))[0]
    with torch.no_grad():
        top_exact = exact.topk(batch, 5)
        top_approx = approximate.topk(batch, 5)
        dense = approximate.full_sort_predict(batch)
    assert torch.equal(top_exact[1], top_approx[1])
    assert torch.allclose(top_exact[0], top_approx[0], atol=1e-5)
    assert (torch.isfinite(dense).sum(1) <= 5 + batch["item_id_list"].shape[1]).all(), "only candidates scored"
    prompt = batch["item_id_list"]
    assert torch.isinf(dense.gather(1, prompt)).all(), "the prompt's items stay refused"


def test_a_missing_index_is_named_not_built_in_the_constructor(tiny, tmp_path):
    from recbole_llm.model import LLMSeqSim

    config, dataset, (train, _, _), _ = build("LLMSeqSim", tiny)
    config["llmseqsim_index"] = "ivf"  # asked for after the prepare stage ran: nothing built it
    with pytest.raises(FileNotFoundError, match="index is not built yet"):
        LLMSeqSim(config, train._dataset)
