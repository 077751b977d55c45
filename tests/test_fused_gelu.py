"""The Paper transformers' feed-forward GELU is torch's kernel: RecBole's function up to float rounding."""
import pytest
import torch
from conftest import build
from recbole.model.layers import FeedForward


def test_torchs_gelu_is_recboles():
    ff = FeedForward(8, 16, 0.0, "gelu", 1e-12).double()
    x = torch.randn(40, 8, dtype=torch.float64) * 3
    torch.testing.assert_close(torch.nn.functional.gelu(x), ff.gelu(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("model_name", ["PaperSASRec", "PaperBERT4Rec", "LLM2BERT4Rec", "LLM2SASRec"])
def test_paper_transformers_use_it_and_compute_the_same(tiny, model_name):
    extra = {"bert_mask_last_copies": 1, "bert_random_mask_copies": 1} if "BERT" in model_name else {}
    _, _, (train, _, _), net = build(model_name, tiny, train_mode="all_positions", hidden_dropout_prob=0.0,
                                     attn_dropout_prob=0.0, **extra)
    feed_forwards = [m for m in net.modules() if isinstance(m, FeedForward)]
    assert feed_forwards and all(m.intermediate_act_fn is torch.nn.functional.gelu for m in feed_forwards)
    net = net.double().train()
    batch = next(iter(train))
    losses = []
    for act in (torch.nn.functional.gelu, None):
        for m in feed_forwards:
            m.intermediate_act_fn = act or m.gelu
        torch.manual_seed(0)
        losses.append(net.calculate_loss(batch).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


@pytest.mark.parametrize("model_name, extra", [("SASRec", {}), ("PaperSASRec", {"feed_forward_gelu": "recbole"})])
def test_recboles_gelu_where_asked(tiny, model_name, extra):
    _, _, _, net = build(model_name, tiny, **extra)
    feed_forwards = [m for m in net.modules() if isinstance(m, FeedForward)]
    assert feed_forwards and all(m.intermediate_act_fn.__func__ is FeedForward.gelu for m in feed_forwards)


def test_not_part_of_a_run_identity(tiny):
    from recbole_llm.checkpoints import config_hash

    assert config_hash(build("PaperSASRec", tiny)[0]) == config_hash(build("PaperSASRec", tiny,
                                                                            feed_forward_gelu="recbole")[0])
