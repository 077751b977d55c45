"""cloze_last_block: masked: the cloze losses' last encoder block at the masked positions only gives the full
block's states, losses and gradients, and draws the same random numbers."""
import dataclasses

import pytest
import torch
from conftest import build

from recbole_llm.model import cloze_states

LAYOUTS = [
    {"bert_padding": "right", "pack_sequences": False},
    {"bert_padding": "right", "pack_sequences": True},
    {"bert_padding": "left", "pack_sequences": True},
    {"bert_padding": "left_mask", "pack_sequences": True},  # every position real: packing has nothing to skip
    {"bert_padding": "left_mask", "pack_sequences": False, "bert_layers": "paper"},
    {"bert_padding": "left_mask", "pack_sequences": False, "bert_layers": "paper", "dropout_sampler": "uniform"},
]


def _model(tiny, model_name="PaperBERT4Rec", **layout):
    settings = dict(MAX_ITEM_LIST_LENGTH=6, n_layers=2, n_heads=2, train_mode="all_positions",
                    bert_mask_last_copies=1, bert_random_mask_copies=2, mask_ratio=0.5, hidden_dropout_prob=0.3,
                    attn_dropout_prob=0.2, **layout)
    _, _, (train, _, _), net = build(model_name, tiny, **settings)
    return next(iter(train)), net.double()


def _with(net, setting):
    net.settings = dataclasses.replace(net.settings, cloze_last_block=setting)
    return net


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training", [False, True])
def test_states_are_the_full_forwards_at_the_positions(tiny, layout, training):
    batch, net = _model(tiny, **layout)
    net.train(training)
    seq = batch["item_id_list"]
    rows, cols = ((seq > 0) & (torch.rand(seq.shape, generator=torch.Generator().manual_seed(1)) < 0.4)).nonzero(
        as_tuple=True)
    assert 0 < len(rows) < (seq > 0).sum()
    torch.manual_seed(0)
    full = net.forward(seq)[rows, cols]
    after_full = torch.get_rng_state()
    torch.manual_seed(0)
    calls = []
    original = cloze_states._last_block_at
    cloze_states._last_block_at = lambda *a: calls.append(1) or original(*a)
    try:
        states = _with(net, "masked").cloze_states(seq, rows, cols)
    finally:
        cloze_states._last_block_at = original
    assert calls == [1], "the shortcut ran"
    assert torch.equal(torch.get_rng_state(), after_full), "the same random draws as the full block"
    torch.testing.assert_close(states, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model_name", ["PaperBERT4Rec", "LLM2BERT4Rec"])
@pytest.mark.parametrize("layout", [LAYOUTS[1], LAYOUTS[4], LAYOUTS[5]])
def test_a_training_step_is_the_same(tiny, model_name, layout):
    """The copied cloze loss of one batch, full against masked: the same loss, the same gradient of every
    parameter, the same generator state after (so every later mask and dropout is the same too)."""
    batch, net = _model(tiny, model_name, **layout)
    net.train()
    results = {}
    for setting in ("all", "masked"):
        _with(net, setting).zero_grad()
        torch.manual_seed(0)
        loss = net.calculate_loss(batch)
        loss.backward()
        results[setting] = (loss.item(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None},
                            torch.get_rng_state())
    (full_loss, full_grads, full_rng), (loss, grads, rng) = results["all"], results["masked"]
    assert loss == pytest.approx(full_loss, rel=1e-12)
    assert grads.keys() == full_grads.keys() and grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)
    assert torch.equal(rng, full_rng)


def test_window_rows_with_recboles_masks_use_it_too(tiny):
    """Window rows without copies (RecBole's masks, MASK_INDEX slots): the same loss both ways."""
    from recbole_llm.data.windows import MASK_LAST, WINDOW_ROWS

    _, _, (train, _, _), net = build("PaperBERT4Rec", tiny, MAX_ITEM_LIST_LENGTH=6, n_layers=2,
                                     hidden_dropout_prob=0.3, train_mode="all_positions")
    batch = next(iter(train))
    assert WINDOW_ROWS in batch.interaction and MASK_LAST not in batch.interaction
    net = net.double().train()
    losses = []
    for setting in ("all", "masked"):
        torch.manual_seed(0)
        losses.append(_with(net, setting).calculate_loss(batch).item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-12)


def test_a_subclass_with_its_own_forward_gets_it(tiny, monkeypatch):
    from recbole_llm.model.sequential import PaperBERT4Rec

    batch, net = _model(tiny)
    net.eval()

    class Shifted(PaperBERT4Rec):
        def forward(self, item_seq):
            return super().forward(item_seq) + 1.0

    net.__class__ = Shifted
    seq = batch["item_id_list"]
    rows, cols = (seq > 0).nonzero(as_tuple=True)
    with torch.no_grad():
        torch.testing.assert_close(net.cloze_states(seq, rows, cols), net.forward(seq)[rows, cols])


def test_not_part_of_a_run_identity(tiny):
    from recbole_llm.checkpoints import config_hash

    masked = build("PaperBERT4Rec", tiny)[0]
    assert masked["cloze_last_block"] == "masked"
    assert config_hash(build("PaperBERT4Rec", tiny, cloze_last_block="all")[0]) == config_hash(masked)


def test_recboles_own_bert4rec_refuses_it(tiny):
    from recbole_llm.errors import SettingError

    with pytest.raises(SettingError, match="cloze_last_block"):
        build("BERT4Rec", tiny, cloze_last_block="masked")
