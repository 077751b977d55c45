"""Embedding files made elsewhere: the paper's released ada/PaLM format (ItemId, JSON embedding, class)."""
import json

import numpy as np
import pytest
from conftest import build

from recbole_llm.embeddings.external import ExternalEmbeddingError, read_external_embeddings


def _paper_file(tmp_path, items, dim=6, skip=()):
    """A small file in the dh-r format, items numbered 0..n-1 as the paper's global_product_id."""
    rng = np.random.default_rng(0)
    vectors = {}
    with open(tmp_path / "product_embeddings_openai.csv", "w") as f:
        f.write("ItemId,embedding,class\n")
        for number, item in enumerate(items):
            if item in skip:
                continue
            vectors[item] = rng.normal(size=dim).round(6)
            f.write(f'{number},"{json.dumps(vectors[item].tolist())}",{number % 3}\n')
    (tmp_path / "item_id_to_int.json").write_text(json.dumps({item: n for n, item in enumerate(items)}))
    return tmp_path / "product_embeddings_openai.csv", tmp_path / "item_id_to_int.json", vectors


def test_paper_format_read_through_the_id_map(tiny, tmp_path):
    items = [i for i, _, _ in tiny["catalog"]["items"]]
    path, id_map, vectors = _paper_file(tmp_path, items)
    _, dataset, _, model = build("LLMSeqSim", tiny, embedding_provider="file", embedding_model=str(path),
                                 embedding_id_map=str(id_map), embedding_reduction="none", embedding_normalize=False)
    for item in items[:5]:
        row = model.item_table[dataset.token2id("item_id", item)].numpy()
        assert np.allclose(row, vectors[item], atol=1e-6)
    _, _, _, reduced = build("LLMSeqSim", tiny, embedding_provider="file", embedding_model=str(path),
                             embedding_id_map=str(id_map), embedding_reduction="pca", embedding_dim=3,
                             embedding_normalize=True)
    assert reduced.item_table.shape[1] == 3
    assert np.allclose(reduced.item_table[1:].norm(dim=1).numpy(), 1.0, atol=1e-5), "reduced, then L2-normalised"


def test_missing_items_and_missing_map_are_clear_errors(tiny, tmp_path):
    items = [i for i, _, _ in tiny["catalog"]["items"]]
    path, id_map, _ = _paper_file(tmp_path, items, skip={items[2]})
    with pytest.raises(ExternalEmbeddingError, match="no embedding for 1 of"):
        read_external_embeddings(path, items, id_map)
    with pytest.raises(ExternalEmbeddingError, match="embedding_id_map"):
        read_external_embeddings(path, items)
    bad = tmp_path / "bad.csv"
    bad.write_text('ItemId,embedding\n0,"[1.0, NaN]"\n')
    with pytest.raises(ExternalEmbeddingError, match="NaN"):
        read_external_embeddings(bad, ["0"])
    with pytest.raises(ValueError, match="embedding_model"):
        build("LLMSeqSim", tiny, embedding_provider="file")
