"""Per-device memory estimate of every strategy, from a `ModelShape` (stdlib only).

Accounting, AdamW as in the ZeRO paper, T = trainable parameters (P unless adapters are used):

    precision         params   grads   optimizer
    bf16/fp16 mixed   2P       2T      12T  (fp32 master copy + momentum + variance)
    fp32              4P       4T       8T  (momentum + variance; the params are the master)

DeepSpeed ZeRO keeps its own fp32 master partition of the weights even when they are fp32, so
under zero2/zero3 the fp32 optimizer takes 12T (measured: a copy, not a view).

Per device, N = world size (shards round up):

    ddp            everything replicated
    zero2          params replicated; grads and optimizer / N
    fsdp, zero3    params, grads and optimizer / N (FSDP FULL_SHARD)
    zero3+offload  params, grads and optimizer live in host memory, 1/N per rank (host_bytes);
                   the device holds the largest module gathered (one block or the token
                   embedding) with its grads

Activations per device (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", no tensor/sequence parallelism), s = seq_len, b = micro batch,
h = hidden, a = heads, L = layers, V = vocab:

    one layer, 16-bit        s*b*h*(34 + 5*a*s/h) bytes
    one layer, fp32          s*b*h*(66 + 9*a*s/h) bytes (2-byte tensors double, 1-byte masks stay)
    no checkpointing         L * one layer
    checkpointing            L * s*b*h*e (each layer's input, e = 2 or 4 bytes) + one layer
    logits (fp32)            b*s*V*4 (causal LM), b*s*labels*4 (tokens), b*labels*4 (sequence)

Image and audio models have no such formula: their activations (and parameters, largest block
and tensor) are measured by a dry run on the fake device (launcher.planner.memory_probe).

Under DDP with a token budget per micro-batch B (`micro_tokens`), a micro-batch computes at
most max(B, s) tokens (padding counted; one row over the budget runs alone), so s*b above
becomes min(s*b, max(B, s)) and the a*s term keeps s: a row is at most s tokens long.

The a*s/h term assumes attention scores are stored (eager attention); with flash/SDPA kernels
it overestimates. A plan ``fits`` when its total is at most USABLE_FRACTION of the device
memory; the rest is left to the runtime context, allocator fragmentation and comm buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from launcher.contract.plan import MemoryEstimate
from launcher.contract.vocabulary import Device, Offload, Precision, Strategy
from launcher.planner.model_shape import ModelShape
from launcher.planner.peak import peak_bytes
from launcher.planner.sizes import format_bytes
from launcher.tasks.spec import Head

Layout = tuple[Strategy, tuple[Offload, ...]]
FULL_OFFLOAD = (Offload.OPTIMIZER, Offload.PARAMS)
# The layouts `auto` considers, fastest first.
CANDIDATES: tuple[Layout, ...] = ((Strategy.DDP, ()), (Strategy.ZERO2, ()), (Strategy.FSDP, ()),
                                  (Strategy.ZERO3, ()), (Strategy.ZERO3, FULL_OFFLOAD))
USABLE_FRACTION = 0.9
# bytes per parameter: (params, grads, optimizer state)
_BYTES_PER_PARAM = {Precision.FP32: (4, 4, 8), Precision.BF16: (2, 2, 12),
                    Precision.FP16: (2, 2, 12)}
_MAX_UNITS = 1 << 16  # nodes, or processes without procs_per_node
DDP_BUCKET_CAP_BYTES = 25 * 2**20  # torch DDP's bucket_cap_mb default, which the worker keeps


class DoesNotFit(ValueError):
    """No strategy fits; min_world_size/min_nodes say what would (None: nothing would)."""

    def __init__(
        self, message: str, *, best: MemoryEstimate, min_world_size: int | None,
        min_nodes: int | None,
    ) -> None:
        super().__init__(message)
        self.best = best
        self.min_world_size = min_world_size
        self.min_nodes = min_nodes


def deepspeed_buckets(hidden_size: int | None, block_parameters: int) -> dict[str, int]:
    """ZeRO's buffer sizes (elements) for a model of this shape: buckets as transformers'
    `auto` sets them (hidden^2), and under ZeRO-3 at most two blocks' parameters gathered at a
    time. DeepSpeed's own defaults do not scale with the model: a 5e8-element reduce bucket
    (2 GB in fp32) on every rank, and up to 1e9 gathered parameters kept for reuse (a whole
    model below 1B parameters, unsharded). `sub_group_size` stays DeepSpeed's: smaller
    optimizer sub-groups cut a 303M model's peak per rank by 1.2 GB, but their checkpoints then
    resume at another world size (universal format) with a different eval loss (measured 0.009
    off in tests/e2e/test_elastic.py). Empty: shape unknown, DeepSpeed's defaults."""
    if not hidden_size:
        return {}
    h = hidden_size
    live = 2 * max(block_parameters, h * h)
    return {"reduce_bucket_size": h * h, "stage3_prefetch_bucket_size": int(0.9 * h * h),
            "stage3_param_persistence_threshold": 10 * h,
            "stage3_max_live_parameters": live, "stage3_max_reuse_distance": live}


def shared_slot_bytes(*, gradients: int, largest_gradient: int, world_size: int) -> int:
    """What a DDP rank's RSS counts of the shared-memory all-reduce's slots (one per rank, each
    at most DDP's bucket cap plus the largest gradient, never more than all the gradients:
    `shared_memory.slot_bytes`): its own slot, plus in every other rank's slot the part it sums
    and the part it reads back, 2/N of it. With 2 ranks that is both slots."""
    slot = min(gradients, DDP_BUCKET_CAP_BYTES + largest_gradient)
    return slot + 2 * (world_size - 1) * _ceil_div(slot, world_size)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _activations(
    shape: ModelShape, micro_batch_size: int, seq_len: int, precision: Precision,
    checkpointing: bool, micro_tokens: int | None,
) -> int:
    if shape.activations_bytes is not None:  # measured for this micro batch and precision
        return shape.activations_bytes
    s, b, h, a = seq_len, micro_batch_size, shape.hidden_size, shape.num_heads
    tokens = s * b if micro_tokens is None else min(s * b, max(micro_tokens, s))
    if precision is Precision.FP32:
        layer, stored_input = tokens * (66 * h + 9 * a * s), 4 * tokens * h
    else:
        layer, stored_input = tokens * (34 * h + 5 * a * s), 2 * tokens * h
    layers = (shape.num_layers * stored_input + layer if checkpointing
              else shape.num_layers * layer)
    logits = {
        Head.LM: tokens * shape.vocab_size * 4,
        Head.TOKEN: tokens * shape.num_labels * 4,
        Head.SEQUENCE: b * shape.num_labels * 4,
    }.get(shape.head, 0)
    return layers + logits


def estimate(
    shape: ModelShape,
    *,
    strategy: Strategy,
    offload: tuple[Offload, ...] = (),
    world_size: int,
    micro_batch_size: int,
    seq_len: int,
    precision: Precision,
    activation_checkpointing: bool = False,
    device_memory_bytes: int | None = None,
    trainable_parameters: int | None = None,
    device: Device = Device.CUDA,
    nodes: int = 1,
    micro_tokens: int | None = None,
) -> MemoryEstimate:
    """Bytes per device for `strategy` (see the module docstring for the formulas), and the
    peak a rank reaches on `device` (launcher.planner.peak) with the world on `nodes` hosts.
    `micro_tokens`: DDP's token budget per micro-batch (ignored for a strategy that takes
    whole micro-batches of rows, see `Strategy.takes_token_budget`).

    `trainable_parameters` (e.g. LoRA) are part of `shape.num_parameters`; grads and
    optimizer state scale with them, params with all.
    """
    strategy, precision = Strategy(strategy), Precision(precision)
    if offload and strategy is not Strategy.ZERO3:
        raise ValueError(f"offload needs zero3, not {strategy}")
    if min(world_size, micro_batch_size, seq_len) < 1:
        raise ValueError("world_size, micro_batch_size and seq_len must be at least 1")
    total_params = shape.num_parameters
    trainable = total_params if trainable_parameters is None else trainable_parameters
    if not 0 <= trainable <= total_params:
        raise ValueError(f"trainable_parameters must be within 0..{total_params}, "
                         f"got {trainable}")
    p_bytes, g_bytes, o_bytes = _BYTES_PER_PARAM[precision]
    if strategy.uses_deepspeed and precision is Precision.FP32:
        o_bytes += 4  # DeepSpeed keeps an fp32 master partition even for fp32 weights
    params, grads, optim = p_bytes * total_params, g_bytes * trainable, o_bytes * trainable
    host = 0
    if strategy is Strategy.ZERO2:
        grads, optim = _ceil_div(grads, world_size), _ceil_div(optim, world_size)
    elif strategy.shards_parameters and not offload:
        params, grads, optim = (_ceil_div(x, world_size) for x in (params, grads, optim))
    elif offload:
        host = _ceil_div(params + grads + optim, world_size)
        working = min(max(shape.block_parameters, shape.largest_tensor), total_params)
        params, grads, optim = p_bytes * working, g_bytes * min(working, trainable), 0
    activations = _activations(shape, micro_batch_size, seq_len, precision,
                               activation_checkpointing,
                               micro_tokens if strategy.takes_token_budget else None)
    total = params + grads + optim + activations
    fits = (None if device_memory_bytes is None
            else total <= int(device_memory_bytes * USABLE_FRACTION))
    buckets = deepspeed_buckets(shape.hidden_size, shape.block_parameters)
    bucket = g_bytes * buckets.get("reduce_bucket_size", 0) if strategy.uses_deepspeed else 0
    shared = (shared_slot_bytes(gradients=g_bytes * trainable, world_size=world_size,
                                largest_gradient=g_bytes * shape.largest_tensor)
              if strategy is Strategy.DDP and device is Device.CPU and nodes == 1 else 0)
    peak = peak_bytes(strategy=strategy, offload=offload, device=device, world_size=world_size,
                      weights=p_bytes * total_params, gradients=g_bytes * trainable,
                      held=total, activations=activations, optimizer=optim,
                      block=(p_bytes + g_bytes) * shape.block_parameters, bucket=bucket,
                      flat=(4 * _ceil_div(trainable, world_size)
                            if strategy.uses_deepspeed and not offload else 0),
                      host=host, shared=shared)
    return MemoryEstimate(strategy=strategy, offload=offload, world_size=world_size,
                          params_bytes=params, grads_bytes=grads, optimizer_bytes=optim,
                          activations_bytes=activations, total_bytes=total, fits=fits,
                          host_bytes=host, peak_bytes=peak)


def choose_strategy(
    shape: ModelShape,
    *,
    world_size: int,
    micro_batch_size: int,
    seq_len: int,
    precision: Precision,
    activation_checkpointing: bool,
    device_memory_bytes: int,
    procs_per_node: int | None = None,
    trainable_parameters: int | None = None,
    layouts: Sequence[Layout] = CANDIDATES,
    micro_tokens: int | None = None,
) -> MemoryEstimate:
    """The estimate of the first of `layouts` that fits on each device (`micro_tokens`: DDP's
    token budget per micro-batch, as in `estimate`).

    Raises DoesNotFit naming the smallest world size that would fit, in nodes of
    `procs_per_node` processes when given (else in processes), or saying that none would.
    """
    def at(n: int) -> list[MemoryEstimate]:
        return [estimate(shape, strategy=s, offload=o, world_size=n,
                         micro_batch_size=micro_batch_size, seq_len=seq_len,
                         precision=precision, activation_checkpointing=activation_checkpointing,
                         device_memory_bytes=device_memory_bytes,
                         trainable_parameters=trainable_parameters,
                         micro_tokens=micro_tokens) for s, o in layouts]

    estimates = at(world_size)
    for est in estimates:
        if est.fits:
            return est
    step = procs_per_node or 1
    nodes = _min_units(lambda k: any(e.fits for e in at(k * step)))
    best = min(estimates, key=lambda e: e.total_bytes)
    usable = int(device_memory_bytes * USABLE_FRACTION)
    message = (
        f"{shape.architecture} ({shape.num_parameters / 1e9:.2f}B parameters, {precision}, "
        f"micro batch {micro_batch_size} x {seq_len} tokens) does not fit in "
        f"{format_bytes(usable)} usable of {format_bytes(device_memory_bytes)} per device on "
        f"{world_size} processes with {'/'.join(e.label for e in estimates)}: the smallest, "
        f"{best.label}, needs {format_bytes(best.total_bytes)} per device."
    )
    if nodes is None:
        message += (
            f" No world size would fit: activations need "
            f"{format_bytes(best.activations_bytes)} per device at any size; lower "
            "micro_batch_size or seq_len, or enable activation checkpointing."
        )
        raise DoesNotFit(message, best=best, min_world_size=None, min_nodes=None)
    fitting = next(e for e in at(nodes * step) if e.fits)
    where = (f"{nodes} nodes of {procs_per_node} processes ({nodes * step} processes)"
             if procs_per_node else f"{nodes} processes")
    message += f" It would fit on {where} with {fitting.label}."
    raise DoesNotFit(message, best=best, min_world_size=nodes * step,
                     min_nodes=nodes if procs_per_node else None)


def _min_units(fits: Callable[[int], bool]) -> int | None:
    """Smallest k >= 1 with fits(k), for fits monotone in k; None beyond _MAX_UNITS."""
    high = 1
    while not fits(high):
        if high >= _MAX_UNITS:
            return None
        high *= 2
    low = high // 2  # does not fit (or 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high
