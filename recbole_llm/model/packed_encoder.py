"""Transformer encoding of the real items only (``pack_sequences``).

RecBole's ``TransformerEncoder`` runs every linear layer on every position of a
padded [B, L, H] batch. A Beauty window holds ~8 items in 20 positions, so most
of that work is on padding, whose outputs no loss or prediction reads: the cloze
losses read masked items, prediction reads the [MASK] after the prompt (or, in
SASRec, the last item), ``all_positions`` reads positions with a target.

With ``pack_sequences: True`` the per-position layers (query / key / value,
attention output, LayerNorms, feed-forward, dropouts) run on the real positions
gathered into [N, H]; only the attention itself sees the padded layout, with
RecBole's own mask. Real positions get RecBole's values (the same parameters and
operations); padding positions come out as zeros. Seconds per training step on
Beauty's presets, side by side: LLM2BERT4Rec (2 layers of 382, its size then) 1.82x faster on
one thread, 1.65x on two; BERT4Rec (1 layer of 192, the catalog softmax
dominates) 1.22x (``python -m benchmarks.packed_encoder_speed``). Dropout draws
fewer random numbers, so a seeded run is not bit-identical to one without packing.

Off by default; on in LLM2BERT4Rec's model defaults. PaperSASRec and
PaperBERT4Rec (and their LLM2 subclasses) read the key; RecBole's classes never
see it.
"""
from __future__ import annotations

import torch
from recbole.model.layers import TransformerEncoder


def real_positions(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """[B, L] bool: the positions that attend to themselves under RecBole's additive mask ([B, 1, 1, L]
    bidirectional or [B, 1, L, L] causal; 0 where attention is allowed), i.e. the non-padding ones."""
    mask = attention_mask[:, 0].expand(-1, length, length)
    return mask.diagonal(dim1=-2, dim2=-1) == 0


def _padded(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[N, H] values of the real positions -> [B, L, H], zeros on padding."""
    return values.new_zeros(keep.shape + values.shape[-1:]).masked_scatter(keep.unsqueeze(-1), values)


def attention_context(att, hidden: torch.Tensor, keep: torch.Tensor | None,
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """RecBole's ``MultiHeadAttention.forward`` up to its context (before ``dense``), one row per position the
    layer computes: with ``keep`` ([B, L]) the linear layers run on the packed real positions [N, H] -> [N, H];
    without, on every position of [B, L, H] -> [B * L, H]."""
    batch, length = attention_mask.shape[0], attention_mask.shape[-1]

    def heads(linear):  # [B, heads, L, head size]
        values = linear(hidden) if keep is None else _padded(linear(hidden), keep)
        return values.view(batch, length, att.num_attention_heads, att.attention_head_size).transpose(1, 2)

    query, key, value = heads(att.query), heads(att.key), heads(att.value)
    scores = query @ key.transpose(-1, -2) / att.sqrt_attention_head_size + attention_mask
    probs = att.attn_dropout(att.softmax(scores))
    context = (probs @ value).transpose(1, 2).reshape(batch, length, att.all_head_size)
    return context.reshape(batch * length, att.all_head_size) if keep is None else context[keep]


def _attention(att, hidden: torch.Tensor, keep: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """RecBole's ``MultiHeadAttention.forward`` with its linear layers on the real positions only."""
    return att.LayerNorm(att.out_dropout(att.dense(attention_context(att, hidden, keep, attention_mask))) + hidden)


def _feed_forward(ff, hidden: torch.Tensor) -> torch.Tensor:
    return ff.LayerNorm(ff.dropout(ff.dense_2(ff.intermediate_act_fn(ff.dense_1(hidden)))) + hidden)


def packed_layer(layer, hidden: torch.Tensor, keep: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """RecBole's ``TransformerLayer.forward`` on the packed real positions [N, H]."""
    return _feed_forward(layer.feed_forward, _attention(layer.multi_head_attention, hidden, keep, attention_mask))


class PackedTransformerEncoder(torch.nn.Module):
    """A RecBole ``TransformerEncoder``'s own layers (the same parameters, under the same state-dict names),
    with the per-position layers run on the real positions only."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.layer = encoder.layer

    def forward(self, hidden_states, attention_mask, output_all_encoded_layers=True):
        keep = real_positions(attention_mask, hidden_states.shape[1])
        if bool(keep.all()):  # nothing to pack (e.g. bert_padding: left_mask encodes its padding): RecBole's loop
            return TransformerEncoder.forward(self, hidden_states, attention_mask, output_all_encoded_layers)
        hidden = hidden_states[keep]  # [N, H]
        layers = []
        for layer in self.layer:
            hidden = packed_layer(layer, hidden, keep, attention_mask)
            if output_all_encoded_layers:
                layers.append(_padded(hidden, keep))
        return layers if output_all_encoded_layers else [_padded(hidden, keep)]


def pack_encoder(model, settings) -> None:
    """``pack_sequences: True``: the model's ``trm_encoder`` becomes its packed version (same parameters)."""
    if settings.pack_sequences:
        model.trm_encoder = PackedTransformerEncoder(model.trm_encoder)
