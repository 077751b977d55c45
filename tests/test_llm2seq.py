"""LLM2SASRec / LLM2BERT4Rec / LLM2GRU4Rec: initialisation, training, reload."""
import pytest
import torch
from conftest import build

from recbole_llm.embeddings import EmbeddingMismatchError
from recbole_llm.embeddings.store import item_embedding_table
from recbole_llm.quick_start import run

MODELS = ["LLM2SASRec", "LLM2BERT4Rec", "LLM2GRU4Rec"]


@pytest.mark.parametrize("model", MODELS)
def test_item_table_equals_reduced_embeddings_after_init(tiny, model):
    config, dataset, _, net = build(model, tiny, embedding_scale="none")
    expected = item_embedding_table(config, dataset, 16)
    n = net.n_items
    assert torch.allclose(net.item_embedding.weight[:n], expected[:n])
    assert torch.all(net.item_embedding.weight[0] == 0), "padding row stays zero"
    if model == "LLM2BERT4Rec":
        assert net.item_embedding.weight.shape[0] == n + 1 and net.item_embedding.weight[n].abs().sum() > 0


def test_std_scale_matches_recbole_init_and_keeps_geometry(tiny):
    _, dataset, _, net = build("LLM2SASRec", tiny)
    weight = net.item_embedding.weight[1:].detach()
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    config, _, _, raw = build("LLM2SASRec", tiny, embedding_scale="none")
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos(weight[0:1], weight[1:]), cos(raw.item_embedding.weight[1:2], raw.item_embedding.weight[2:]),
                          atol=1e-5)


def _train_step(net, train):
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.01)
    batch = next(iter(train))
    loss = net.calculate_loss(batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("model", MODELS)
def test_trainable_changes_frozen_does_not(tiny, model):
    _, _, (train, _, _), net = build(model, tiny)
    before = net.item_embedding.weight[: net.n_items].detach().clone()
    _train_step(net, train)
    assert not torch.allclose(net.item_embedding.weight[: net.n_items], before)
    _, _, (train, _, _), frozen = build(model, tiny, embedding_freeze=True)
    before = frozen.item_embedding.weight.detach().clone()
    _train_step(frozen, train)
    assert torch.equal(frozen.item_embedding.weight[: frozen.n_items], before[: frozen.n_items])
    if model == "LLM2BERT4Rec":  # the [MASK] row is not an item: it keeps learning under the freeze
        assert not torch.equal(frozen.item_embedding.weight[frozen.n_items], before[frozen.n_items])


def test_bpr_loss_with_negative_sampling(tiny):
    neg = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0}
    _, _, (train, _, _), net = build("LLM2SASRec", tiny, loss_type="BPR", train_neg_sample_args=neg)
    loss = net.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)


def test_permutation_shuffles_rows(tiny):
    _, _, _, plain = build("LLM2SASRec", tiny, embedding_scale="none")
    _, _, _, permuted = build("LLM2SASRec", tiny, embedding_scale="none", embedding_permute=True)
    a, b = plain.item_embedding.weight[1:].detach(), permuted.item_embedding.weight[1:].detach()
    assert not torch.allclose(a, b)
    assert torch.allclose(a.sum(0), b.sum(0), atol=1e-4), "same rows, other items"


def test_explicit_mismatched_dimension_fails(tiny):
    with pytest.raises(EmbeddingMismatchError, match="embedding_dim=32"):
        build("LLM2SASRec", tiny, embedding_dim=32)
    with pytest.raises(EmbeddingMismatchError, match="384-d embeddings but the model needs 16"):
        build("LLM2SASRec", tiny, embedding_reduction="none")


def test_runs_end_to_end_with_temporal_protocol(tiny, tmp_path):
    from recbole_llm import load_data_and_model
    from recbole_llm.registry import get_trainer

    result = run("LLM2GRU4Rec", "tiny", config_dict={**tiny["config"], "checkpoint_dir": str(tmp_path / "saved")})
    (checkpoint,) = (tmp_path / "saved").glob("LLM2GRU4Rec-*.pth")
    config, model, _, train, _, test = load_data_and_model(checkpoint)
    assert model.item_embedding.weight.shape[1] == config["embedding_size"]
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train)
    again = trainer.evaluate(test, load_best_model=False)
    assert result["test_result"]["ndcg@20"] == pytest.approx(again["ndcg@20"], abs=1e-4), "the saved model is the one tested"
    assert result["test_result"]["ndcg@20"] > 0
