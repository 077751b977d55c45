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

# one session of length 4 (positions from the end i = 4, 3, 2, 1), padded to 5; the values the paper's
# decay_utils.compute_decay_array gives (scaling_quadratic/cubic: scaling_linear squared/cubed; log: 1/(ln i + 1))
EXPECTED = {
    "mean": [1, 1, 1, 1],
    "last": [0, 0, 0, 1],
    "constant_linear": [0.7, 0.8, 0.9, 1.0],
    "scaling_linear": [0.25, 0.5, 0.75, 1],
    "scaling_quadratic": [0.0625, 0.25, 0.5625, 1],
    "scaling_cubic": [0.015625, 0.125, 0.421875, 1],
    "log": [1 / (math.log(4) + 1), 1 / (math.log(3) + 1), 1 / (math.log(2) + 1), 1],
    "harmonic": [1 / 4, 1 / 3, 1 / 2, 1],
    "scaling_quadratic_prose": [1 - 3 / 16, 1 - 2 / 16, 1 - 1 / 16, 1],
    "scaling_cubic_prose": [1 - 3 / 64, 1 - 2 / 64, 1 - 1 / 64, 1],
    "log_prose": [1 / math.log(5), 1 / math.log(4), 1 / math.log(3), 1 / math.log(2)],
    "squared_harmonic": [1 / 16, 1 / 9, 1 / 4, 1],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_position_weights_hand_computed(strategy):
    weights = position_weights(torch.tensor([4]), 5, strategy)[0]
    assert torch.allclose(weights, torch.tensor(EXPECTED[strategy] + [0.0]), atol=1e-6)


def test_constant_linear_keeps_a_floor_and_pool_is_weighted_mean():
    # the original floors the linear decay at 1e-5: the 12th item from the end still counts, barely
    assert position_weights(torch.tensor([12]), 12, "constant_linear")[0, 0].item() == pytest.approx(1e-5)
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


SESSIONS_ABC_ABD_EF = [["ilipstick0", "ilipstick1", "ilipstick2"], ["ilipstick0", "ilipstick1", "ilipstick3"],
                       ["ishampoo0", "ishampoo1"]]


def _hand_made_sknn(model_name, tiny, sessions=SESSIONS_ABC_ABD_EF, **overrides):
    """Training sessions (default A B C | A B D | E F, ending at times 1, 2, 3) and the item ids by letter."""
    _, dataset, _, model = build(model_name, tiny, **{"sknn_k": 2, "sknn_sample_size": 0, **overrides})
    letters = dict(zip("ABCDEF", ["ilipstick0", "ilipstick1", "ilipstick2", "ilipstick3", "ishampoo0", "ishampoo1"]))
    ids = {letter: dataset.token2id("item_id", token) for letter, token in letters.items()}
    by_token = {token: ids[letter] for letter, token in letters.items()}
    model.sessions = [np.array([by_token[t] for t in s]) for s in sessions]
    model.session_end = np.arange(1.0, len(sessions) + 1)
    model._index_sessions()
    if hasattr(model, "_index_followers"):
        model._index_followers()
    return dataset, model, ids


def _letters(dataset, ids, *prompts):
    tokens = {v: dataset.id2token("item_id", v) for v in ids.values()}
    return _batch(dataset, [[tokens[ids[c]] for c in p] for p in prompts])


def test_sknn_scores_on_hand_made_sessions(tiny):
    dataset, model, ids = _hand_made_sknn("SKNN", tiny)
    scores = model.full_sort_predict(_letters(dataset, ids, "AB"))[0]
    cosine = 2 / math.sqrt(2 * 3)  # |{A,B} ∩ S| / sqrt(|prompt| |S|), for A B C and for A B D
    assert scores[ids["C"]].item() == pytest.approx(cosine)
    assert scores[ids["D"]].item() == pytest.approx(cosine)
    assert scores[ids["A"]] == -torch.inf and scores[ids["B"]] == -torch.inf, "prompt items are never recommended"
    # E F shares nothing with the prompt: no evidence, ranked below every evidenced item, by popularity
    never_seen = dataset.token2id("item_id", "inail0")
    assert scores[ids["E"]] < 0 < scores[ids["C"]]
    assert scores[never_seen] < scores[ids["E"]], "E occurs in training, inail0 does not"
    model.backfill = "none"
    assert model.full_sort_predict(_letters(dataset, ids, "AB"))[0][ids["E"]] == -torch.inf


def test_idf_weighting_scales_each_item_by_its_rarity_over_training_sessions(tiny):
    dataset, model, ids = _hand_made_sknn("SKNN", tiny, sknn_idf_weighting=True)
    scores = model.full_sort_predict(_letters(dataset, ids, "AB"))[0]
    cosine = 2 / math.sqrt(2 * 3)
    idf_c = 1 + math.log(3 / 1)  # C is in 1 of the 3 training sessions (the original's 1 + log(N / df))
    assert scores[ids["C"]].item() == pytest.approx(cosine * idf_c)
    assert scores[ids["D"]].item() == pytest.approx(cosine * idf_c)
    dataset, model, ids = _hand_made_sknn("SKNN", tiny, sessions=[["ilipstick0", "ilipstick1", "ilipstick2"],
                                                                  ["ilipstick0", "ilipstick1", "ilipstick2"],
                                                                  ["ilipstick0", "ilipstick3"]],
                                          sknn_idf_weighting=True, sknn_k=3)
    scores = model.full_sort_predict(_letters(dataset, ids, "A"))[0]
    # C: two neighbours of cosine 1/sqrt(3), in 2 of 3 sessions; D: one neighbour of cosine 1/sqrt(2), in 1 of 3
    assert scores[ids["C"]].item() == pytest.approx(2 / math.sqrt(3) * (1 + math.log(3 / 2)))
    assert scores[ids["D"]].item() == pytest.approx(1 / math.sqrt(2) * (1 + math.log(3)))


def test_sknn_dot_similarity_sums_the_prompt_weights_of_shared_items(tiny):
    dataset, model, ids = _hand_made_sknn("VSKNN", tiny, sknn_similarity="dot", sknn_decay="harmonic", sknn_k=3)
    scores = model.full_sort_predict(_letters(dataset, ids, "EA"))[0]  # harmonic: A (last) 1, E 1/2
    assert scores[ids["C"]].item() == pytest.approx(1.0)  # A B C shares A
    assert scores[ids["B"]].item() == pytest.approx(2.0)  # A B C and A B D
    assert scores[ids["F"]].item() == pytest.approx(0.5)  # E F shares E


def test_ssknn_weights_neighbours_by_the_position_of_the_latest_shared_item(tiny):
    dataset, model, ids = _hand_made_sknn("SSKNN", tiny, sknn_k=3)
    scores = model.full_sort_predict(_letters(dataset, ids, "AE"))[0]  # positions A = 1, E = 2 of |s| = 2
    cosine_abx, cosine_ef = 1 / math.sqrt(2 * 3), 1 / math.sqrt(2 * 2)
    assert scores[ids["C"]].item() == pytest.approx(cosine_abx * 1 / 2)  # latest shared item A: x = 1
    assert scores[ids["B"]].item() == pytest.approx(2 * cosine_abx * 1 / 2)
    assert scores[ids["F"]].item() == pytest.approx(cosine_ef * 2 / 2)  # latest shared item E: x = 2
    model.weighting = "div"  # session-rec: 1 / distance from the end (A: 2, E: 1)
    scores = model.full_sort_predict(_letters(dataset, ids, "AE"))[0]
    assert scores[ids["C"]].item() == pytest.approx(cosine_abx / 2)
    assert scores[ids["F"]].item() == pytest.approx(cosine_ef / 1)


def test_sfsknn_scores_global_followers_of_the_last_item(tiny):
    sessions = [["ilipstick0", "ilipstick1", "ilipstick2"], ["ilipstick0", "ilipstick2", "ilipstick1"]]
    dataset, model, ids = _hand_made_sknn("SFSKNN", tiny, sessions=sessions)
    # followed-by map: A -> B, B -> C, A -> C, C -> B. Prompt A B: only followers of B (C) are scored,
    # by both neighbours, though in A C B the item C does not follow B
    scores = model.full_sort_predict(_letters(dataset, ids, "AB"))[0]
    cosine = 2 / math.sqrt(2 * 3)
    assert scores[ids["C"]].item() == pytest.approx(2 * cosine)
    scores = model.full_sort_predict(_letters(dataset, ids, "BA"))[0]  # followers of A: B, C; B is in the prompt
    assert scores[ids["C"]].item() == pytest.approx(2 * cosine)
    followers = model.followers[ids["B"]].indices.tolist()
    assert followers == [ids["C"]]


def test_vsknn_decay_and_sampling_recent(tiny):
    dataset, model, ids = _hand_made_sknn("VSKNN", tiny, sknn_sampling="recent")
    model.sample_size = 1  # only the most recent session sharing an item: A B D (end 2.0)
    scores = model.full_sort_predict(_letters(dataset, ids, "AB"))[0]
    assert scores[ids["D"]] > 0 and scores[ids["C"]] < 0


def _two_dimensional_items(model, ids):
    """Item vectors A (1, 0), B (0, 1), C (0, 1), D (1, 0), E (1, 0), F (1, 0), and the sessions pooled from them."""
    table = torch.zeros_like(model.item_table[:, :2])
    for letter, vector in zip("ABCDEF", [(1, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 0)]):
        table[ids[letter]] = torch.tensor(vector, dtype=table.dtype)
    model.item_table = table
    model.session_table = model.pool_sessions()


def test_sknn_emb_candidates_share_an_item_then_rank_by_embedding(tiny):
    dataset, model, ids = _hand_made_sknn("SKNNEmb", tiny, sknn_k=1, sknn_similarity="dot",
                                          sknn_prompt_pooling="harmonic", sknn_train_pooling="mean")
    _two_dimensional_items(model, ids)  # session means: ABC (1/3, 2/3), ABD (2/3, 1/3), EF (1, 0)
    scores = model.full_sort_predict(_letters(dataset, ids, "A"))[0]
    # E F is the most similar embedding but shares no item with the prompt: not a candidate
    assert scores[ids["D"]].item() == pytest.approx(2 / 3) and scores[ids["B"]].item() == pytest.approx(2 / 3)
    assert scores[ids["F"]] < 0 and scores[ids["C"]] < 0


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


def test_pop_hybrid_drops_unpopular_items_best_ranked_first_while_the_list_is_long_enough(tiny):
    _, dataset, _, model = build("LLMSeqSimPopHybrid", tiny)
    scores = torch.full((1, model.n_items), -torch.inf)
    scores[0, 1:6] = torch.tensor([5.0, 4, 3, 2, 1])  # ranked list: items 1 2 3 4 5
    model.allowed = torch.zeros(model.n_items, dtype=torch.bool)
    model.allowed[[2, 4]] = True  # 1, 3, 5 unpopular
    model.diversity_pool = 5
    model.list_length = 2  # remove 3 = 5 - 2 unpopular items: 1, 3, 5
    kept = model.drop_unpopular(scores)[0]
    assert torch.isfinite(kept).nonzero().ravel().tolist() == [2, 4]
    model.list_length = 3  # remove only 2 of them, the best-ranked ones: 1 and 3
    kept = model.drop_unpopular(scores)[0]
    assert torch.isfinite(kept).nonzero().ravel().tolist() == [2, 4, 5]
    assert kept[2] > kept[4] > kept[5], "the list keeps LLMSeqSim's order"


def test_hybrid_popularity_is_the_share_of_training_sessions_holding_the_item(tiny):
    from recbole_llm.data.sessions import item_popularity, training_sessions

    _, dataset, (train, _, _), model = build("LLMSeqSimPopHybrid", tiny)
    sessions, _ = training_sessions(train._dataset)
    item = int(sessions[0][0])
    expected = sum(item in s for s in sessions) / len(sessions)
    assert item_popularity(train._dataset, model.n_items)[item].item() == pytest.approx(expected)


def test_pop_hybrid_filters_unpopular_and_similar_items(tiny):
    _, dataset, _, model = build("LLMSeqSimPopHybrid", tiny, hybrid_popularity_quantile=0.5, hybrid_pop_rule="mask")
    batch = _batch(dataset, [["ilipstick0"]])
    scores = model.full_sort_predict(batch)[0]
    assert torch.all(scores[~model.allowed] == -torch.inf)
    model.diversity_threshold = -1.01  # every pair of items is "too similar" (cosine > -1.01): one survives
    diverse = model.full_sort_predict(batch)[0]
    assert torch.isfinite(diverse).sum() == 1
    assert int(diverse.argmax()) == int(scores.argmax()), "the best item is always kept"


def test_earlier_variants_stay_available(tiny):
    sessions = [["ilipstick0", "ilipstick1", "ilipstick2"], ["ilipstick0", "ilipstick2", "ilipstick1"]]
    dataset, model, ids = _hand_made_sknn("SFSKNN", tiny, sessions=sessions, sfsknn_followers="neighbour")
    scores = model.full_sort_predict(_letters(dataset, ids, "AB"))[0]
    assert scores[ids["C"]].item() == pytest.approx(2 / math.sqrt(2 * 3)), "only A B C has C right after B"
    dataset, model, ids = _hand_made_sknn("SKNNEmb", tiny, sknn_k=1, sknn_similarity="dot",
                                          sknn_prompt_pooling="harmonic", sknn_emb_candidates="all")
    _two_dimensional_items(model, ids)
    scores = model.full_sort_predict(_letters(dataset, ids, "A"))[0]
    assert scores[ids["F"]].item() == pytest.approx(1.0), "every session is a candidate: E F is the nearest"


def test_training_sessions_are_the_training_users_whole_sequences_in_time_order(tiny):
    import pandas as pd

    from recbole_llm.data.sessions import training_sessions

    _, _, (train, _, _), _ = build("SKNN", tiny)
    dataset = train._dataset
    sessions, ends = training_sessions(dataset)
    inter = pd.read_csv(tiny["path"] / "tiny" / "tiny.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    users = sorted(set(dataset.inter_feat[dataset.uid_field].tolist()))
    assert len(sessions) == len(users) == len(ends)
    item_ids = dataset.field2token_id[dataset.iid_field]
    for uid, session, end in zip(users, sessions, ends):
        token = dataset.field2id_token[dataset.uid_field][uid]
        rows = inter[inter["user_id"] == token].sort_values("timestamp", kind="stable")
        assert session.tolist() == [item_ids[i] for i in rows["item_id"]], token
        assert end == rows["timestamp"].max()


def test_seq_hybrid_loads_its_partner_from_a_checkpoint(tiny, tmp_path):
    _, _, _, trained = build("SASRec", tiny)
    with torch.no_grad():
        trained.item_embedding.weight.add_(1.0)  # weights no fresh model has
    path = tmp_path / "partner.pth"
    torch.save({"state_dict": trained.state_dict()}, path)
    _, _, _, model = build("LLMSeqSimSeqHybrid", tiny, hybrid_sequential_model="SASRec", hybrid_checkpoint=str(path))
    assert torch.equal(model.sequential.item_embedding.weight, trained.item_embedding.weight)
    assert model.needs_training is False
    with pytest.raises(FileNotFoundError, match="hybrid_checkpoint .*missing.pth does not exist"):
        build("LLMSeqSimSeqHybrid", tiny, hybrid_sequential_model="SASRec", hybrid_checkpoint=str(tmp_path / "missing.pth"))


def test_sknn_emb_all_candidates_through_an_approximate_session_index(tiny, caplog):
    """sknn_emb_candidates: all over a faiss index of the training sessions: on a catalog this small HNSW finds the
    exact neighbours, so the scores are the exact search's; its recall@20 against exact search is logged."""
    import logging

    pytest.importorskip("faiss")
    options = dict(sknn_emb_candidates="all", sknn_k=5, sknn_similarity="cosine")
    _, _, (_, _, test), exact = build("SKNNEmb", tiny, sknn_emb_index="exact", **options)
    _, _, _, approximate = build("SKNNEmb", tiny, sknn_emb_index="hnsw", **options)
    assert exact.index_kind == "exact" and approximate.index_kind == "hnsw"
    batch = next(iter(test))[0]
    with caplog.at_level(logging.INFO, logger="recbole_llm.model.sknn"):
        scores = approximate.full_sort_predict(batch)
    assert torch.allclose(scores, exact.full_sort_predict(batch), atol=1e-5)
    assert "recall@20 against exact search" in caplog.text and ": 1.000" in caplog.text
    _, _, _, auto = build("SKNNEmb", tiny, **options)
    assert auto.index_kind == "exact", "auto: exact below sknn_emb_ann_min_sessions"
    with pytest.raises(ValueError, match="sknn_emb_index"):
        build("SKNNEmb", tiny, sknn_emb_index="annoy", **options)
