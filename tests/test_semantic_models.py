"""AlphaFuse- and LLM-ESR-style models: the LLM's semantics stay in the trained item vector (shapes, padding,
what trains and what stays frozen, checkpoint round-trip, determinism)."""
import pytest
import torch
from conftest import build

from recbole_llm.embeddings.store import item_embedding_table

ALPHAFUSE = ["AlphaFuseSASRec", "AlphaFuseGRU4Rec"]
LLMESR = ["LLMESRSASRec", "LLMESRGRU4Rec"]


def _step(net, batch, lr=0.05):
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    loss = net.calculate_loss(batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize("name", ALPHAFUSE)
def test_alphafuse_keeps_whitened_components_frozen_and_trains_the_id_part_in_the_last_coordinates(tiny, name):
    config, dataset, (train, _, _), net = build(name, tiny, train_mode="all_positions")
    table = net.item_embedding
    size, k = table.embedding_dim, table.id_dim
    assert k == size // 2 and table.weight.shape == (net.n_items, size)
    semantic = table.semantic[1:]
    assert torch.allclose(semantic.std(0), torch.ones(size), atol=1e-4), "each component whitened to unit variance"
    pca = item_embedding_table(config, dataset, size)[1: net.n_items]
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos(semantic[:, 0], pca[:, 0] - pca[:, 0].mean(), dim=0), torch.tensor(1.0), atol=1e-4)
    before = table.semantic.clone()
    batch = next(iter(train))
    loss = _step(net, batch)
    assert torch.isfinite(loss)
    assert torch.equal(table.semantic, before), "the semantic part never trains"
    assert table.id_weight.abs().sum() > 0, "the ID part trains"
    moved = (table.weight - before).abs().sum(0)
    assert moved[: size - k].sum() == 0 and moved[size - k:].sum() > 0, "only the last k coordinates move"
    assert torch.all(table.weight[0] == 0), "padding stays zero"


@pytest.mark.parametrize("name", LLMESR)
def test_llmesr_scores_are_the_sum_of_the_id_and_llm_views(tiny, name):
    config, dataset, (train, _, test), net = build(name, tiny)
    size = net.item_embedding.embedding_dim
    full = item_embedding_table({**config.final_config_dict, "embedding_reduction": "none", "embedding_dim": None},
                                dataset)
    assert net.llm_table.shape == (net.n_items, full.shape[1]) and torch.all(net.llm_table[0] == 0)
    assert net.catalog_table().shape == (net.n_items, 2 * size)
    net.eval()
    batch = next(iter(train))
    seq, lengths = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        state = net.forward(seq, lengths)
        ids = net._encode(net.item_embedding(seq), seq, lengths)
        llm = net._encode(net.adapter(net.llm_table[seq]), seq, lengths)
        expected = ids @ net.item_embedding.weight[: net.n_items].T + llm @ net.adapter(net.llm_table).T
        assert torch.allclose(net.full_sort_predict(batch), expected, atol=1e-5)
        assert state.shape == (len(batch), 2 * size)
    frozen = net.llm_table.clone()
    _step(net, batch)
    assert torch.equal(net.llm_table, frozen) and not net.llm_table.requires_grad


@pytest.mark.parametrize("name", ALPHAFUSE + LLMESR)
def test_semantic_models_round_trip_and_are_deterministic(tiny, name):
    _, _, (train, _, _), first = build(name, tiny, train_mode="all_positions", softmax_negatives=5)
    _, _, _, second = build(name, tiny, train_mode="all_positions", softmax_negatives=5)
    batch = next(iter(train))
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b), "the same seed builds the same model"
    torch.manual_seed(0)
    _step(first, batch)
    copy = build(name, tiny, train_mode="all_positions", softmax_negatives=5)[3]
    copy.load_state_dict(first.state_dict())
    first.eval(), copy.eval()
    with torch.no_grad():
        assert torch.equal(first.full_sort_predict(batch), copy.full_sort_predict(batch))
        scores = first.full_sort_predict(batch)
        assert torch.allclose(first.predict(batch), scores.gather(1, batch["item_id"].unsqueeze(1)).squeeze(1),
                              atol=1e-5)


def test_wrong_settings_are_refused_before_any_work(tiny):
    with pytest.raises(ValueError, match="embedding_reduction: pca"):
        build("AlphaFuseSASRec", tiny, embedding_reduction="lda")
    with pytest.raises(ValueError, match="alphafuse_id_dim must be between 1 and hidden_size"):
        build("AlphaFuseSASRec", tiny, alphafuse_id_dim=99)
    with pytest.raises(ValueError, match="output_dense .* does not apply"):
        build("LLMESRSASRec", tiny, output_dense="relu")
