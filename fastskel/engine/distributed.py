"""Process-group helpers: DDP when started by ``torchrun``, plain single-process otherwise.

``torchrun --nproc_per_node K -m fastskel.cli pretrain ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the group (NCCL on CUDA, gloo on CPU) and pins
each rank to ``cuda:LOCAL_RANK``. Without those variables everything here is a no-op.
"""
from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "is_distributed", "rank", "world_size", "is_main",
           "barrier", "all_reduce_mean", "any_across_ranks", "seed_everything", "cleanup"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError as e:
        raise ValueError(f"{name}: expected an integer environment variable, got {v!r}") from e


def resolve_device(device: Optional[str], local_rank: int = 0) -> torch.device:
    """``None``/"auto" → ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; else ``device``."""
    if device in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} was requested but CUDA is not available (use --device cpu)")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def _restart_store(rank: int, world: int) -> dict:
    """Under torchrun's agent store (``TORCHELASTIC_USE_AGENT_STORE``) every restart attempt joins
    through the *same* store server, so a restarted worker could read the gloo/NCCL addresses the
    killed attempt published there and fail to connect ("Connection refused") or hang: the keys of
    attempt ``TORCHELASTIC_RESTART_COUNT`` get their own prefix. ``{}`` (env:// as usual) otherwise."""
    import os
    from datetime import timedelta

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return {}
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timedelta(minutes=10))
    return {"store": dist.PrefixStore(f"fastskel/attempt_{attempt}", store)}


def init_distributed(device: Optional[str] = None, backend: Optional[str] = None) -> DistInfo:
    """Join the process group if launched by torchrun (``WORLD_SIZE > 1``); pick the device."""
    world = _env_int("WORLD_SIZE", 1)
    rk = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rk)
    dev = resolve_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, False)
    if dev.type == "cuda":
        if dev.index != local:      # every rank on the same GPU: NCCL fails, or ranks share one device
            raise ValueError(f"device: under torchrun each rank uses cuda:LOCAL_RANK (cuda:{local} here), "
                             f"got {device!r}; pass 'cuda' or 'auto'")
        torch.cuda.set_device(dev)  # Triton and NCCL work on the current device
    here = False
    if not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, rank=rk, world_size=world, **_restart_store(rk, world))
        here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, here)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` itself unchanged)."""
    if not is_distributed():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def any_across_ranks(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any (used to stop all ranks on a signal together)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def cleanup(info: Optional[DistInfo] = None, sync: bool = False) -> None:
    """Leave the process group if this process created it.

    ``sync=True`` (a normal end) first waits for every rank: a gloo group torn down while another
    rank is still in its last collective can hang that rank. Not after an error (the other ranks
    may never arrive; torchrun stops them)."""
    if info is not None and info.initialized_here and dist.is_initialized():
        if sync:
            dist.barrier()
        # a DDP reducer still awaiting collection must die while the group lives: destroyed
        # after it (at exit, by the GC), it can hang the process
        gc.collect()
        dist.destroy_process_group()
