"""pack_sequences: the encoder on real positions only gives RecBole's values there, and the same losses."""
import pytest
import torch
from conftest import build

from recbole_llm.data.windows import MASK_LAST
from recbole_llm.model.packed_encoder import PackedTransformerEncoder, real_positions

MODELS = ["PaperSASRec", "LLM2SASRec", "PaperBERT4Rec", "LLM2BERT4Rec"]


def test_real_positions_read_recboles_causal_and_bidirectional_masks():
    seq = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]])
    from recbole.model.abstract_recommender import SequentialRecommender

    for bidirectional in (False, True):
        mask = SequentialRecommender.get_attention_mask(None, seq, bidirectional=bidirectional)
        assert real_positions(mask, 4).tolist() == (seq > 0).tolist()


def pair(model_name, tiny, **overrides):
    """The same model (same weights) without and with packing, built on all-position rows."""
    settings = dict(MAX_ITEM_LIST_LENGTH=6, n_layers=2, n_heads=2, train_mode="all_positions", **overrides)
    if "BERT" in model_name:
        settings.update(bert_mask_last_copies=1, bert_random_mask_copies=1, mask_ratio=0.5)
    _, _, data, plain = build(model_name, tiny, pack_sequences=False, **settings)
    _, _, _, packed = build(model_name, tiny, pack_sequences=True, **settings)
    packed.load_state_dict(plain.state_dict())
    return data, plain, packed


@pytest.mark.parametrize("model_name", MODELS)
def test_packed_encoder_gives_recboles_outputs_at_real_positions(tiny, model_name):
    (train, _, test), plain, packed = pair(model_name, tiny)
    assert not isinstance(plain.trm_encoder, PackedTransformerEncoder) and isinstance(packed.trm_encoder, PackedTransformerEncoder)
    assert list(plain.state_dict()) == list(packed.state_dict()), "the same parameters under the same names"
    plain.eval(), packed.eval()
    seq = next(iter(train))["item_id_list"]
    real = seq > 0
    assert (~real).any(), "the rows have padding"
    with torch.no_grad():
        mask = plain.get_attention_mask(seq, bidirectional="BERT" in model_name)
        emb = plain.item_embedding(seq)
        theirs, ours = plain.trm_encoder(emb, mask), packed.trm_encoder(emb, mask)
        assert len(theirs) == len(ours) == 2, "every layer's output"
        for a, b in zip(theirs, ours):
            assert torch.allclose(a[real], b[real], atol=1e-5)
            assert b[~real].abs().max() == 0.0 and a[~real].abs().max() > 0.0, "padding is not encoded"
        batch = next(iter(test))[0]
        assert torch.allclose(plain.full_sort_predict(batch), packed.full_sort_predict(batch), atol=1e-4)


@pytest.mark.parametrize("model_name", MODELS)
def test_packed_training_step_gives_recboles_loss_and_gradients(tiny, model_name):
    (train, _, _), plain, packed = pair(model_name, tiny, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    batch = next(iter(train))
    if "BERT" in model_name:
        assert (batch[MASK_LAST] == 0).any(), "random-mask copies are in the batch"
    losses = []
    for model in (plain, packed):
        model.train()
        torch.manual_seed(0)  # the cloze masks
        loss = model.calculate_loss(batch)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(plain.named_parameters(), packed.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_dropout_is_still_drawn_per_position(tiny):
    (train, _, _), _, packed = pair("PaperSASRec", tiny, hidden_dropout_prob=0.5)
    packed.train()
    seq = next(iter(train))["item_id_list"]
    lengths = (seq > 0).sum(1)
    assert not torch.equal(packed.forward(seq, lengths), packed.forward(seq, lengths))


def test_pack_sequences_must_be_a_boolean(tiny):
    with pytest.raises(ValueError, match="pack_sequences must be True or False"):
        build("PaperSASRec", tiny, pack_sequences="yes")


def test_only_our_llm2bert4rec_packs_by_default(tiny):
    assert isinstance(build("LLM2BERT4Rec", tiny)[3].trm_encoder, PackedTransformerEncoder)
    assert not isinstance(build("PaperBERT4Rec", tiny)[3].trm_encoder, PackedTransformerEncoder), "off by default"
