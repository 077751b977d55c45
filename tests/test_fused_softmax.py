"""The fused full softmax (``full_softmax: fused``): the plain CE's loss and gradients, in chunks."""
import pytest
import torch

from conftest import build
from recbole_llm.model.fused_softmax import chunk_rows, fused_cross_entropy


def _inputs(positions=53, items=97, width=8, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(positions, width, dtype=dtype, generator=generator, requires_grad=True)
    table = torch.randn(items, width, dtype=dtype, generator=generator, requires_grad=True)
    bias = torch.randn(items, dtype=dtype, generator=generator, requires_grad=True)
    targets = torch.randint(0, items, (positions,), generator=generator)
    return states, table, bias, targets


@pytest.mark.parametrize("rows", [1, 7, 53, 500])
@pytest.mark.parametrize("with_bias", [True, False])
def test_loss_and_gradients_are_the_plain_ones(rows, with_bias):
    states, table, bias, targets = _inputs()
    bias = bias if with_bias else None
    inputs = (states, table) + ((bias,) if with_bias else ())
    plain = torch.nn.functional.cross_entropy(states @ table.T + (0 if bias is None else bias), targets)
    fused = fused_cross_entropy(states, table, targets, bias, rows=rows)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    for want, got in zip(torch.autograd.grad(2.5 * plain, inputs), torch.autograd.grad(2.5 * fused, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("frozen", ["table", "states", "bias", "table+bias"])
def test_only_the_gradients_asked_for_are_made(frozen, monkeypatch):
    """A frozen table (``embedding_freeze``) or bias gets no gradient, and its product is not computed; the others
    are the plain loss's."""
    states, table, bias, targets = _inputs()
    named = {"states": states, "table": table, "bias": bias}
    for name in frozen.split("+"):
        named[name].requires_grad_(False)
    trained = [tensor for tensor in named.values() if tensor.requires_grad]
    plain = torch.nn.functional.cross_entropy(states @ table.T + bias, targets)
    products = []
    real_addmm_ = torch.Tensor.addmm_
    monkeypatch.setattr(torch.Tensor, "addmm_", lambda self, *a, **k: products.append(1) or real_addmm_(self, *a, **k))
    fused = fused_cross_entropy(states, table, targets, bias, rows=7)
    assert bool(products) == table.requires_grad  # the table's gradient product runs only where it is trained
    for want, got in zip(torch.autograd.grad(plain, trained), torch.autograd.grad(fused, trained)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradients_flow_through_a_computed_table():
    """An LLM2/LLM-ESR table is computed from parameters (a projection of frozen embeddings): its gradient
    reaches them."""
    states, table, _, targets = _inputs(dtype=torch.float32)
    projection = torch.randn(8, 8, requires_grad=True)
    for loss in (torch.nn.functional.cross_entropy(states @ (table @ projection).T, targets),
                 fused_cross_entropy(states, table @ projection, targets, rows=10)):
        loss.backward()
    fused_grad = projection.grad.clone()
    projection.grad = None
    torch.nn.functional.cross_entropy(states @ (table @ projection).T, targets).backward()
    torch.testing.assert_close(fused_grad - projection.grad, projection.grad, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_stays_close_to_fp32():
    states, table, bias, targets = _inputs(positions=300, items=400, width=32, dtype=torch.float32)
    plain = torch.nn.functional.cross_entropy(states @ table.T + bias, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_cross_entropy(states, table, targets, bias, rows=64)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(plain.item(), rel=2e-2)
    grads = torch.autograd.grad(fused, (states, table, bias))
    assert [g.dtype for g in grads] == [torch.float32] * 3
    want = torch.autograd.grad(plain, (states, table, bias))
    for got, expected in zip(grads, want):
        assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99
    with torch.autocast("cpu", dtype=torch.bfloat16):  # against the plain loss under the same autocast: closer
        plain_bf16 = torch.nn.functional.cross_entropy(states @ table.T + bias, targets)
    assert fused.item() == pytest.approx(plain_bf16.item(), rel=1e-4)


def test_without_grad_mode_the_loss_alone():
    states, table, bias, targets = _inputs()
    with torch.no_grad():
        loss = fused_cross_entropy(states, table, targets, bias, rows=5)
        plain = torch.nn.functional.cross_entropy(states @ table.T + bias, targets)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-12)


def test_memory_is_bounded_by_the_chunk():
    assert chunk_rows(12_101) == 256
    assert chunk_rows(1_000_000) * 1_000_000 * 4 <= 16 * 2**20
    assert chunk_rows(10**9) == 1


@pytest.mark.parametrize("model, extra", [
    ("PaperSASRec", {"train_mode": "all_positions", "output_bias": True}),
    ("PaperSASRec", {"train_mode": "prefixes"}),
    ("PaperGRU4Rec", {"train_mode": "all_positions"}),
    ("PaperBERT4Rec", {"train_mode": "all_positions", "bert_mask_last_copies": 1, "bert_random_mask_copies": 1}),
])
def test_a_model_step_is_the_same_fused(tiny, model, extra):
    """One training step of the same model on the same batch (dropout and masks seeded alike), plain against
    fused: the same loss and the same gradient for every parameter."""
    import dataclasses


    _, _, (train, _, _), net = build(model, tiny, **extra)
    batch = next(iter(train))
    net.train()
    losses, grads = {}, {}
    for setting in ("plain", "fused"):
        net.settings = dataclasses.replace(net.settings, full_softmax=setting)
        net.zero_grad()
        torch.manual_seed(0)
        loss = net.calculate_loss(batch)
        loss.backward()
        losses[setting] = loss.item()
        grads[setting] = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    assert losses["fused"] == pytest.approx(losses["plain"], rel=1e-5)
    assert grads["fused"].keys() == grads["plain"].keys() and grads["plain"]
    for name, grad in grads["plain"].items():
        torch.testing.assert_close(grads["fused"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fused_is_used_where_asked(tiny, monkeypatch):
    """The check above would pass if neither path were fused: count the calls."""
    from recbole_llm.model import fused_softmax

    calls = []
    original = fused_softmax.FusedCatalogCrossEntropy.apply
    monkeypatch.setattr(fused_softmax.FusedCatalogCrossEntropy, "apply", lambda *a: calls.append(1) or original(*a))
    _, _, (train, _, _), net = build("PaperSASRec", tiny, train_mode="all_positions")  # the default: fused
    net.train()
    net.calculate_loss(next(iter(train))).backward()
    assert calls == [1]
    _, _, (train, _, _), net = build("PaperSASRec", tiny, train_mode="all_positions", full_softmax="plain")
    net.train()
    net.calculate_loss(next(iter(train))).backward()
    assert calls == [1]


def test_the_fused_loss_does_not_change_a_run_identity(tiny):
    """Like the thread count, the fused loss computes the same numbers up to float rounding: a run made with the plain
    one is current for the fused one (not trained again), and so are committed runs made before it existed."""
    from recbole_llm.checkpoints import config_hash

    plain = build("PaperSASRec", tiny, full_softmax="plain", train_keep_freed_memory=False)[0]
    fused = build("PaperSASRec", tiny)[0]
    assert fused["full_softmax"] == "fused" and config_hash(plain) == config_hash(fused)
    assert config_hash(build("PaperSASRec", tiny, softmax_negatives=5)[0]) != config_hash(fused)
