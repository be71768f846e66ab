"""Attention per packed document (`DOC_SDPA`) and the LM head on loss-bearing positions only:
a packed row's documents never see each other, and the cheaper computations give the same
outputs, losses and gradients as the full ones (tiny random models, fp32)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from launcher.data.encode.chat import IGNORE_INDEX
from launcher.tasks.causal_lm import keeps_logits_by_mask, loss_positions, token_loss_sum
from launcher.tasks.packed_attention import DOC_SDPA, document_lengths, keep_documents_apart

LENGTHS = (7, 12, 5)
VOCAB = 96


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """Grouped-query attention (4 query heads on 2 key/value heads), so the repeat is tested."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()


def packed_row(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1, sum(LENGTHS)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(0)
    return {"input_ids": ids, "position_ids": positions}


def per_document(row: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [dict(zip(row, parts, strict=True)) for parts in
            zip(*(tensor.split(LENGTHS, 1) for tensor in row.values()), strict=True)]


@pytest.fixture(scope="module")
def packed_llama() -> LlamaForCausalLM:
    model = tiny_llama()
    keep_documents_apart(model)
    assert model.config._attn_implementation == DOC_SDPA
    return model


def test_document_lengths_read_the_restarts() -> None:
    assert document_lengths(packed_row()["position_ids"]) == list(LENGTHS)
    assert document_lengths(torch.arange(9).unsqueeze(0)) == [9]


def test_packed_documents_never_see_each_other(packed_llama: LlamaForCausalLM) -> None:
    row = packed_row()
    with torch.no_grad():
        packed = packed_llama(**row).logits.split(LENGTHS, 1)
        alone = [packed_llama(**doc).logits for doc in per_document(row)]
        for got, want in zip(packed, alone, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        changed = dict(row, input_ids=row["input_ids"].clone())
        changed["input_ids"][0, :LENGTHS[0]] = (changed["input_ids"][0, :LENGTHS[0]] + 1) % VOCAB
        after = packed_llama(**changed).logits.split(LENGTHS, 1)
    assert not torch.allclose(after[0], packed[0])
    for got, want in zip(after[1:], packed[1:], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_doc_sdpa_equals_the_dense_block_diagonal_mask(packed_llama: LlamaForCausalLM) -> None:
    """transformers' own sdpa keeps packed documents apart with a dense mask over the row (when
    there is no KV cache)."""
    dense = tiny_llama()
    dense.config.use_cache = False
    assert dense.config._attn_implementation == "sdpa"
    row = packed_row(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(packed_llama(**row).logits, dense(**row).logits,
                                   atol=1e-5, rtol=1e-5)


def test_encoder_documents_attend_both_ways_within_their_own() -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, attn_implementation="sdpa")
    model = BertModel(config, add_pooling_layer=False).eval()
    model.set_attn_implementation(DOC_SDPA)
    row = packed_row(seed=2)
    with torch.no_grad():
        packed = model(**row).last_hidden_state.split(LENGTHS, 1)
        alone = [model(**doc).last_hidden_state for doc in per_document(row)]
        for got, want in zip(packed, alone, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        changed = dict(row, input_ids=row["input_ids"].clone())
        last = LENGTHS[0] - 1
        changed["input_ids"][0, last] = (changed["input_ids"][0, last] + 1) % VOCAB
        first = model(**changed).last_hidden_state[:, 0]
    assert not torch.allclose(first, packed[0][:, 0])  # the first token sees the last: both ways


def labelled(batch: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    """Labels of `batch`: its ids, with about half the positions (prompts) set to -100."""
    generator = torch.Generator().manual_seed(seed)
    labels = batch["input_ids"].clone()
    labels[torch.rand(labels.shape, generator=generator) < 0.5] = IGNORE_INDEX
    return labels


def loss_and_grads(model: LlamaForCausalLM, batch: dict[str, Any], labels: torch.Tensor,
                   keep: bool) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    model.zero_grad()
    inputs = dict(batch, logits_to_keep=loss_positions(labels)) if keep else batch
    loss, count = token_loss_sum(model(**inputs).logits, labels)
    loss.backward()
    return loss.detach(), count, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_loss_on_labelled_positions_only_equals_the_full_computation(layout: str) -> None:
    model = tiny_llama(seed=3)
    assert keeps_logits_by_mask(model)
    if layout == "packed":
        keep_documents_apart(model)
        batch = packed_row(seed=3)
    else:
        ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(3))
        mask = torch.ones_like(ids)
        mask[1, 6:] = mask[2, 3:] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
    labels = labelled(batch, seed=3)
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    kept, kept_count, kept_grads = loss_and_grads(model, batch, labels, keep=True)
    full, full_count, full_grads = loss_and_grads(model, batch, labels, keep=False)
    assert kept_count == full_count == int((labels[:, 1:] != IGNORE_INDEX).sum()) > 0
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=1e-5)
    for got, want in zip(kept_grads, full_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_model_that_slices_otherwise_keeps_full_logits() -> None:
    assert not keeps_logits_by_mask(torch.nn.Linear(2, 2))
