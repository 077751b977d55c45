"""Pooling weights, LLMSeqSim, the SKNN family and the hybrids on hand-made data."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import build

from recbole_llm.embeddings.pooling import STRATEGIES, pool, position_weights
from recbole_llm.model.hybrids import popularity_cutoff
from recbole_llm.model.llmseqsim import similarity_scores

# one session of length 4 (positions from the end i = 4, 3, 2, 1), padded to 5
EXPECTED = {
    "mean": [1, 1, 1, 1],
    "last": [0, 0, 0, 1],
    "constant_linear": [0.7, 0.8, 0.9, 1.0],
    "scaling_linear": [1 - 3 / 4, 1 - 2 / 4, 1 - 1 / 4, 1],
    "scaling_quadratic": [1 - 3 / 16, 1 - 2 / 16, 1 - 1 / 16, 1],
    "scaling_cubic": [1 - 3 / 64, 1 - 2 / 64, 1 - 1 / 64, 1],
    "log": [1 / math.log(5), 1 / math.log(4), 1 / math.log(3), 1 / math.log(2)],
    "harmonic": [1 / 4, 1 / 3, 1 / 2, 1],
    "squared_harmonic": [1 / 16, 1 / 9, 1 / 4, 1],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_position_weights_hand_computed(strategy):
    weights = position_weights(torch.tensor([4]), 5, strategy)[0]
    assert torch.allclose(weights, torch.tensor(EXPECTED[strategy] + [0.0]), atol=1e-6)


def test_constant_linear_reaches_zero_and_pool_is_weighted_mean():
    assert position_weights(torch.tensor([12]), 12, "constant_linear")[0, 0] == 0
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    session = pool(table, torch.tensor([[1, 2, 0]]), torch.tensor([2]), "harmonic")
    assert torch.allclose(session, torch.tensor([[1 / 3, 2 / 3]]))
    with pytest.raises(ValueError, match="Unknown pooling"):
        position_weights(torch.tensor([1]), 1, "median")


def test_similarities_find_the_known_nearest_item():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.7, 0.7]])
    session = torch.tensor([[0.9, 0.8]])
    assert similarity_scores(session, items, "cosine")[0, 1:].argmax() + 1 == 3
    assert similarity_scores(session, items, "dot")[0].argmax() == 2
    assert similarity_scores(session, items, "euclidean")[0].argmax() == 3


def _batch(dataset, sequences):
    from recbole.data.interaction import Interaction

    width = max(len(s) for s in sequences)
    ids = [[dataset.token2id("item_id", t) for t in s] + [0] * (width - len(s)) for s in sequences]
    return Interaction({"item_id_list": torch.tensor(ids), "item_length": torch.tensor([len(s) for s in sequences]),
                        "item_id": torch.tensor([1] * len(sequences))})


def test_llmseqsim_recommends_same_category_items(tiny):
    _, dataset, _, model = build("LLMSeqSim", tiny)
    scores = model.full_sort_predict(_batch(dataset, [["ilipstick0", "ilipstick1"]]))
    top = [dataset.id2token("item_id", i) for i in scores[0].topk(2).indices.tolist()]
    assert all(t.startswith("ilipstick") for t in top), top
    assert scores[0, dataset.token2id("item_id", "ilipstick0")] == -torch.inf, "session items excluded"


def _hand_made_sknn(model_name, tiny, **overrides):
    """Training sessions: A B C | A B D | E F; the prompt A B."""
    _, dataset, _, model = build(model_name, tiny, sknn_k=2, sknn_sample_size=0, **overrides)
    ids = {t: dataset.token2id("item_id", t) for t in ["ilipstick0", "ilipstick1", "ilipstick2", "ilipstick3",
                                                         "ishampoo0", "ishampoo1"]}
    a, b, c, d, e, f = ids.values()
    model.sessions = [np.array([a, b, c]), np.array([a, b, d]), np.array([e, f])]
    model.session_end = np.array([1.0, 2.0, 3.0])
    rows = [0, 0, 0, 1, 1, 1, 2, 2]
    cols = [a, b, c, a, b, d, e, f]
    model.M = sp.csr_matrix((np.ones(8, np.float32), (rows, cols)), shape=(3, model.n_items))
    model.MT = model.M.T.tocsr()
    model.session_size = np.array([3.0, 3.0, 2.0])
    return dataset, model, ids


def test_sknn_scores_on_hand_made_sessions(tiny):
    dataset, model, ids = _hand_made_sknn("SKNN", tiny)
    scores = model.full_sort_predict(_batch(dataset, [["ilipstick0", "ilipstick1"]]))[0]
    cosine = 2 / math.sqrt(2 * 3)  # |{A,B} ∩ S| / sqrt(|prompt| |S|)
    assert scores[ids["ilipstick2"]].item() == pytest.approx(cosine)
    assert scores[ids["ilipstick3"]].item() == pytest.approx(cosine)
    assert scores[ids["ishampoo0"]].item() == 0.0, "E F shares nothing with the prompt"


def test_sfsknn_only_scores_followers_of_last_item(tiny):
    dataset, model, ids = _hand_made_sknn("SFSKNN", tiny)
    scores = model.full_sort_predict(_batch(dataset, [["ilipstick1", "ilipstick0"]]))[0]  # last item A
    assert scores[ids["ilipstick2"]] == 0 and scores[ids["ilipstick3"]] == 0, "C, D follow B, not A"
    scores = model.full_sort_predict(_batch(dataset, [["ilipstick0", "ilipstick1"]]))[0]  # last item B
    assert scores[ids["ilipstick2"]] > 0 and scores[ids["ilipstick3"]] > 0


def test_vsknn_decay_and_sampling_recent(tiny):
    dataset, model, ids = _hand_made_sknn("VSKNN", tiny, sknn_sampling="recent")
    model.sample_size = 1  # only the most recent session sharing an item: A B D (end 2.0)
    scores = model.full_sort_predict(_batch(dataset, [["ilipstick0", "ilipstick1"]]))[0]
    assert scores[ids["ilipstick3"]] > 0 and scores[ids["ilipstick2"]] == 0


def test_sknn_emb_neighbour_is_semantic(tiny):
    _, dataset, _, model = build("SKNNEmb", tiny, sknn_k=3)
    scores = model.full_sort_predict(_batch(dataset, [["inail0", "inail1"]]))[0]
    best = dataset.id2token("item_id", int(scores.argmax()))
    assert best.startswith("inail"), best


def test_seq_hybrid_switches_at_the_popularity_cutoff(tiny):
    _, dataset, _, model = build("LLMSeqSimSeqHybrid", tiny, hybrid_sequential_model="SKNN")
    pop = model.popularity
    rare = int(torch.argmin(pop[1:] + (pop[1:] == 0) * 1e9)) + 1
    common = int(pop.argmax())
    model.cutoff = float(pop[common])  # everything below the most popular item is "unpopular"
    from recbole.data.interaction import Interaction

    batch = Interaction({"item_id_list": torch.tensor([[rare, 0], [rare, common]]),
                         "item_length": torch.tensor([1, 2]), "item_id": torch.tensor([1, 1])})
    assert model.use_semantic(batch).tolist() == [True, False]
    scores = model.full_sort_predict(batch)
    assert torch.equal(scores[0], model.semantic.full_sort_predict(batch)[0])
    assert torch.equal(scores[1], model.sequential.full_sort_predict(batch)[1])
    assert popularity_cutoff(torch.tensor([0.0, 1, 2, 3, 4]), 50) == 2.5


def test_pop_hybrid_filters_unpopular_and_similar_items(tiny):
    _, dataset, _, model = build("LLMSeqSimPopHybrid", tiny, hybrid_popularity_quantile=0.5)
    batch = _batch(dataset, [["ilipstick0"]])
    scores = model.full_sort_predict(batch)[0]
    assert torch.all(scores[~model.allowed] == -torch.inf)
    model.diversity_threshold = 0.0  # every pair of items is "too similar" -> one item survives per list
    diverse = model.full_sort_predict(batch)[0]
    assert torch.isfinite(diverse).sum() == 1
    assert int(diverse.argmax()) == int(scores.argmax()), "the best item is always kept"
