"""A data order that survives a killed training run.

Johnson et al. 2016 train for 40k steps (hours on a GPU); clusters preempt and
kill such jobs. To resume *exactly* - the same images in the same order with
the same random crops as an uninterrupted run - the data order must be a pure
function of (seed, epoch, position) and the checkpoint must record how far into
the epoch training got:

- :class:`ResumableSampler` shuffles with a generator seeded by (seed, epoch),
  shards the order over DDP ranks, and hands out ``(index, crop_seed)`` pairs:
  the dataset draws its random crop from ``crop_seed``, so crops depend neither
  on worker processes nor on RNG state that a checkpoint does not hold.
- :class:`ResumableDataLoader` counts the batches it has handed out this epoch
  and exposes ``state_dict``/``load_state_dict``, which Lightning saves in its
  checkpoints (``loops.fit_loop.state_dict.combined_loader``) and restores
  before the first batch of a resumed run; the sampler then skips the batches
  already trained on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def crop_rng(key: int | tuple[int, int]) -> tuple[int, random.Random | None]:
    """``(index, rng)`` for a dataset item key.

    A ``(index, crop_seed)`` key from :class:`ResumableSampler` gets its own
    seeded generator; a plain index (validation, direct use) gets None, meaning
    "use torch's global RNG".
    """
    if isinstance(key, tuple):
        index, seed = key
        return int(index), random.Random(int(seed))
    return int(key), None


def randrange(rng: random.Random | None, n: int) -> int:
    """A random integer in [0, n) from ``rng``, or from torch's RNG if it is None."""
    if rng is not None:
        return rng.randrange(n)
    return int(torch.randint(0, n, ()).item())


class _Length(Sized):
    """Stands in for the dataset in DistributedSampler, which only needs its length."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle, sharded over ``num_replicas`` ranks, that can start mid-epoch.

    Subclassing ``DistributedSampler`` tells Lightning not to wrap it in its own
    distributed sampler under DDP: the sharding is done here (each rank takes
    every ``num_replicas``-th item of the shared permutation; the tail that does
    not divide evenly is dropped, so all ranks take the same number of steps).
    Yields ``(index, crop_seed)``.
    """

    def __init__(self, *, length: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(
            _Length(length),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        # Items of this rank's shard to skip at the start of the next iteration.
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g)[: self.total_size].tolist()
        start, self.start = self.start, 0
        for pos in range(self.rank + start * self.num_replicas, self.total_size, self.num_replicas):
            # One crop seed per (seed, epoch, position), identical on every run.
            yield order[pos], (self.seed * 2**32 + self.epoch) * 2**32 + pos

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position in the epoch is checkpointed by Lightning."""

    def __init__(self, dataset: Dataset, *, sampler: ResumableSampler, **kwargs: Any):
        super().__init__(dataset, sampler=sampler, drop_last=True, **kwargs)
        self._consumed = 0  # batches handed out in the current epoch
        self._resume_at = 0  # batches to skip on the next iteration (set by load_state_dict)

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        start, self._resume_at = self._resume_at, 0
        sampler.start = start * self.batch_size
        self._consumed = start
        for batch in super().__iter__():
            # Counted when handed to the training loop: worker prefetching does
            # not move the saved position.
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableSampler = self.sampler
        return {
            "epoch": int(sampler.epoch),
            "batches": int(self._consumed),
            "seed": int(sampler.seed),
            "samples": len(sampler.dataset),
            "num_replicas": int(sampler.num_replicas),
            "batch_size": int(self.batch_size),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableSampler = self.sampler
        now = self.state_dict()
        keys = ("seed", "samples", "num_replicas", "batch_size")
        diff = [f"{k} {state.get(k)} -> {now[k]}" for k in keys if state.get(k) != now[k]]
        changed = ", ".join(diff)
        if changed:
            log.warning(
                "the data changed since the checkpoint (%s): the epoch's data order "
                "restarts instead of continuing where it stopped",
                changed,
            )
            return
        sampler.set_epoch(state["epoch"])
        # A checkpoint from the end of an epoch resumes at the start of the next.
        self._resume_at = state["batches"] if state["batches"] < len(self) else 0
