"""The states a cloze loss reads, with the encoder's last block run at those positions only (``cloze_last_block``).

A cloze loss reads the model's output at the masked positions only. Every block but the last must run on every
position (each position's keys and values feed the next block's attention), but the last block's attention
output, feed-forward and the head after the encoder are per-position work that no loss reads except at the
masked positions (its attention still runs everywhere: queries are a twelfth of a block, and the L x L attention
of a row is cheap). On the paper's LLM2BERT4Rec (2 blocks, left-padded 20-position windows whose padding is
encoded, mask ratio 0.65) about a quarter of the positions are masked, so the last block costs its queries, keys
and values plus a quarter of the rest.

- ``masked`` (PaperBERT4Rec's default): ``states_at`` computes the last block at the masked positions only. The
  values are ``model.forward(seq)[rows, cols]``'s up to float rounding, and so are the gradients; each dropout
  still draws its noise for the whole block (then reads the masked rows' share), so the random stream, and with
  it every later mask and dropout of a seeded run, is the one the full block draws on the CPU
  (tests/test_cloze_states.py; on a GPU torch's fused dropout kernel draws otherwise: same distribution).
  Like the thread count it is not part of a run's identity.
- ``all``: the whole last block, as RecBole computes it.

``states_at`` mirrors PaperBERT4Rec's ``forward`` (RecBole's BERT4Rec's, through ``bert_layers.forward_padded``):
PaperBERT4Rec's ``cloze_states`` calls it only where that is the model's forward, so a subclass that replaces
``forward`` gets its own forward, whole.
"""
from __future__ import annotations

import torch

from . import bert_layers
from .dropout import dropout_noise
from .packed_encoder import PackedTransformerEncoder, attention_context, packed_layer, real_positions


def _dropout_at(dropout: torch.nn.Dropout, values: torch.Tensor, full_shape, index) -> torch.Tensor:
    """``dropout`` applied to the whole [*full_shape] tensor, read at ``index``: its noise drawn for the full
    shape (``dropout.dropout_noise``), so it draws what the full block draws."""
    if not dropout.training or dropout.p == 0:
        return values
    return values * dropout_noise(dropout, full_shape, values.dtype, values.device)[index]


def _last_block_at(layer, hidden: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                   cols: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """RecBole's ``TransformerLayer.forward`` (``MultiHeadAttention`` then ``FeedForward``) read at (rows, cols):
    the attention runs on every position (cheap: L x L per row, and its dropout draws as RecBole's), the
    attention output, its LayerNorm and the feed-forward on the selected positions only. ``hidden`` is [B, L, H],
    or with ``keep`` ([B, L], a packed encoder's real positions) the packed [N, H]."""
    att, ff = layer.multi_head_attention, layer.feed_forward
    length = attention_mask.shape[-1]
    flat = rows * length + cols  # the selected positions among the block's rows ([B * L, H] unpacked)
    if keep is None:
        hidden_rows = hidden.reshape(-1, hidden.shape[-1])
    else:  # packed: [N_real, H]
        flat, hidden_rows = (keep.reshape(-1).cumsum(0) - 1)[flat], hidden
    context = attention_context(att, hidden, keep, attention_mask)  # one row per position, as hidden_rows
    noise_shape = tuple(hidden_rows.shape)  # dropout noise as the full block draws it, one row per position
    selected = hidden_rows.index_select(0, flat)  # [N, H]
    dense = att.dense(context.index_select(0, flat))
    attended = att.LayerNorm(_dropout_at(att.out_dropout, dense, noise_shape, flat) + selected)
    inner = ff.dense_2(ff.intermediate_act_fn(ff.dense_1(attended)))
    return ff.LayerNorm(_dropout_at(ff.dropout, inner, noise_shape, flat) + attended)


def states_at(model, item_seq: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``model.forward(item_seq)[rows, cols]`` ([N, H]; RecBole's right-padded positions), the last block run at
    those positions only unless ``cloze_last_block: all``."""
    if model.settings.cloze_last_block == "all":
        return model.forward(item_seq)[rows, cols]
    seq, shift = bert_layers.encoder_layout(model, item_seq)
    if shift is not None:
        cols = (cols + shift[rows, 0]) % item_seq.shape[1]
    # RecBole 1.2.1's BERT4Rec.forward up to its encoder
    position_ids = torch.arange(seq.size(1), dtype=torch.long, device=seq.device).unsqueeze(0).expand_as(seq)
    hidden = model.dropout(model.LayerNorm(model.item_embedding(seq) + model.position_embedding(position_ids)))
    attention_mask = model.get_attention_mask(seq, bidirectional=True)
    encoder, keep = model.trm_encoder, None
    if isinstance(encoder, PackedTransformerEncoder):
        keep = real_positions(attention_mask, seq.shape[1])
        if bool(keep.all()):
            keep = None
        else:
            hidden = hidden[keep]
    for layer in encoder.layer[:-1]:
        hidden = layer(hidden, attention_mask) if keep is None else packed_layer(layer, hidden, keep, attention_mask)
    states = _last_block_at(encoder.layer[-1], hidden, attention_mask, rows, cols, keep)
    return model.output_ln(model.output_gelu(model.output_ffn(states)))
