"""The losses of ``train_mode: all_positions`` window rows (``recbole_llm/data/windows.py`` builds the rows).

- Causal models (PaperSASRec, PaperGRU4Rec, LLM2 subclasses): RecBole's ``forward`` ends in
  ``gather_indexes(output, length - 1)``; the loss reads the output at every position by running that forward
  without the gather, then CE over the catalog (or BPR with one uniformly sampled negative) at every target.
- Cloze models (PaperBERT4Rec, LLM2BERT4Rec): the CE on masked slots only, with RecBole's masks or, on copied
  rows, masks drawn here as the paper's code draws them.
"""
from __future__ import annotations

import contextlib

import torch

from ..data.windows import MASK_LAST, TARGETS
from .cloze_predict import catalog_loss as cloze_catalog_loss
from .output_head import catalog_table
from .sampled_softmax import catalog_loss


@contextlib.contextmanager
def every_position(model):
    """Within the block, the model's ``forward`` returns [B, L, H]: RecBole's SASRec
    and GRU4Rec end their forward by gathering the last position, which becomes
    the identity here."""
    model.gather_indexes = lambda output, index: output
    try:
        yield model
    finally:
        del model.gather_indexes


def all_positions_loss(model, interaction) -> torch.Tensor:
    """Mean loss over every supervised position of the batch."""
    item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    targets = interaction[TARGETS]
    with every_position(model):
        output = model.forward(item_seq, item_seq_len)  # [B, L, H]
    supervised = targets > 0
    output, targets = output[supervised], targets[supervised]
    table = catalog_table(model)
    bias = getattr(model, "item_bias", None)  # output_bias: True
    if model.loss_type == "BPR":
        negatives = torch.randint(1, model.n_items, targets.shape, device=targets.device)
        pos = (output * table[targets]).sum(-1)
        neg = (output * table[negatives]).sum(-1)
        if bias is not None:
            pos, neg = pos + bias[targets], neg + bias[negatives]
        return model.loss_fct(pos, neg)
    return catalog_loss(model, output, targets, table, bias)


def copied_cloze_loss(model, interaction) -> torch.Tensor:
    """CE on the masks drawn here for copied window rows: the last item alone on mask-last copies, each item
    with probability ``mask_ratio`` on the others (a row that draws no mask adds nothing, as in the paper's
    code). Masks are drawn anew every epoch from torch's seeded generator."""
    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    last = interaction[MASK_LAST].bool()
    masked = (torch.rand(seq.shape, device=seq.device) < model.mask_ratio) & (seq > 0) & ~last.unsqueeze(1)
    rows = last.nonzero(as_tuple=True)[0]
    masked[rows, lengths[rows] - 1] = True
    if not masked.any():  # a small batch of random copies that drew no mask: nothing to learn, no NaN
        return model.forward(seq).sum() * 0.0
    rows, cols = masked.nonzero(as_tuple=True)
    states = model.cloze_states(seq.masked_fill(masked, model.mask_token), rows, cols)  # [N, H]
    return cloze_catalog_loss(model, states, seq[rows, cols])


def cloze_loss(model, interaction) -> torch.Tensor:
    """RecBole's BERT4Rec CE, computed on the masked slots only: RecBole scores the whole catalog for every one
    of ``int(mask_ratio * N)`` slots per row, empty ones included (18 per row at mask ratio 0.9 and N = 20,
    where a Beauty window has ~7 items), then multiplies the empty ones by 0. Same loss, a fraction of the
    work; slots at position 0 are left out, as RecBole does (its mask index 0 means padding)."""
    masked_index = interaction[model.MASK_INDEX]
    rows, slots = (masked_index > 0).nonzero(as_tuple=True)
    states = model.cloze_states(interaction[model.MASK_ITEM_SEQ], rows, masked_index[rows, slots])
    return cloze_catalog_loss(model, states, interaction[model.POS_ITEMS][rows, slots])
