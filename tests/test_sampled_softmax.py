"""Sampled softmax (``softmax_negatives``): exact where it can be checked by hand, learns, evaluation stays full."""
import math

import pytest
import torch
from conftest import build

from recbole_llm.model.sampled_softmax import CatalogSampler


def _fixed(sampler, negatives):
    sampler.draw = lambda device: torch.as_tensor(negatives)
    return sampler


def test_sampled_ce_is_the_corrected_softmax_over_target_and_negatives():
    torch.manual_seed(0)
    states, table = torch.randn(3, 4), torch.randn(10, 4)
    targets = torch.tensor([1, 2, 3])
    counts = torch.arange(10.0)
    sampler = _fixed(CatalogSampler(10, 3, "popularity", counts=counts), [2, 5, 7])
    q = sampler.probability
    loss = sampler(states, targets, table)
    expected = []
    for row, target in enumerate(targets.tolist()):
        candidates = [target] + [n for n in (2, 5, 7) if n != target]  # the target's own draw is masked
        logits = torch.stack([states[row] @ table[c] - math.log(3 * q[c]) for c in candidates])
        expected.append(-torch.log_softmax(logits, 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_a_negative_equal_to_every_target_leaves_nothing_to_push_down():
    sampler = _fixed(CatalogSampler(10, 2), [4, 4])
    loss = sampler(torch.randn(2, 3), torch.tensor([4, 4]), torch.randn(10, 3))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gbce_with_t_zero_is_plain_bce_and_t_one_weights_the_positive_by_the_sampling_rate():
    torch.manual_seed(1)
    states, table, targets = torch.randn(2, 4), torch.randn(10, 4), torch.tensor([1, 2])
    plain = _fixed(CatalogSampler(10, 3, loss="gbce", gbce_t=0.0), [3, 4, 5])(states, targets, table)
    pos = (states * table[targets]).sum(-1)
    neg = states @ table[[3, 4, 5]].T
    bce = (-torch.nn.functional.logsigmoid(pos) - torch.nn.functional.logsigmoid(-neg).sum(-1)).mean()
    assert torch.allclose(plain, bce, atol=1e-5)
    calibrated = _fixed(CatalogSampler(10, 3, loss="gbce", gbce_t=1.0), [3, 4, 5])(states, targets, table)
    alpha = 3 / 8  # beta = alpha (t (1 - 1/alpha) + 1/alpha) = alpha at t = 1: 3 of the 8 non-targets sampled
    expected = (-alpha * torch.nn.functional.logsigmoid(pos) - torch.nn.functional.logsigmoid(-neg).sum(-1)).mean()
    assert torch.allclose(calibrated, expected, atol=1e-5)


@pytest.mark.parametrize("bad, match", [({"negatives": 0}, "softmax_negatives"), ({"sampler": "zipf"}, "sampler"),
                                        ({"loss": "bpr"}, "softmax_loss"), ({"gbce_t": 2.0}, "gbce_t")])
def test_bad_settings_are_refused(bad, match):
    settings = {"negatives": 3, **bad}
    with pytest.raises(ValueError, match=match):
        CatalogSampler(10, **settings)


@pytest.mark.parametrize("model, extra", [
    ("PaperSASRec", {"train_mode": "all_positions"}),
    ("PaperSASRec", {"train_mode": "prefixes", "output_bias": True}),
    ("PaperGRU4Rec", {"train_mode": "all_positions", "softmax_loss": "gbce"}),
    ("PaperBERT4Rec", {"train_mode": "all_positions", "bert_mask_last_copies": 1, "bert_random_mask_copies": 1,
                  "softmax_sampler": "popularity"}),
])
def test_models_learn_with_sampled_softmax_and_rank_the_full_catalog(tiny, model, extra):
    config, _, (train, _, test), net = build(model, tiny, softmax_negatives=5, **extra)
    assert net.catalog_sampler is not None and net.catalog_sampler.negatives == 5
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    batch = next(iter(train))
    net.train()
    losses = []
    for _ in range(30):
        loss = net.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and sum(losses[-5:]) < sum(losses[:5]), losses
    net.eval()
    with torch.no_grad():
        scores = net.full_sort_predict(next(iter(test))[0])
    assert scores.shape[-1] == net.n_items


def test_the_default_is_the_exact_full_softmax(tiny):
    _, _, (train, _, _), net = build("PaperSASRec", tiny, train_mode="all_positions")
    assert net.catalog_sampler is None
    from recbole_llm.data.windows import TARGETS
    from recbole_llm.model.position_losses import every_position

    batch = next(iter(train))
    net.eval()  # no dropout: the two passes must see the same network
    with every_position(net):
        output = net.forward(batch[net.ITEM_SEQ], batch[net.ITEM_SEQ_LEN])
    targets = batch[TARGETS]
    full = torch.nn.functional.cross_entropy(output[targets > 0] @ net.item_embedding.weight.T, targets[targets > 0])
    assert torch.allclose(net.calculate_loss(batch), full, atol=1e-6)


def test_bf16_training_is_refused_where_the_cpu_lacks_it(tiny, monkeypatch):
    from recbole_llm.llm import precision as states

    monkeypatch.setattr(states, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="enable_amp=True trains in bf16"):
        build("PaperSASRec", tiny, enable_amp=True)


@pytest.mark.skipif(not __import__("recbole_llm.llm.precision", fromlist=["x"]).cpu_has_native_bf16(),
                    reason="no native bf16 on this CPU")
def test_bf16_training_steps_learn(tiny):
    from recbole_llm.registry import get_trainer

    config, _, (train, valid, _), net = build("PaperSASRec", tiny, enable_amp=True, train_mode="all_positions",
                                              softmax_negatives=5, epochs=3)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    losses = [trainer._train_epoch(train, epoch) for epoch in range(3)]
    assert all(math.isfinite(float(x)) for x in losses) and float(losses[-1]) < float(losses[0])


def test_a_full_softmax_that_cannot_fit_is_refused_up_front_naming_the_sampled_one(tiny):
    from recbole_llm.prepare import catalog_loss_bytes

    with pytest.raises(ValueError, match=r"catalog scores .* set softmax_negatives"):
        build("PaperSASRec", tiny, train_mode="all_positions", memory_budget_gb=1e-5)
    build("PaperSASRec", tiny, train_mode="all_positions", memory_budget_gb=1e-5, softmax_negatives=2,
          train_batch_size=2)  # the sampled softmax fits the same budget
    config = {"train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 20, "train_mode": "all_positions"}
    assert catalog_loss_bytes(config, 1_000_000) == 256 * 20 * 1_000_000 * 12  # ~57 GiB: refused on this machine
    assert catalog_loss_bytes({**config, "softmax_negatives": 255}, 1_000_000) == 256 * 20 * 256 * 12
    # the fused full softmax holds one chunk of at most 16 MB of logits (and its bf16 cast), whatever the batch
    assert catalog_loss_bytes({**config, "full_softmax": "fused"}, 1_000_000) == 4 * 1_000_000 * 4 * 2


def test_the_default_memory_budget_is_shared_by_the_runs_side_by_side(monkeypatch):
    import os
    from types import SimpleNamespace

    from recbole_llm.prepare import check_catalog_memory

    config = {"model": "PaperSASRec", "train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 20,
              "train_mode": "all_positions"}
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    dataset = SimpleNamespace(item_num=int(0.6 * machine / (256 * 20 * 12)))  # 60% of the machine's memory
    monkeypatch.delenv("RECBOLE_LLM_RUNS_SIDE_BY_SIDE", raising=False)
    check_catalog_memory(config, dataset)  # alone: within 80%
    monkeypatch.setenv("RECBOLE_LLM_RUNS_SIDE_BY_SIDE", "2")
    with pytest.raises(ValueError, match="memory_budget_gb"):
        check_catalog_memory(config, dataset)  # one of two runs: 40% each
