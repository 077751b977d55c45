"""Full-catalog softmax cross-entropy with a fused gradient.

Every trained model of the paper preset ends in the same step: states [N, H]
against the whole item table [V, H] (plus a per-item bias), softmax, CE. Done
with ``F.cross_entropy`` on the logits, torch's CPU backward of ``log_softmax``
and the bias add each pass over the [N, V] matrix several times; on Beauty
(V = 12,101) they took ~40% of a BERT4Rec step, more than the three catalog
matrix products. The gradient of the mean CE w.r.t. the logits is simply
``(softmax - onehot) / N``: computed once in the forward, in place over the
logits buffer (fresh [N, V] buffers are what costs most on CPU), it leaves the
backward with the matrix products alone. Same loss and
gradients (up to float rounding); ``tests/test_catalog_softmax.py`` checks both.
"""
from __future__ import annotations

import torch


def _at_least_fp32(tensor):
    """The in-place softmax over 12k items needs fp32: half-precision inputs are computed in float."""
    if tensor is not None and tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


class _CatalogCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, table, bias, targets):
        ctx.dtypes = states.dtype, table.dtype, None if bias is None else bias.dtype
        states, table, bias = (_at_least_fp32(t) for t in (states, table, bias))  # e.g. under autocast
        logits = states @ table.T  # [N, V]
        if bias is not None:
            logits += bias  # in place: addmm's broadcast copy of the bias costs as much as a pass
        # softmax in place: one [N, V] buffer in all (torch's log_softmax allocates another and is slow on CPU)
        logits -= logits.amax(dim=1, keepdim=True)
        rows = torch.arange(len(targets), device=targets.device)
        target_logits = logits[rows, targets]
        logits.exp_()
        totals = logits.sum(dim=1)
        loss = (totals.log() - target_logits).mean()
        grad_logits = logits.mul_((1.0 / (totals * len(targets))).unsqueeze(1))  # softmax / N
        grad_logits[rows, targets] -= 1.0 / len(targets)
        ctx.save_for_backward(states, table, grad_logits)
        ctx.has_bias = bias is not None
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        states, table, grad_logits = ctx.saved_tensors
        # the loss is a scalar: scale the small products, never the [N, V] matrix
        grad_states = (grad_logits @ table) * grad_loss if ctx.needs_input_grad[0] else None
        grad_table = (grad_logits.T @ states) * grad_loss if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits.sum(0) * grad_loss if ctx.has_bias and ctx.needs_input_grad[2] else None
        grads = grad_states, grad_table, grad_bias
        return (*(None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)), None)


def catalog_cross_entropy(states: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                          targets: torch.Tensor) -> torch.Tensor:
    """Mean CE of ``softmax(states @ table.T + bias)`` at ``targets`` ([N, H], [V, H], [V] or None, [N])."""
    if len(targets) == 0:
        return (states.sum() + table.sum()) * 0.0
    return _CatalogCrossEntropy.apply(states, table, bias, targets)
