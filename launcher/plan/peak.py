"""The highest a rank's memory goes in a run (the plan's `peak_bytes`), per strategy (stdlib).

`memory.estimate` counts what a rank holds while it trains: S = params + grads + optimizer state
+ activations A, per rank. The peak is higher: the runtime's own footprint R, plus the largest
of three moments. With W = the whole model's weights, G = all its gradients (trainable
parameters only), N = world size, B = one transformer block's weights + gradients:

    moment  ddp                 zero2           fsdp                        zero3
    load    W + G               S - A           W + W / N (rank 0 reads W)  S - A
    train   S + G               S + bucket      S + 2B                      S + 2B + bucket
    save    S                   S               S - A + W                   S - A + W

- DDP's reducer keeps its own copy of the gradients (G), from the wrap on; one process alone
  has no wrapper: W to load, S to train.
- DeepSpeed builds its optimizer state (partitions) at start-up, so a ZeRO rank holds its whole
  training state once loaded; ZeRO-3 builds the model partitioned (zero.Init).
- FSDP2 and ZeRO-3 hold one block unsharded while it computes and prefetch the next (2B);
  ZeRO's reduce bucket is hidden^2 elements of gradients (`memory.deepspeed_buckets`).
- At the end rank 0 gathers the whole model (W) to write it, beside the training state.
- With offload the device holds the working set only and the host the rest (`host_bytes`); on a
  CPU both are the same memory.

R was measured once per device kind (bench/memory_bench.py): on CPU, the RSS a worker has
before its model exists (Python, torch, transformers, accelerate, the tokenized data; DeepSpeed
adds its own); on a GPU the measure is torch's max allocated, which has no runtime part.
"""

from __future__ import annotations

from launcher.contract.vocabulary import Device, Offload, Strategy

MIB = 2**20
RUNTIME_BYTES = {Device.CPU: 600 * MIB, Device.CUDA: 0}
DEEPSPEED_RUNTIME_BYTES = {Device.CPU: 200 * MIB, Device.CUDA: 0}


def peak_bytes(*, strategy: Strategy, offload: tuple[Offload, ...], device: Device,
               world_size: int, weights: int, gradients: int, held: int, activations: int,
               block: int, bucket: int, host: int) -> int:
    """A rank's peak (see the module docstring); `held` is S, `block` is B, `bucket` is ZeRO's
    reduce bucket in bytes, `host` what offload keeps in host memory."""
    runtime = RUNTIME_BYTES[device] + (DEEPSPEED_RUNTIME_BYTES[device]
                                       if strategy.uses_deepspeed else 0)
    state = held - activations
    if world_size == 1:  # one plain process: no wrapper, no buckets
        moments = (weights, held, held)
    elif strategy is Strategy.DDP:
        moments = (weights + gradients, held + gradients, held)
    elif strategy is Strategy.ZERO2:
        moments = (state, held + bucket, held)
    elif strategy is Strategy.FSDP:
        moments = (weights + weights // world_size, held + 2 * block, state + weights)
    else:  # ZeRO-3
        moments = (state, held + 2 * block + bucket, state + weights)
    if offload and device is Device.CPU:
        moments = tuple(m + host for m in moments)
    return runtime + max(moments)
