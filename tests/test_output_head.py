"""The paper's projection head on SASRec and GRU4Rec: Dense + activation, the tied table, a per-item bias."""
import pytest
import torch
from conftest import build
from recbole.model.sequential_recommender import GRU4Rec, SASRec

from recbole_llm.data.windows import TARGETS
from recbole_llm.model.position_losses import all_positions_loss


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperGRU4Rec", "LLM2SASRec"])
def test_no_head_unless_asked(tiny, model_name):
    _, _, (train, _, _), model = build(model_name, tiny)
    assert not any(name.startswith("output_dense") for name in model.state_dict())
    assert getattr(model, "output_activation", None) is None


@pytest.mark.parametrize("model_name", ["PaperSASRec", "LLM2SASRec", "PaperGRU4Rec", "LLM2GRU4Rec"])
def test_the_head_transforms_every_output_before_the_tied_table(tiny, model_name):
    _, _, (train, _, _), model = build(model_name, tiny, output_dense="relu", output_bias=True,
                                       train_mode="all_positions")
    model.eval()
    batch = next(iter(train))
    seq, lengths = batch["item_id_list"], batch["item_length"]
    base = SASRec if isinstance(model, SASRec) else GRU4Rec
    with torch.no_grad():
        raw = base.forward(model, seq, lengths)  # RecBole's encoder output, no head
        if isinstance(model, GRU4Rec):
            assert "output_dense.weight" not in model.state_dict(), "GRU4Rec's own dense is the head's Dense"
            expected = torch.relu(raw)
        else:
            assert model.output_dense.weight.shape == (model.hidden_size, model.hidden_size)
            expected = torch.relu(model.output_dense(raw))
        assert torch.allclose(model.forward(seq, lengths), expected)
        model.item_bias[2] = 1.5
        scores = model.full_sort_predict(batch)
        table = model.item_embedding.weight[: model.n_items]
        assert torch.allclose(scores, expected @ table.T + model.item_bias, atol=1e-5)
        loss = model.calculate_loss(batch)
        assert TARGETS in batch.interaction and loss == all_positions_loss(model, batch)


def test_the_head_trains_and_is_saved(tiny):
    _, _, (train, _, _), model = build("PaperSASRec", tiny, output_dense="relu", train_mode="all_positions")
    before = model.output_dense.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for batch in train:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    assert not torch.equal(before, model.output_dense.weight) and "output_dense.weight" in model.state_dict()


def test_unknown_activation_is_refused(tiny):
    with pytest.raises(ValueError, match="output_dense must be one of"):
        build("PaperSASRec", tiny, output_dense="swish")
