"""Attention per packed document: a packed row's examples never see each other, at the cost of
their own lengths rather than the whole row's.

A packed row (`launcher.data.encode.packing`) is ``[1, tokens]`` with position ids that restart at
0 for every example and no attention mask. transformers' own sdpa keeps the examples apart with a
dense block-diagonal ``[tokens, tokens]`` mask: attention over the whole row (8 packs of 512
tokens: 4,096^2 scores per head and layer, as many FLOPs as the rest of a 34M-parameter model),
most of it masked out, and a mask-carrying SDPA that keeps every score for the backward. `DOC_SDPA`
instead splits the row at the restarts and runs SDPA on each document alone (causal for a decoder,
bidirectional for an encoder): the fast fused kernel, no mask, O(sum of length^2).
Any other batch (padded, with a mask; generation with a cache) goes to transformers' sdpa as is.

On a GPU, flash attention does the same from the position ids (varlen), so `keep_documents_apart`
keeps it; sdpa and eager become `DOC_SDPA`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

DOC_SDPA = "sft_doc_sdpa"
VARLEN = ("flash_attention_2", "flash_attention_3", "flex_attention")  # kept as they are


def document_lengths(position_ids: torch.Tensor) -> list[int]:
    """The lengths of the documents of a packed ``[1, tokens]`` row: a document starts wherever
    the position id is 0."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return [end - start for start, end in zip(starts, [*starts[1:], position_ids.shape[1]],
                                              strict=True)]


def doc_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     position_ids: torch.Tensor | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature (query/key/value ``[batch, heads, tokens, dim]``, the
    output ``[batch, tokens, heads, dim]``): one SDPA per document of a packed row."""
    packed = (attention_mask is None and position_ids is not None and query.shape[0] == 1
              and query.shape[2] == key.shape[2] == position_ids.shape[1])
    lengths = document_lengths(position_ids) if packed else []
    if len(lengths) < 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, position_ids=position_ids, **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    causal = getattr(module, "is_causal", True)
    p = dropout if module.training else 0.0
    outputs = [F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal, scale=scaling)
               for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2),
                                  value.split(lengths, 2), strict=True)]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def doc_sdpa_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """No mask for a packed row (`doc_sdpa_forward` splits it); sdpa's mask for anything with
    an attention mask (padding)."""
    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register(DOC_SDPA, doc_sdpa_forward)
AttentionMaskInterface.register(DOC_SDPA, doc_sdpa_mask)


def keep_documents_apart(model: PreTrainedModel) -> None:
    """Make `model` keep packed examples apart: no KV cache (a cache in a training forward makes
    the mask builder ignore the restarts), and attention per document (`DOC_SDPA`) unless it is
    a varlen kernel already."""
    implementation = model.config._attn_implementation
    if implementation not in (*VARLEN, DOC_SDPA, "sdpa", "eager"):
        raise ValueError(
            f"attention {implementation!r} is not known to honour packed position ids; "
            f"use sdpa, eager or {', '.join(VARLEN)}, or turn packing off"
        )
    model.config.use_cache = False
    if implementation not in VARLEN:
        model.set_attn_implementation(DOC_SDPA)
