"""Data parallelism over torch.distributed (started by torchrun, or any init_process_group): every rank holds the
whole model and its own sampler, generates its own share of the prompts, and gradients are averaged before each
optimizer step (with fsdp, r1fast.trainer.fsdp shards the model instead and FSDP averages the gradients). Without
an initialised process group every helper is the single-process identity."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def _release_captured_default_group() -> None:
    """Imports torch.distributed.nn.functional and sets to None each of its default arguments that holds a process
    group. That module evaluates its ``group=group.WORLD`` defaults when first imported: imported after
    init_process_group (transformers imports it when it builds a model: integrations.accelerate, then
    torch.distributed.fsdp, _shard, torch.distributed.nn), ten of its functions hold the default group, so
    destroy_process_group() cannot free it, and the gloo worker threads its destructor would join live on into
    interpreter teardown. A worker still releasing the tensors of a finished collective then (~AsyncWork drops their
    Python objects: it takes the GIL) is ended by CPython (pthread_exit) while Python finalizes; the forced unwind
    meets a noexcept destructor: std::terminate, "terminate called without an active exception", SIGABRT. None is
    what those defaults are when the module is imported before init (c10d reads None as the default group); once
    imported here, with r1fast, they stay None in whatever order init_process_group and the imports come."""
    if not dist.is_available():
        return
    try:
        from torch.distributed.nn import functional
    except ImportError:  # a build without it holds no group
        return

    def released(values):
        return tuple(None if isinstance(v, dist.ProcessGroup) else v for v in values)

    for fn in vars(functional).values():
        if getattr(fn, "__module__", None) != functional.__name__ or not hasattr(fn, "__defaults__"):
            continue
        if fn.__defaults__ and any(isinstance(v, dist.ProcessGroup) for v in fn.__defaults__):
            fn.__defaults__ = released(fn.__defaults__)
        if fn.__kwdefaults__ and any(isinstance(v, dist.ProcessGroup) for v in fn.__kwdefaults__.values()):
            fn.__kwdefaults__ = dict(zip(fn.__kwdefaults__, released(fn.__kwdefaults__.values()), strict=True))


_release_captured_default_group()


def _gloo_workers_alive() -> bool:
    """Whether a gloo worker thread runs in this process (Linux: their names in /proc; False where unreadable)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().startswith("pt_gloo_runloop"):
                    return True
        except OSError:  # the thread ended meanwhile
            continue
    return False


@atexit.register
def _release_mesh_groups() -> None:
    """At exit, before Python finalizes, when the program destroyed its process groups but gloo worker threads still
    run: the groups that DeviceMeshes still hold are released, so that their destructors join those threads now. A
    DeviceMesh keeps its groups in a dict (_pg_registry), and meshes outlive the FSDP-sharded model that used them
    (DTensor specs in torch's caches hold them); a group alive into finalization has the teardown problem described
    in _release_captured_default_group."""
    mesh_type = getattr(sys.modules.get("torch.distributed.device_mesh"), "DeviceMesh", None)
    if mesh_type is None or not dist.is_available() or dist.is_initialized() or not _gloo_workers_alive():
        return
    gc.collect()  # what the program dropped (a sharded model's states hold the groups too)
    for obj in gc.get_objects():
        registry = getattr(obj, "_pg_registry", None) if isinstance(obj, mesh_type) else None
        if isinstance(registry, dict):
            registry.clear()
    gc.collect()


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when there is none."""
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_model(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DistributedDataParallel does at construction)."""
    if rank_and_world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """grad <- mean over ranks of grad, for every parameter (a missing grad counts as zeros, so every rank issues
    the same collectives). TRL's loss normalisers assume exactly this average. Parameters sharded by FSDP (DTensors)
    are left alone: FSDP's reduce-scatter averaged their gradients already."""
    world = rank_and_world()[1]
    if world == 1 or any(isinstance(p, DTensor) for p in params):
        return
    handles = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        handles.append(dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, async_op=True))
    for handle, p in zip(handles, params, strict=True):
        handle.wait()
        p.grad.div_(world)


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The [n, ...] tensors of every rank (each the same shape) concatenated in rank order: [world * n, ...]."""
    world = rank_and_world()[1]
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_gather_varlen(x: torch.Tensor) -> torch.Tensor:
    """The 1-D tensors of every rank (lengths may differ) concatenated in rank order: [sum of the lengths]."""
    world = rank_and_world()[1]
    if world == 1:
        return x
    length = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    lengths = all_gather_rows(length).tolist()
    padded = torch.zeros(max(lengths), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = all_gather_rows(padded).view(world, -1)
    return torch.cat([part[:n] for part, n in zip(parts, lengths, strict=True)])


def sum_over_ranks(value: float, device: torch.device) -> float:
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def _reduction(key: str) -> str:
    """How a metric combines over ranks: "min" for */min, */min_*, */*_min, "max" for */max, */max_*, */*_max and
    timings, else "mean" (TRL's names: clip_ratio/low_min, sampling/importance_sampling_ratio/max, ...)."""
    leaf = key.rsplit("/", 1)[-1]
    if leaf == "min" or leaf.startswith("min_") or leaf.endswith("_min"):
        return "min"
    if leaf == "max" or leaf.startswith("max_") or leaf.endswith("_max"):
        return "max"
    if key.startswith("time/") or key == "step_time":
        return "max"
    return "mean"


def reduce_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Metrics over all ranks: the minimum of */min_*, the maximum of */max_* and of timings, the mean of the rest.
    Every rank must pass the same keys."""
    world = rank_and_world()[1]
    if world == 1:
        return metrics
    keys = sorted(metrics)
    groups: dict[str, list[str]] = {"min": [], "max": [], "mean": []}
    for k in keys:
        groups[_reduction(k)].append(k)
    ops = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "mean": dist.ReduceOp.SUM}
    out = {}
    for kind, names in groups.items():
        if not names:
            continue
        t = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=ops[kind])
        if kind == "mean":
            t /= world
        out.update(zip(names, t.tolist(), strict=True))
    return {k: out[k] for k in keys}


T = TypeVar("T")


def on_rank0(decide: Callable[[], T]) -> T:
    """Runs decide() on rank 0 alone and hands its result, or the exception it raised, to every rank: one decision
    (which checkpoint to resume from, or why not to start) that every rank acts on."""
    if rank_and_world()[1] == 1:
        return decide()
    box: list[object] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", decide())
        except Exception as e:  # every rank raises it
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on some rank, on every rank (one all-reduce): e.g. "a stop signal arrived" on any rank."""
    if rank_and_world()[1] == 1:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()
