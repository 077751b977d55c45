"""BERT4Rec as the paper's code runs it: the prediction [MASK] after the whole prompt, and the epoch's copies."""
from collections import Counter

import pytest
import torch
from conftest import build

from recbole_llm.data.windows import MASK_LAST
from recbole_llm.model.position_losses import copied_cloze_loss
from recbole_llm.model.cloze_predict import mask_after_prompt

M = 99  # the mask token in the unit test


def test_mask_goes_after_the_prompt_and_shifts_only_a_full_window():
    seq = torch.tensor([[5, 0, 0, 0], [5, 6, 0, 0], [5, 6, 7, 8]])
    sequence, index = mask_after_prompt(seq, torch.tensor([1, 2, 4]), M)
    assert sequence.tolist() == [[5, M, 0, 0], [5, 6, M, 0], [6, 7, 8, M]]
    assert index.tolist() == [1, 2, 3]


@pytest.mark.parametrize("model_name", ["PaperBERT4Rec", "LLM2BERT4Rec"])
def test_prediction_reads_the_whole_prompt(tiny, model_name):
    _, _, (_, _, test), model = build(model_name, tiny, MAX_ITEM_LIST_LENGTH=6, mask_ratio=0.5,
                                bert_predict_mask="after_prompt")
    _, _, _, recbole = build(model_name, tiny, MAX_ITEM_LIST_LENGTH=6, mask_ratio=0.5, bert_predict_mask="recbole")
    recbole.load_state_dict(model.state_dict())
    model.eval(), recbole.eval()
    batch = next(iter(test))[0]
    seq, lengths = batch["item_id_list"], batch["item_length"]
    assert (lengths < 6).any() and (lengths == 6).any(), "the tiny data has short and full prompts"
    with torch.no_grad():
        ours, theirs = model.full_sort_predict(batch), recbole.full_sort_predict(batch)
        for row in range(len(seq)):
            n = int(lengths[row])
            items = seq[row, :n].tolist()
            window = (items + [model.mask_token])[-6:]
            position = len(window) - 1
            manual = model.forward(torch.tensor([window + [0] * (6 - len(window))]))[0, position]
            expected = manual @ model.item_embedding.weight[: model.n_items].T + model.output_bias
            assert torch.allclose(ours[row], expected, atol=1e-5)
            if n == 6:
                assert torch.allclose(ours[row], theirs[row], atol=1e-5), "a full window shifts, as RecBole"
        short = lengths < 6
        assert not torch.allclose(ours[short], theirs[short]), "RecBole drops a short prompt's first item"
        batch.interaction["item_id"] = torch.full_like(lengths, 3)
        assert torch.allclose(model.predict(batch), ours[:, 3], atol=1e-5), "predict scores as full_sort_predict"


def test_unknown_placement_is_refused(tiny):
    with pytest.raises(ValueError, match="bert_predict_mask must be one of"):
        build("PaperBERT4Rec", tiny, bert_predict_mask="first")


def test_each_window_is_copied_as_mask_last_and_random_mask_rows(tiny):
    _, _, (plain, _, _), _ = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=4, mask_ratio=0.5, train_mode="all_positions")
    _, _, (copied, _, _), _ = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=4, mask_ratio=0.5, train_mode="all_positions",
                                    bert_mask_last_copies=1, bert_random_mask_copies=3)
    plain_feat, feat = plain._dataset.inter_feat, copied._dataset.inter_feat
    assert len(feat) == 4 * len(plain_feat)
    assert int(feat[MASK_LAST].sum()) == len(plain_feat)

    def windows(f, rows):
        return Counter(tuple(f["item_id_list"][r].tolist()) for r in rows)

    last_rows = feat[MASK_LAST].nonzero(as_tuple=True)[0].tolist()
    random_rows = (feat[MASK_LAST] == 0).nonzero(as_tuple=True)[0].tolist()
    once = windows(plain_feat, range(len(plain_feat)))
    assert windows(feat, last_rows) == once
    assert windows(feat, random_rows) == Counter({w: 3 * c for w, c in once.items()})


def test_copied_rows_mask_the_last_item_or_at_random(tiny):
    _, _, (train, _, _), model = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=4, train_mode="all_positions",
                                       bert_mask_last_copies=1, bert_random_mask_copies=1, mask_ratio=0.5)
    model.eval()
    feat = train._dataset.inter_feat
    last = feat[feat[MASK_LAST] == 1]
    seq, lengths = last["item_id_list"], last["item_length"]
    with torch.no_grad():
        loss = copied_cloze_loss(model, last)
        masked = seq.clone()
        masked[torch.arange(len(seq)), lengths - 1] = model.mask_token
        states = model.forward(masked)[torch.arange(len(seq)), lengths - 1]
        logits = states @ model.item_embedding.weight[: model.n_items].T + model.output_bias
        expected = torch.nn.functional.cross_entropy(logits, seq[torch.arange(len(seq)), lengths - 1])
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        random = feat[feat[MASK_LAST] == 0]
        torch.manual_seed(0)
        first = copied_cloze_loss(model, random)
        torch.manual_seed(1)
        assert copied_cloze_loss(model, random) != first, "random copies draw their masks anew"
        assert model.calculate_loss(last) == pytest.approx(loss.item(), rel=1e-5), "the model's loss is this one"
        model.mask_ratio = 0.0
        assert copied_cloze_loss(model, random).item() == 0.0, "random copies that drew no mask add nothing"


def test_copies_need_all_position_cloze_rows(tiny):
    with pytest.raises(ValueError, match="set train_mode: all_positions"):
        build("PaperBERT4Rec", tiny, bert_random_mask_copies=10)
    with pytest.raises(ValueError, match="at least one copy"):
        build("PaperBERT4Rec", tiny, train_mode="all_positions", bert_mask_last_copies=0, bert_random_mask_copies=0)


@pytest.mark.parametrize("model_name", ["PaperBERT4Rec", "LLM2BERT4Rec"])
def test_paper_layers_feed_the_plain_embedding_sum_and_end_in_dense_gelu(tiny, model_name):
    _, _, _, model = build(model_name, tiny, MAX_ITEM_LIST_LENGTH=6, bert_layers="paper",
                                 hidden_dropout_prob=0.5, embedding_scale="none")
    _, _, _, recbole = build(model_name, tiny, MAX_ITEM_LIST_LENGTH=6, hidden_dropout_prob=0.5,
                             embedding_scale="none")
    recbole.load_state_dict(model.state_dict(), strict=False)  # RecBole's extra LayerNorms keep (1, 0)
    model.eval(), recbole.eval()
    seq = torch.tensor([[3, 4, model.mask_token, 0, 0, 0]])
    with torch.no_grad():
        plain_sum = model.item_embedding(seq) + model.position_embedding(torch.arange(6)).unsqueeze(0)
        encoded = model.trm_encoder(plain_sum, model.get_attention_mask(seq, bidirectional=True))[-1]
        expected = torch.nn.functional.gelu(model.output_ffn(encoded))
        assert torch.allclose(model.forward(seq), expected, atol=1e-6)
        assert not torch.allclose(recbole.forward(seq), expected, atol=1e-3), "RecBole normalises input and output"
    model.train()
    assert not torch.equal(model.forward(seq), model.forward(seq)), "dropout stays inside the encoder"
    bound = 6 ** 0.5 / (2 * model.hidden_size) ** 0.5
    assert model.output_ffn.weight.abs().max() <= bound and model.output_ffn.weight.std() > 0.03, "Glorot-uniform"
    assert float(model.item_embedding.weight[0].detach().abs().sum()) == 0.0, "padding row stays zero"
    if model_name == "LLM2BERT4Rec":
        llm_rows = model.item_embedding.weight[1:model.n_items]
        assert llm_rows.abs().max() > 0.05, "the raw LLM table, not Keras' +-0.05 start"


def test_unknown_bert_layers_are_refused(tiny):
    with pytest.raises(ValueError, match="bert_layers must be one of"):
        build("PaperBERT4Rec", tiny, bert_layers="keras")


def test_left_padding_encodes_the_window_at_the_end_and_answers_at_recboles_positions(tiny):
    from recbole_llm.model.bert_layers import left_aligned

    seq = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]])
    left, shift = left_aligned(seq)
    assert left.tolist() == [[0, 0, 5, 6], [5, 6, 7, 8], [0, 0, 0, 9]] and shift.squeeze(1).tolist() == [2, 0, 3]

    _, _, _, model = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=6, bert_layers="paper", bert_padding="left")
    model.eval()
    row = torch.tensor([[3, 4, model.mask_token, 0, 0, 0]])
    with torch.no_grad():
        output = model.forward(row)
        model.bert_padding = "right"
        at_end = model.forward(torch.tensor([[0, 0, 0, 3, 4, model.mask_token]]))
        at_start = model.forward(row)
    assert torch.allclose(output[0, :3], at_end[0, 3:], atol=1e-6), "positions 3..5 encode the items"
    assert not torch.allclose(output[0, :3], at_start[0, :3], atol=1e-4)
    with pytest.raises(ValueError, match="bert_padding must be one of"):
        build("PaperBERT4Rec", tiny, bert_padding="middle")


def test_left_mask_padding_encodes_padding_as_visible_mask_tokens(tiny):
    _, _, _, model = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=6, bert_layers="paper", bert_padding="left_mask")
    model.eval()
    m = model.mask_token
    row = torch.tensor([[3, 4, m, 0, 0, 0]])
    with torch.no_grad():
        output = model.forward(row)
        model.bert_padding = "right"
        as_the_paper = model.forward(torch.tensor([[m, m, m, 3, 4, m]]))  # no padding left: nothing masked out
        model.bert_padding = "left"
        hidden_padding = model.forward(row)
    assert torch.allclose(output[0, :3], as_the_paper[0, 3:], atol=1e-6)
    assert not torch.allclose(output[0, :3], hidden_padding[0, :3], atol=1e-4), "left keeps padding out of attention"
