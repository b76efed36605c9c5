"""Seeded augmentation and a resumable, shardable epoch order.

Augmentation randomness is a function of (seed, epoch, sample index) and the epoch order a function
of (seed, epoch), so a resumed run, a run with more data-loader workers and a run split across
processes all see exactly the same augmented batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from .._errors import ParameterError
from .._utils import mix


class SeededView(Dataset):
    """``view[(index, epoch)]`` is ``base[index]`` with the global torch RNG seeded from (seed, epoch, index)
    while the transform runs, so augmentation does not depend on workers, processes or where a run resumed."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix(self.seed, epoch, i))
            return self.base[i]


class EpochOrder(Sampler):
    """The indices this process reads in one epoch, from global step ``start_step`` on.

    The epoch is a permutation seeded by (seed, epoch) cut into global batches (the last partial
    one dropped); each global batch is split into ``world`` equal contiguous shards, one per rank.
    This is ``DistributedSampler`` plus the ability to skip the batches a resumed run already did.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, epoch: int, start_step: int = 0):
        if global_batch % world:
            raise ParameterError(
                "batch_size", f"`batch_size` {global_batch} must be divisible by the {world} processes"
            )
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.epoch, self.start_step = seed, epoch, start_step

    @property
    def steps(self) -> int:
        return self.n // self.batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * (self.batch // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix(self.seed, self.epoch))).tolist()
        per = self.batch // self.world
        for s in range(self.start_step, self.steps):
            lo = s * self.batch + self.rank * per
            for i in perm[lo : lo + per]:
                yield i, self.epoch
