"""The plan's peak per rank (launcher.planner.peak), on a 7B Llama's config: what it adds to what a
rank holds, and what sharding saves. Measured against real runs by bench/memory_bench.py."""

from __future__ import annotations

import pytest

from launcher.contract.vocabulary import Device, Offload, Precision, Strategy
from launcher.planner.memory import CANDIDATES, DDP_BUCKET_CAP_BYTES, estimate, shared_slot_bytes
from launcher.planner.model_shape import ModelShape
from launcher.planner.peak import DEEPSPEED_RUNTIME_BYTES, RUNTIME_BYTES


def peak(shape: ModelShape, strategy: Strategy, offload: tuple[Offload, ...] = (),
         world_size: int = 8, device: Device = Device.CUDA) -> tuple[int, int]:
    """(peak_bytes, total_bytes) of a bf16 rank, micro batch 1 x 2048 tokens."""
    est = estimate(shape, strategy=strategy, offload=offload, world_size=world_size,
                   micro_batch_size=1, seq_len=2048, precision=Precision.BF16,
                   activation_checkpointing=True, device=device)
    return est.peak_bytes, est.total_bytes


@pytest.mark.parametrize("device", list(Device))
@pytest.mark.parametrize(("strategy", "offload"), CANDIDATES)
def test_the_peak_covers_what_a_rank_holds_and_the_runtime(llama_7b: ModelShape, device: Device,
                                                           strategy: Strategy,
                                                           offload: tuple[Offload, ...]) -> None:
    found, total = peak(llama_7b, strategy, offload, device=device)
    runtime = RUNTIME_BYTES[device] + (DEEPSPEED_RUNTIME_BYTES[device]
                                       if strategy.uses_deepspeed else 0)
    assert found >= total + runtime


def test_ddp_adds_its_gradient_buckets_and_one_process_does_not(llama_7b: ModelShape) -> None:
    ddp, total = peak(llama_7b, Strategy.DDP)
    gradients = 2 * llama_7b.num_parameters  # bf16
    assert ddp == total + gradients
    alone, total_alone = peak(llama_7b, Strategy.DDP, world_size=1)
    assert alone == total_alone


def test_sharding_brings_the_peak_below_ddp(llama_7b: ModelShape) -> None:
    ddp, _ = peak(llama_7b, Strategy.DDP)
    for strategy in (Strategy.FSDP, Strategy.ZERO3):
        assert peak(llama_7b, strategy)[0] < 0.7 * ddp, strategy


def test_fsdp_rank_zero_gathers_the_whole_model_to_save_it(llama_7b: ModelShape) -> None:
    """At 8 ranks a rank holds 1/8 of the state; the final save frees the optimizer's and adds
    the whole bf16 model to the rank's weights and gradients."""
    found, _ = peak(llama_7b, Strategy.FSDP)
    params = llama_7b.num_parameters
    assert found >= 2 * params + 2 * (2 * params) // 8


def test_zero_adds_the_flat_fp32_gradient_copy_of_its_step(llama_7b: ModelShape) -> None:
    """ZeRO-2 holds the bf16 weights whole; its training moment is S + bucket + F."""
    est = estimate(llama_7b, strategy=Strategy.ZERO2, offload=(), world_size=8,
                   micro_batch_size=1, seq_len=2048, precision=Precision.BF16,
                   activation_checkpointing=True, device=Device.CUDA)
    bucket = 2 * llama_7b.hidden_size ** 2
    assert est.peak_bytes == est.total_bytes + bucket + 4 * -(-llama_7b.num_parameters // 8)


def test_ddp_on_one_cpu_host_adds_the_shared_slots_it_touches(llama_7b: ModelShape) -> None:
    """Every rank on one CPU host: DDP all-reduces through /dev/shm slots (bucket cap + the
    embedding's gradient each), which each rank's RSS counts; on 2 nodes, or on GPUs, there are
    none."""
    def ddp(device: Device, nodes: int, world_size: int = 2) -> int:
        return estimate(llama_7b, strategy=Strategy.DDP, world_size=world_size, nodes=nodes,
                        micro_batch_size=1, seq_len=2048, precision=Precision.FP32,
                        device=device).peak_bytes

    slot = DDP_BUCKET_CAP_BYTES + 4 * llama_7b.vocab_size * llama_7b.hidden_size
    assert ddp(Device.CPU, nodes=1) - ddp(Device.CPU, nodes=2) == 2 * slot
    assert ddp(Device.CPU, nodes=1, world_size=4) - ddp(Device.CPU, nodes=2, world_size=4) == (
        slot + 3 * 2 * -(-slot // 4))
    assert ddp(Device.CUDA, nodes=1) == ddp(Device.CUDA, nodes=2)
    assert ddp(Device.CPU, nodes=1, world_size=1) == ddp(Device.CPU, nodes=2, world_size=1)


def test_a_shared_slot_never_holds_more_than_all_the_gradients() -> None:
    small = 10 * 2**20  # below DDP's bucket cap: one bucket, one slot of it per rank
    assert shared_slot_bytes(gradients=small, largest_gradient=small // 2, world_size=2) == (
        2 * small)
    assert shared_slot_bytes(gradients=small, largest_gradient=small // 2, world_size=1) == small
