"""Where BERT4Rec's prediction [MASK] goes (``bert_predict_mask``).

A cloze model predicts the next item as the item under a [MASK] placed after the
prompt. RecBole 1.2.1 (``BERT4Rec.reconstruct_test_data``) appends the mask and
then drops the first column of *every* row, so that a prompt shorter than the
window loses its first item: a 1-item prompt is predicted from the [MASK] alone,
a 2-item prompt from one item. Its rows are right-padded, so the dropped column
is a real item. The paper's code left-pads, so the column it drops is padding
unless the prompt fills the window.

- ``recbole`` (the default when the key is absent): RecBole's behaviour.
- ``after_prompt`` (the paper preset): the mask goes right after the prompt; the
  window shifts by one only when the prompt fills it, as in the paper's code.

Training is not affected; LLM2BERT4Rec inherits the choice from PaperBERT4Rec (RecBole's
BERT4Rec keeps its own behaviour).
"""
from __future__ import annotations

import torch

from .sampled_softmax import catalog_loss as sampled_or_full


def mask_after_prompt(item_seq: torch.Tensor, item_seq_len: torch.Tensor, mask_token: int):
    """Right-padded prompts [B, L] -> the same rows with [MASK] after the prompt, and the mask's index.
    A row whose prompt fills the window shifts left by one to make room."""
    rows, width = item_seq.shape
    extended = torch.cat([item_seq, item_seq.new_zeros(rows, 1)], dim=1)  # [B, L + 1]
    extended[torch.arange(rows, device=item_seq.device), item_seq_len] = mask_token
    full = item_seq_len >= width
    sequence = torch.where(full.unsqueeze(1), extended[:, 1:], extended[:, :-1])
    index = torch.where(full, torch.full_like(item_seq_len, width - 1), item_seq_len)
    return sequence, index


def catalog_scores(model, states: torch.Tensor) -> torch.Tensor:
    """BERT4Rec's tied output: each state [N, H] against every item of the catalog ([MASK] excluded), plus its
    output bias -> [N, n_items]. The one home of that product for our prediction and cloze losses."""
    return states @ model.item_embedding.weight[: model.n_items].T + model.output_bias


def catalog_loss(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE of ``catalog_scores(model, states)`` at ``targets`` (sampled with ``softmax_negatives``)."""
    return sampled_or_full(model, states, targets, model.item_embedding.weight[: model.n_items], model.output_bias)


def _state_at_mask(model, interaction) -> torch.Tensor:
    sequence, index = mask_after_prompt(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], model.mask_token)
    return model.gather_indexes(model.forward(sequence), index)  # [B, H]


def full_sort_after_prompt(model, interaction) -> torch.Tensor:
    return catalog_scores(model, _state_at_mask(model, interaction))


def predict_after_prompt(model, interaction) -> torch.Tensor:
    items = interaction[model.ITEM_ID]
    state = _state_at_mask(model, interaction)
    return (state * model.item_embedding(items)).sum(dim=1) + model.output_bias[items]
