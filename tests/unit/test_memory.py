"""The memory plan: byte accounting and strategy choice. The bytes each rank really holds are
compared with the plan for every strategy in tests/e2e/test_strategies.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.contract.vocabulary import Offload, Precision, Strategy
from launcher.planner.memory import CANDIDATES, FULL_OFFLOAD, DoesNotFit, choose_strategy, estimate
from launcher.planner.model_shape import ModelShape
from tests.helpers.llama_configs import LLAMA_70B, P_7B, P_70B

GiB = 1 << 30


def _states(shape: ModelShape, **kwargs: object) -> int:
    est = estimate(shape, micro_batch_size=1, seq_len=2048, **kwargs)
    return est.params_bytes + est.grads_bytes + est.optimizer_bytes


def test_byte_accounting(llama_7b: ModelShape, llama_70b: ModelShape) -> None:
    """Mixed precision: 2 (half params) + 2 (half grads) + 12 (fp32 master, 2 moments) = 16 B
    per parameter; fp32: 4 + 4 + 8 = 16. ZeRO-2 shards grads+optimizer, ZeRO-3/FSDP all."""
    p = P_7B
    ddp = estimate(llama_7b, strategy=Strategy.DDP, world_size=8, micro_batch_size=1, seq_len=2048,
                   precision=Precision.BF16)
    assert (ddp.params_bytes, ddp.grads_bytes, ddp.optimizer_bytes) == (2 * p, 2 * p, 12 * p)
    assert ddp.fits is None and ddp.host_bytes == 0
    fp32 = estimate(llama_7b, strategy=Strategy.DDP, world_size=2, micro_batch_size=1, seq_len=2048,
                    precision=Precision.FP32)
    assert (fp32.params_bytes, fp32.grads_bytes, fp32.optimizer_bytes) == (4 * p, 4 * p, 8 * p)
    zero2 = estimate(llama_7b, strategy=Strategy.ZERO2, world_size=8, micro_batch_size=1,
                     seq_len=2048, precision=Precision.BF16)
    assert (zero2.params_bytes, zero2.grads_bytes, zero2.optimizer_bytes) == (
        2 * p, 2 * p // 8, 12 * p // 8)
    for strategy in (Strategy.FSDP, Strategy.ZERO3):  # 16 B / 8 devices = 2 B per parameter
        assert _states(llama_70b, strategy=strategy, world_size=8,
                       precision=Precision.FP16) == 2 * P_70B
    offload = estimate(llama_70b, strategy=Strategy.ZERO3, offload=FULL_OFFLOAD, world_size=8,
                       micro_batch_size=1, seq_len=2048, precision=Precision.BF16)
    block = llama_70b.block_parameters  # one decoder layer gathered, and its grads
    assert (offload.params_bytes, offload.grads_bytes, offload.optimizer_bytes) == (
        2 * block, 2 * block, 0)
    assert offload.host_bytes == 16 * P_70B // 8
    # LoRA-style: grads and optimizer follow the trainable parameters, params all of them
    lora = estimate(llama_7b, strategy=Strategy.DDP, world_size=1, micro_batch_size=1, seq_len=2048,
                    precision=Precision.BF16, trainable_parameters=4_000_000)
    assert (lora.params_bytes, lora.grads_bytes, lora.optimizer_bytes) == (
        2 * p, 8_000_000, 48_000_000)


def test_activations(llama_7b: ModelShape) -> None:
    """Korthikanti et al.: s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit, (66 + 9*a*s/h) in
    fp32; checkpointing keeps each layer's input (2*s*b*h) plus one full layer; fp32 logits."""
    s, b, h, a, layers, vocab = 2048, 2, 4096, 32, 32, 32000
    logits = b * s * vocab * 4
    layer = s * b * h * 34 + 5 * a * s * s * b
    kwargs = {"strategy": Strategy.ZERO3, "world_size": 8, "micro_batch_size": b, "seq_len": s}
    bf16 = estimate(llama_7b, precision=Precision.BF16, **kwargs)
    assert bf16.activations_bytes == layers * layer + logits
    ckpt = estimate(llama_7b, precision=Precision.BF16, activation_checkpointing=True, **kwargs)
    assert ckpt.activations_bytes == layers * 2 * s * b * h + layer + logits
    fp32 = estimate(llama_7b, precision=Precision.FP32, **kwargs)
    assert fp32.activations_bytes == layers * (s * b * h * 66 + 9 * a * s * s * b) + logits
    assert bf16.total_bytes == _states(llama_7b, strategy=Strategy.ZERO3, world_size=8,
                                       precision=Precision.BF16) + bf16.activations_bytes


@pytest.mark.parametrize(("micro", "seq", "budget", "tokens"), [
    (8, 512, 1024, 1024),   # 2 packed rows of 512 under the budget, not 8
    (3, 512, 1024, 1024),
    (2, 2048, 1024, 2048),  # a row longer than the budget runs alone
    (16, 64, 1024, 1024),   # the quickstart: the budget is exactly its micro-batch
    (4, 128, 4096, 512),    # a budget above the micro-batch changes nothing
])
def test_ddp_activations_under_a_token_budget(llama_7b: ModelShape, micro: int, seq: int,
                                              budget: int, tokens: int) -> None:
    """A micro-batch under DDP's token budget computes at most max(budget, seq) tokens: the
    activations are those of that many tokens, each attending over rows of `seq`."""
    h, a, layers, vocab = 4096, 32, 32, 32000
    kwargs = {"world_size": 2, "micro_batch_size": micro, "seq_len": seq,
              "precision": Precision.FP32}
    budgeted = estimate(llama_7b, strategy=Strategy.DDP, micro_tokens=budget, **kwargs)
    assert budgeted.activations_bytes == (layers * tokens * (66 * h + 9 * a * seq)
                                          + tokens * vocab * 4)
    rows = estimate(llama_7b, strategy=Strategy.DDP, **kwargs)
    assert (budgeted.activations_bytes < rows.activations_bytes) is (tokens < micro * seq)
    assert budgeted.total_bytes - rows.total_bytes == (budgeted.activations_bytes
                                                       - rows.activations_bytes)
    for strategy in (Strategy.ZERO2, Strategy.FSDP, Strategy.ZERO3):  # whole micro-batches
        assert (estimate(llama_7b, strategy=strategy, micro_tokens=budget, **kwargs)
                == estimate(llama_7b, strategy=strategy, **kwargs))


def test_choose_7b_on_8x80gib(llama_7b: ModelShape) -> None:
    """DDP needs 16*6.74e9 = 108 GB + activations > 0.9*80 GiB; ZeRO-2 needs
    2P + 14P/8 = 25.3 GB + 30.8 GB activations (s=2048, b=1): it fits."""
    kwargs = {"world_size": 8, "micro_batch_size": 1, "seq_len": 2048, "precision": Precision.BF16,
              "activation_checkpointing": False, "device_memory_bytes": 80 * GiB}
    assert choose_strategy(llama_7b, **kwargs).label == "zero2"
    assert [estimate(llama_7b, strategy=s, offload=o, **kwargs).fits for s, o in CANDIDATES] == [
        False, True, True, True, True]


def test_choose_70b_on_one_node(llama_70b: ModelShape) -> None:
    """70B, 8 x 80 GiB, checkpointing: ZeRO-3 needs 16P/8 = 138 GB per device, so offload;
    without offload, 16P/N + 5.2 GB activations <= 72 GiB gives N = 16, i.e. 2 nodes."""
    kwargs = {"world_size": 8, "micro_batch_size": 1, "seq_len": 2048, "precision": Precision.BF16,
              "activation_checkpointing": True, "device_memory_bytes": 80 * GiB,
              "procs_per_node": 8}
    chosen = choose_strategy(llama_70b, **kwargs)
    assert (chosen.strategy, chosen.offload) == (Strategy.ZERO3, FULL_OFFLOAD)
    no_offload = [(s, o) for s, o in CANDIDATES if not o]
    with pytest.raises(DoesNotFit, match="fit on 2 nodes of 8 processes") as info:
        choose_strategy(llama_70b, **kwargs, layouts=no_offload)
    assert (info.value.min_nodes, info.value.min_world_size) == (2, 16)
    assert info.value.best.strategy is Strategy.FSDP  # same bytes as zero3, first in order
    assert choose_strategy(llama_70b, **{**kwargs, "world_size": 16},
                           layouts=no_offload).strategy is Strategy.FSDP


def test_does_not_fit_anywhere(llama_70b: ModelShape) -> None:
    """Without checkpointing the 70B activations alone (~143 GiB) exceed a device."""
    with pytest.raises(DoesNotFit, match="No world size would fit") as info:
        choose_strategy(llama_70b, world_size=8, micro_batch_size=1, seq_len=2048,
                        precision=Precision.BF16, activation_checkpointing=False,
                        device_memory_bytes=80 * GiB, procs_per_node=8)
    assert info.value.min_nodes is None


def test_does_not_fit_names_processes_without_procs_per_node(llama_7b: ModelShape) -> None:
    with pytest.raises(DoesNotFit, match=r"fit on \d+ processes with fsdp") as info:
        choose_strategy(llama_7b, world_size=1, micro_batch_size=1, seq_len=512,
                        precision=Precision.BF16, activation_checkpointing=True,
                        device_memory_bytes=24 * GiB,
                        layouts=[(Strategy.DDP, ()), (Strategy.FSDP, ())])
    n = info.value.min_world_size
    assert info.value.min_nodes is None
    for world, fits in ((n - 1, False), (n, True)):
        assert estimate(llama_7b, strategy=Strategy.FSDP, world_size=world, micro_batch_size=1,
                        seq_len=512, precision=Precision.BF16, activation_checkpointing=True,
                        device_memory_bytes=24 * GiB).fits is fits


def test_bad_inputs(llama_7b: ModelShape) -> None:
    with pytest.raises(ValueError, match="not a valid Strategy"):
        estimate(llama_7b, strategy="zero1", world_size=1, micro_batch_size=1, seq_len=8,
                 precision=Precision.BF16)
    with pytest.raises(ValueError, match="not a valid Precision"):
        estimate(llama_7b, strategy=Strategy.DDP, world_size=1, micro_batch_size=1, seq_len=8,
                 precision="int8")
    with pytest.raises(ValueError, match="offload needs zero3"):
        estimate(llama_7b, strategy=Strategy.FSDP, offload=FULL_OFFLOAD, world_size=1,
                 micro_batch_size=1, seq_len=8, precision=Precision.BF16)


def test_planning_does_not_import_the_training_stack(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_70B))
    code = textwrap.dedent(f"""
        import sys
        from launcher.contract.vocabulary import Precision
        from launcher.planner import memory, model_shape
        shape = model_shape.read_model_shape({str(tmp_path)!r})
        for strategy, offload in memory.CANDIDATES:
            memory.estimate(shape, strategy=strategy, offload=offload, world_size=8,
                            micro_batch_size=1, seq_len=4096, precision=Precision.BF16,
                            device_memory_bytes=80 << 30)
        heavy = {{"torch", "transformers", "deepspeed"}} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_candidates_cover_the_vocabulary() -> None:
    """auto considers every Strategy, and offload (of both) only with ZeRO-3."""
    assert {strategy for strategy, _ in CANDIDATES} == set(Strategy)
    assert {o for _, offload in CANDIDATES for o in offload} == set(Offload)
    assert all(strategy is Strategy.ZERO3 for strategy, offload in CANDIDATES if offload)
