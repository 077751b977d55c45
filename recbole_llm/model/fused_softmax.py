"""The exact full-catalog cross-entropy without the [positions x catalog] tensors (``full_softmax: fused``).

The plain loss, ``cross_entropy(states @ table.T + bias, targets)``, writes the logits, the bias sum, their
log-softmax and, in backward, the gradient of each: [M x N] tensors (on Beauty's LLM2SASRec batch, ~3,100
supervised positions x 12,101 items, 150 MB each) that go through main memory several times while the matrix
work per element is small. Profiled on one core (PaperSASRec, the paper preset), the log-softmax and its backward
took 17% of a step, as much as a third of the matrix products.

Here the loss walks the positions in chunks of ``rows`` and, per chunk, makes the logits, their softmax and the
softmax's gradient ``p - onehot(target)`` in one cache-sized buffer, then multiplies that buffer into both
gradients at once (``grad_states = g @ table``, ``grad_table += g.T @ states``). Since the loss is a scalar,
the gradients are made in the forward pass (scaled by the incoming gradient in backward), so the catalog
product is computed once, as in the plain loss: the same three matrix products (only the gradients asked for:
a frozen table's is skipped), the same values up to float rounding (tested against the plain loss), and memory
bounded by ``rows x catalog`` whatever the batch. This is the fused linear cross-entropy of Liger-Kernel and
Apple's Cut Cross-Entropy, for the CPU.

Under CPU bf16 autocast the products run in bf16 (as the plain loss's would) and the softmax in fp32. Measured
side by side (``benchmarks/results/profile/fused_softmax_speed.json``, ``train_speed_stop53.json``): training steps
1.05-1.27x faster in fp32 on the paper preset's SASRec and LLM2BERT4Rec (a wash, 0.90-1.05x, at LLM2SASRec's 384-d)
and 1.19-1.56x in bf16.
"""
from __future__ import annotations

import torch

CHUNK_BYTES = 16 * 2**20  # a chunk's fp32 logits at most: memory stays bounded on a catalog of millions
MAX_ROWS = 256  # on Beauty's catalog 128-256 rows per chunk measured fastest (fused_softmax_speed.json)


def chunk_rows(n_items: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Positions per chunk: ``MAX_ROWS``, fewer where a chunk's [rows x catalog] fp32 logits would pass
    ``chunk_bytes``."""
    return max(1, min(MAX_ROWS, chunk_bytes // (4 * max(1, n_items))))


def _matmul_dtype(tensor: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(tensor.device.type):
        return torch.get_autocast_dtype(tensor.device.type)
    return tensor.dtype


class FusedCatalogCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``states @ table.T (+ bias)`` at ``targets``; gradients for states, table and bias."""

    @staticmethod
    def forward(ctx, states, table, bias, targets, rows):
        compute = _matmul_dtype(states)
        with torch.autocast(states.device.type, enabled=False):
            s, t = states.to(compute), table.to(compute)
            count = states.shape[0]
            acc = torch.promote_types(states.dtype, torch.float32)  # fp32, or fp64 where the inputs are
            # only the gradients asked for: a frozen table (embedding_freeze) skips its product, a third of the work
            need_states, need_table, need_bias = ctx.needs_input_grad[:3]
            grad_states = torch.empty(states.shape, dtype=acc, device=states.device) if need_states else None
            grad_table = torch.zeros(table.shape, dtype=acc, device=table.device) if need_table else None
            grad_bias = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_bias else None
            bias32 = None if bias is None else bias.to(acc)
            total = torch.zeros((), dtype=torch.float64, device=states.device)
            for start in range(0, count, rows):
                stop = min(start + rows, count)
                chunk, target = s[start:stop], targets[start:stop]
                if bias32 is not None and compute == acc:
                    logits = torch.addmm(bias32, chunk, t.T)
                else:  # in bf16 the bias is added in fp32, as the plain loss adds it to autocast's bf16 logits
                    logits = (chunk @ t.T).to(acc)
                    if bias32 is not None:
                        logits += bias32
                top = logits.amax(dim=1, keepdim=True)
                picked = logits.gather(1, target.unsqueeze(1))
                # one exponential pass, in the logits' buffer: exp(logits - top), its row sums give the log-sum-exp
                logits.sub_(top).exp_()
                sums = logits.sum(dim=1, keepdim=True)
                total += (sums.log() + top - picked).sum(dtype=torch.float64)
                if not (need_states or need_table or need_bias):
                    continue
                # the softmax's gradient over the mean, in place: exp(...) / sums / count - onehot(target) / count
                logits.mul_(sums.reciprocal_().div_(count))
                logits[torch.arange(stop - start, device=logits.device), target] -= 1.0 / count
                if grad_bias is not None:
                    grad_bias += logits.sum(0)
                g = logits.to(compute)
                if grad_states is not None:
                    grad_states[start:stop] = g @ t
                if grad_table is None:
                    continue
                if compute == acc:
                    grad_table.addmm_(g.T, chunk)
                else:
                    grad_table += g.T @ chunk
        ctx.save_for_backward(grad_states, grad_table, grad_bias)
        ctx.dtypes = (states.dtype, table.dtype, None if bias is None else bias.dtype)
        return (total / count).to(acc)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_states, grad_table, grad_bias = ctx.saved_tensors
        s_dtype, t_dtype, b_dtype = ctx.dtypes
        out_states = None if grad_states is None else (grad_states * grad_loss).to(s_dtype)
        out_table = None if grad_table is None else (grad_table * grad_loss).to(t_dtype)
        out_bias = None if grad_bias is None else (grad_bias * grad_loss).to(b_dtype)
        return out_states, out_table, out_bias, None, None


def fused_cross_entropy(states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                        bias: torch.Tensor | None = None, rows: int | None = None) -> torch.Tensor:
    """``cross_entropy(states @ table.T + bias, targets)`` (mean), chunked and fused; ``rows`` per chunk (default:
    ``chunk_rows`` of the catalog)."""
    if states.shape[0] == 0:
        return (states.sum() + table.sum()) * 0.0
    if not torch.is_grad_enabled():  # nothing will call backward: the loss alone, chunked
        rows = rows or chunk_rows(table.shape[0])
        total = sum(torch.nn.functional.cross_entropy(
            states[i:i + rows] @ table.T + (0 if bias is None else bias), targets[i:i + rows], reduction="sum")
            for i in range(0, states.shape[0], rows))
        return total / states.shape[0]
    return FusedCatalogCrossEntropy.apply(states, table, bias, targets, rows or chunk_rows(table.shape[0]))
