"""The fused full-catalog CE gives torch's loss and gradients."""
import pytest
import torch

from recbole_llm.model.catalog_softmax import catalog_cross_entropy


@pytest.mark.parametrize("with_bias", [True, False])
def test_loss_and_gradients_match_torch(with_bias):
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(37, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    table = torch.randn(50, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, generator=generator, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 50, (37,), generator=generator)
    weights = torch.randn(37, 8, generator=generator, dtype=torch.float64)

    def upstream(loss_fn):  # the table also feeds the states, as SASRec's tied input does
        return 3.0 * loss_fn(states * weights + table[targets] * 0.5, table, bias, targets)

    def reference(s, t, b, y):
        logits = s @ t.T
        return torch.nn.functional.cross_entropy(logits if b is None else logits + b, y)

    params = [states, table] + ([bias] if with_bias else [])
    expected_loss = upstream(reference)
    expected = torch.autograd.grad(expected_loss, params)
    loss = upstream(catalog_cross_entropy)
    got = torch.autograd.grad(loss, params)
    assert torch.allclose(loss, expected_loss, atol=1e-12)
    for ours, theirs in zip(got, expected):
        assert torch.allclose(ours, theirs, atol=1e-12)


def test_no_targets_is_a_zero_loss_with_gradients():
    states = torch.randn(0, 4, requires_grad=True)
    table = torch.randn(6, 4, requires_grad=True)
    loss = catalog_cross_entropy(states, table, None, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss) == 0.0 and table.grad is not None


def test_half_precision_inputs_get_gradients_in_their_own_dtype():
    states = torch.randn(5, 4, dtype=torch.bfloat16, requires_grad=True)
    table = torch.randn(7, 4, dtype=torch.bfloat16, requires_grad=True)
    loss = catalog_cross_entropy(states, table, None, torch.tensor([0, 1, 2, 3, 6]))
    loss.backward()
    expected = torch.nn.functional.cross_entropy(states.detach().float() @ table.detach().float().T,
                                                 torch.tensor([0, 1, 2, 3, 6]))
    assert torch.isclose(loss.float(), expected, atol=1e-5)
    assert states.grad.dtype == torch.bfloat16 and table.grad.dtype == torch.bfloat16
