"""The highest a rank's memory goes in a run (the plan's `peak_bytes`), per strategy (stdlib).

`memory.estimate` counts what a rank holds while it trains: S = params + grads + optimizer state
+ activations A, per rank. The peak is higher: the runtime's own footprint R, plus the largest
of three moments. With W = the whole model's weights, G = all its gradients (trainable
parameters only), O = the optimizer state a rank holds, N = world size, B = one transformer
block's weights + gradients, F = the fp32 copy of a rank's gradient partition (4T/N):

    moment  ddp                 zero2           fsdp                        zero3
    load    W + G               S - A           W + W / N (rank 0 reads W)  S - A
    train   S + G + H           S + bucket + F  S + 2B                      S + 2B + bucket + F
    save    S - O               S - O           S - A - O + W               S - A - O + W

- DDP's reducer keeps its own copy of the gradients (G), from the wrap on; one process alone
  has no wrapper: W to load, S to train. On a CPU host that runs every rank, DDP all-reduces
  through shared memory (launcher/worker/engines/shared_memory.py): H is the part of the
  ranks' shared slots a rank touches, which its RSS counts (`memory.shared_slot_bytes`).
- DeepSpeed builds its fp32 master partition and gradient buffer at start-up and the moments at
  the first step: S - A bounds a ZeRO rank once loaded; ZeRO-3 builds the model partitioned
  (zero.Init).
- FSDP2 and ZeRO-3 hold one block unsharded while it computes and prefetch the next (2B);
  ZeRO's reduce bucket is hidden^2 elements of gradients (`memory.deepspeed_buckets`).
- DeepSpeed's optimizer step flattens the rank's gradient partition into one fp32 tensor (F;
  `sub_group_size` is left at its default, so there is one sub-group). The step itself adds
  nothing: AdamW is fused (the unfused one allocates two temporaries of each tensor's size).
- At the end the optimizer state is freed, then rank 0 gathers the whole model (W) to write it.
- With offload the device holds the working set only and the host the rest (`host_bytes`); on a
  CPU both are the same memory.

R was measured once per device kind (bench/memory_bench.py): on CPU, the RSS a worker has
before its model exists (Python, torch, transformers, accelerate, the tokenized data; DeepSpeed
adds its own): a loaded FSDP rank's RSS less its shard, a loaded DDP rank's less W + G. It was
510 MiB on the 303M Llama bench and 650-670 MiB on the quickstart's MiniLM runs (which import
the classification metrics too): the larger is taken. DeepSpeed's own part was first put at
150 MiB; the MiniLM ZeRO runs then measured 0.90-0.95 of their plans and a tiny EfficientNet's
ZeRO-2 rank 40 MiB over its DDP rank, so it is 100 MiB. Image and audio models on a CPU: the
same R held (EfficientNet-Lite0 at 224 pixels, DDP: 1,458 MiB planned, 1,467 measured). On a
GPU the measure is torch's max allocated, which has no runtime part.
"""

from __future__ import annotations

from launcher.contract.vocabulary import Device, Offload, Strategy

MIB = 2**20
RUNTIME_BYTES = {Device.CPU: 650 * MIB, Device.CUDA: 0}
DEEPSPEED_RUNTIME_BYTES = {Device.CPU: 100 * MIB, Device.CUDA: 0}


def peak_bytes(*, strategy: Strategy, offload: tuple[Offload, ...], device: Device,
               world_size: int, weights: int, gradients: int, held: int, activations: int,
               optimizer: int, block: int, bucket: int, flat: int, host: int,
               shared: int) -> int:
    """A rank's peak (see the module docstring); `held` is S, `optimizer` O, `block` B,
    `bucket` ZeRO's reduce bucket and `flat` F in bytes, `host` what offload keeps in host
    memory, `shared` H (DDP's shared-memory slots, 0 where it uses the process group)."""
    runtime = RUNTIME_BYTES[device] + (DEEPSPEED_RUNTIME_BYTES[device]
                                       if strategy.uses_deepspeed else 0)
    state, saving = held - activations, held - activations - optimizer + weights
    if world_size == 1:  # one plain process: no wrapper, no buckets
        moments = (weights, held, held - optimizer)
    elif strategy is Strategy.DDP:
        moments = (weights + gradients, held + gradients + shared, held - optimizer)
    elif strategy is Strategy.ZERO2:
        moments = (state, held + bucket + flat, held - optimizer)
    elif strategy is Strategy.FSDP:
        moments = (weights + weights // world_size, held + 2 * block, saving)
    else:  # ZeRO-3
        moments = (state, held + 2 * block + bucket + flat, saving)
    if offload and device is Device.CPU:
        moments = tuple(m + host for m in moments)
    return runtime + max(moments)
