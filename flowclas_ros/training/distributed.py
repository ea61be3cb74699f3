"""torch.distributed plumbing for ``torchrun --nproc_per_node=N flowclas-train ...``.

A single process (no ``WORLD_SIZE`` in the environment, or 1) runs without a
process group; every helper here is then a no-op, so the training loop has
one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 writes checkpoints and logs).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the CUDA device).
        device: The torch device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group is active."""
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """Maps the config's ``device`` to a torch device.

    Raises:
        ValueError: CUDA requested but not available.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {requested!r} requested but CUDA is not available")
        if requested == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(requested)


def init_distributed(requested_device: str) -> DistContext:
    """Initialises the process group from torchrun's environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    """Destroys the process group, if any."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Waits for all processes."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum_(array: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Sums a numpy array over all processes, in place (e.g. metric histograms)."""
    if ctx.enabled:
        tensor = torch.from_numpy(array)  # shares memory
        if dist.get_backend() == "nccl":
            moved = tensor.to(ctx.device)
            dist.all_reduce(moved)
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor)
    return array


def all_reduce_minmax(low: float, high: float, ctx: DistContext) -> tuple[float, float]:
    """Global (min of ``low``, max of ``high``) over all processes."""
    if not ctx.enabled:
        return low, high
    tensor = torch.tensor([-low, high], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(-tensor[0]), float(tensor[1])


def all_reduce_mean(values: list[float], ctx: DistContext) -> list[float]:
    """Mean of each value over all processes (logging only)."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(tensor)
    return (tensor / ctx.world_size).tolist()


def all_gather_rows(rows: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Concatenates every process's float64 (n_i, k) array in rank order (n_i may differ)."""
    if not ctx.enabled:
        return rows
    device = _comm_device(ctx)
    local = torch.as_tensor(np.asarray(rows, np.float64), device=device)
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(ctx.world_size)]
    dist.all_gather(counts, count)
    longest = max(int(c) for c in counts)
    padded = torch.zeros((longest, local.shape[1]), dtype=torch.float64, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded)
    return np.concatenate([g[: int(c)].cpu().numpy() for g, c in zip(gathered, counts)])


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
