"""One training process's place in a run: its rank, the world size, its device, and the signals it obeys.

``torchrun`` starts one process per device and sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; a plain
``fdmobilenet train`` is a world of one, where every collective below is a no-op.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from .._errors import ParameterError
from .config import TrainConfig


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Combine a few numbers over processes (a no-op in a single process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        ops = torch.distributed.ReduceOp
        torch.distributed.all_reduce(t, ops.MAX if op == "max" else ops.SUM)
        return t.tolist()

    def barrier(self) -> None:
        """Wait for every process (a no-op in a single process)."""
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(cfg: TrainConfig) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("device", "`device` cuda was asked for but no CUDA GPU is available; use `device` cpu")
    device = torch.device("cuda", local) if want.startswith("cuda") else torch.device(want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":  # share the cores between the local processes
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local, device)


class Stop:
    """Remembers SIGTERM/SIGINT so the loop can checkpoint at the next step boundary, then exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
