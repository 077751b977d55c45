"""RecBole's feed-forward GELU as torch's one kernel.

RecBole 1.2.1's ``FeedForward.gelu`` writes the exact GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))``: five elementwise
passes over the [positions x inner size] activations and as many in backward (under bf16 autocast each one rounds
to bf16). ``torch.nn.functional.gelu`` (``approximate='none'``) is the same function in one pass, computed in fp32
internally. ``feed_forward_gelu: fused`` (PaperSASRec's and PaperBERT4Rec's default) takes it: the same values up
to float rounding (tests/test_fused_gelu.py), about 5% of LLM2BERT4Rec's bf16 step (timed by hand, no committed
benchmark; its FFN is 896 wide); like the thread count it is not part of a run's identity. ``recbole`` keeps RecBole's, for bit-for-bit agreement with RecBole.
"""
from __future__ import annotations

import torch
from recbole.model.layers import FeedForward


def fuse_gelu(model: torch.nn.Module, settings) -> None:
    """``feed_forward_gelu: fused``: every RecBole ``FeedForward`` of ``model`` whose activation is RecBole's GELU
    takes torch's instead."""
    if settings.feed_forward_gelu != "fused":
        return
    for module in model.modules():
        if isinstance(module, FeedForward) and getattr(module.intermediate_act_fn, "__func__", None) is FeedForward.gelu:
            module.intermediate_act_fn = torch.nn.functional.gelu
