"""The paper's BERT4Rec layers around RecBole's encoder (``bert_layers``).

RecBole 1.2.1's BERT4Rec applies LayerNorm and dropout to the summed item +
position embeddings before its encoder and ends in Linear -> GELU -> LayerNorm,
all initialised from N(0, 0.02). The paper's Keras BERT (dh-r/LLM-Sequential-
Recommendation: ``EmbeddingLayer``, ``TransformerEncoderLayer``, ``ProjectionHead``)
feeds the plain sum to the encoder, ends in Dense -> GELU, and starts from Keras'
initialisers: Glorot-uniform kernels, zero biases, embeddings uniform in +-0.05.
Its encoder blocks have RecBole's post-norm layout; its attention has no dropout
on the attention weights, which is RecBole's own ``attn_dropout_prob: 0``.

- ``recbole`` (the default when the key is absent): RecBole's layers, unchanged.
- ``paper``: the paper's. LLM2BERT4Rec then loads its LLM table over that start;
  with ``embedding_scale: none`` the reduced text embeddings reach the encoder
  unnormalised, as in the paper's code.

``bert_padding`` places the window inside the encoder: ``right`` (default) as
RecBole stores it, items from position 0; ``left`` as the paper's code pads, so
the last item (or the prediction [MASK]) always sits at the last position
embedding; ``left_mask`` as the paper's code also *encodes* the padding:
``BERTModel.call`` replaces it by the [MASK] token and its encoder has no
attention mask, so padding positions are [MASK] + position embeddings that every
position attends to (they are never predicted). ``forward`` left-aligns each row,
encodes it and maps the output back to RecBole's positions, so every caller
keeps reading right-padded indices.

Prediction and both cloze losses go through ``forward``, so they all see every choice.
"""
from __future__ import annotations

import torch

KERAS_EMBEDDING_RANGE = 0.05  # keras.layers.Embedding's default uniform initialiser


def keras_initialise(model: torch.nn.Module) -> None:
    """Keras' defaults: Glorot-uniform kernels and zero biases for dense layers, uniform embeddings
    (the padding row stays zero); LayerNorms keep (1, 0)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.Embedding):
                torch.nn.init.uniform_(module.weight, -KERAS_EMBEDDING_RANGE, KERAS_EMBEDDING_RANGE)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx] = 0.0


def apply_layers(model, settings) -> None:
    """After RecBole's init: read ``bert_layers`` / ``bert_padding``; ``paper`` swaps the input LayerNorm,
    dropout and output LayerNorm for identities and re-initialises as Keras would."""
    model.bert_layers = settings.bert_layers
    model.bert_padding = settings.bert_padding
    if model.bert_layers == "paper":
        model.LayerNorm = torch.nn.Identity()  # forward's input LayerNorm and dropout
        model.dropout = torch.nn.Identity()
        model.output_ln = torch.nn.Identity()  # the head is Dense -> GELU
        keras_initialise(model)


def left_aligned(item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows [B, L] -> the same rows left-padded, and the per-row shift that did it."""
    width = item_seq.shape[1]
    shift = width - (item_seq != 0).sum(dim=1, keepdim=True)  # [B, 1]
    columns = torch.arange(width, device=item_seq.device).unsqueeze(0)
    return item_seq.gather(1, (columns - shift) % width), shift


def encoder_layout(model, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window as the encoder sees it (``bert_padding``), and each row's shift [B, 1] from RecBole's
    right-padded positions (None when right-padded: no shift)."""
    if model.bert_padding == "right":
        return item_seq, None
    left, shift = left_aligned(item_seq)
    if model.bert_padding == "left_mask":  # padding becomes [MASK], so RecBole's attention mask (item != 0) hides nothing
        left = left.masked_fill(left == 0, model.mask_token)
    return left, shift


def forward_padded(model, item_seq: torch.Tensor, encode) -> torch.Tensor:
    """``encode`` (RecBole's BERT4Rec forward) on the window placed as ``bert_padding`` says, its output mapped
    back to RecBole's right-padded positions."""
    left, shift = encoder_layout(model, item_seq)
    if shift is None:
        return encode(item_seq)
    output = encode(left)  # [B, L, H], left-aligned
    width = item_seq.shape[1]
    columns = torch.arange(width, device=item_seq.device).unsqueeze(0)
    back = ((columns + shift) % width).unsqueeze(-1).expand(-1, -1, output.shape[-1])
    return output.gather(1, back)
