"""Block placement: which SM gets the next thread block (docs/model.md §6.5).

The block dispatcher decides *which kernel* gets blocks (leftover policy, priorities); a
:class:`BlockPlacement` decides *which SM* each block goes to, among the SMs that can hold it.
(Not to be confused with a *scheduling policy* (:mod:`sim.scheduling`), which maps a kernel
DAG onto streams.) Each placement states a per-block rule (:meth:`BlockPlacement.choose`,
used by the engine's exact mode) and places many blocks of one kernel at once
(:meth:`BlockPlacement.place`, used by the grouped mode) with exactly the result of applying
the rule block after block.

Bulk placement works on "items": SM ``i`` that can take ``cap_i`` more blocks offers items
``(i, m)`` for ``m = 0 .. cap_i - 1`` (its m-th extra block). Every rule below picks blocks
in a fixed total order of items, because taking a block from an SM only lowers that SM's
later items; so ``n`` blocks one by one are the first ``n`` items in that order.

Placements may keep per-run state (the round-robin cursor), so the engine builds a fresh one
per run from a factory (the class itself) or a name in :data:`PLACEMENTS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from gpu_models.errors import GpusimError
from gpu_models.occupancy import BlockFootprint
from sim.engine.resources import IntArray, SMArray

Placement = list[tuple[int, int]]


class BlockPlacement(ABC):
    """Chooses SMs for the blocks of one kernel."""

    name: ClassVar[str]

    def choose(self, fp: BlockFootprint, sms: SMArray,
               allowed: IntArray | None = None) -> int | None:
        """The SM for one block of footprint ``fp`` (``None`` if no SM can take it);
        ``allowed`` (a boolean mask over the SMs) restricts the choice to those SMs."""
        cap = sms.capacity(fp)
        if allowed is not None:
            cap = np.where(allowed, cap, 0)
        if not cap.any():
            return None
        return self._rule(cap, sms)

    def place(self, fp: BlockFootprint, n_blocks: int, sms: SMArray) -> Placement:
        """Up to ``n_blocks`` blocks as ``[(sm_id, count), ...]`` in SM order; the same
        result as calling :meth:`choose` and allocating, block after block."""
        counts = self.place_counts(sms.capacity(fp), n_blocks, fp, sms)
        return [(int(i), int(counts[i])) for i in np.flatnonzero(counts)]

    def place_counts(self, cap: IntArray, n_blocks: int, fp: BlockFootprint,
                     sms: SMArray) -> IntArray:
        """:meth:`place` as blocks per SM, given each SM's capacity ``cap`` for ``fp``
        (zero outside the SMs a kernel may use: the rule only ever picks SMs with room)."""
        total = int(cap.sum())
        if n_blocks >= total:
            return cap  # every free slot is taken: the order does not matter
        if n_blocks <= 0:
            return np.zeros_like(cap)
        counts = self._first_items(cap, n_blocks, sms)
        if counts is not None:
            return counts
        chosen = self._order(cap, fp, sms)[:n_blocks]
        return np.bincount(chosen, minlength=sms.count)

    def _first_items(self, cap: IntArray, n_blocks: int, sms: SMArray) -> IntArray | None:
        """The first ``n_blocks`` items per SM in closed form, where the rule gives one for
        this state (``None``: sort the items). Sorting is the general answer but costs a
        dozen numpy calls on arrays of every item; most placements meet a state simple
        enough to count."""
        return None

    def _order(self, cap: IntArray, fp: BlockFootprint, sms: SMArray) -> IntArray:
        """The SM of every item ``(sm, m)``, items sorted in the policy's order."""
        sm = np.repeat(np.arange(sms.count), cap)
        starts = np.cumsum(cap) - cap
        m = np.arange(len(sm)) - np.repeat(starts, cap)
        order = np.lexsort(self._keys(sm, m, fp, sms)[::-1])
        return sm[order]

    @abstractmethod
    def _rule(self, cap: IntArray, sms: SMArray) -> int:
        """The per-block rule: the SM to use among those with ``cap > 0``."""

    @abstractmethod
    def _keys(self, sm: IntArray, m: IntArray, fp: BlockFootprint,
              sms: SMArray) -> tuple[IntArray, ...]:
        """Sort keys of items, most significant first."""


class MostFreeResources(BlockPlacement):
    """The SM with the most free warps; ties go to the lowest SM id.

    Item key: (free warps before the block, descending; SM id, ascending). An SM's m-th
    extra block sees ``free_warps - m * warps_per_block`` free warps.
    """

    name = "most-free"

    def _rule(self, cap: IntArray, sms: SMArray) -> int:
        return int(np.argmax(np.where(cap > 0, sms.free_warps, -1)))

    def _keys(self, sm: IntArray, m: IntArray, fp: BlockFootprint,
              sms: SMArray) -> tuple[IntArray, ...]:
        return (-(sms.free_warps[sm] - m * fp.warps), sm)

    def _first_items(self, cap: IntArray, n_blocks: int, sms: SMArray) -> IntArray | None:
        # Every SM with the same free warps and room for the same blocks (an idle GPU, or
        # one wave of one kernel everywhere): the items go m by m, each sweep over the SMs
        # in id order, so every SM gets n // count and the first n % count one more.
        first = cap[0]
        free_warps = sms.free_warps
        if not first or not (cap == first).all() or not (free_warps == free_warps[0]).all():
            return None
        sweeps, rest = divmod(n_blocks, sms.count)
        counts = np.full(sms.count, sweeps, dtype=np.int64)
        counts[:rest] += 1
        return counts


class FirstFit(BlockPlacement):
    """The lowest-numbered SM that can hold the block. Item key: (SM id, m)."""

    name = "first-fit"

    def _rule(self, cap: IntArray, sms: SMArray) -> int:
        return int(np.flatnonzero(cap)[0])

    def _keys(self, sm: IntArray, m: IntArray, fp: BlockFootprint,
              sms: SMArray) -> tuple[IntArray, ...]:
        return (sm, m)

    def _first_items(self, cap: IntArray, n_blocks: int, sms: SMArray) -> IntArray | None:
        # SMs fill in id order: each takes what is left of n after those before it.
        before = np.cumsum(cap) - cap
        return np.clip(n_blocks - before, 0, cap)


class RoundRobin(BlockPlacement):
    """The next SM, cyclically after the one that got the previous block, that can hold it.

    Item key: (m, distance from the cursor around the ring): the cursor sweeps the ring
    and each sweep gives one more block to every SM that still has room.
    """

    name = "round-robin"

    def __init__(self) -> None:
        self.cursor = 0

    def _rule(self, cap: IntArray, sms: SMArray) -> int:
        candidates = np.flatnonzero(cap)
        return int(candidates[np.argmin((candidates - self.cursor) % sms.count)])

    def _keys(self, sm: IntArray, m: IntArray, fp: BlockFootprint,
              sms: SMArray) -> tuple[IntArray, ...]:
        return (m, (sm - self.cursor) % sms.count)

    def choose(self, fp: BlockFootprint, sms: SMArray,
               allowed: IntArray | None = None) -> int | None:
        sm = super().choose(fp, sms, allowed)
        if sm is not None:
            self.cursor = (sm + 1) % sms.count
        return sm

    def place_counts(self, cap: IntArray, n_blocks: int, fp: BlockFootprint,
                     sms: SMArray) -> IntArray:
        counts = super().place_counts(cap, n_blocks, fp, sms)
        if counts.any():
            # The last block placed is the greatest item (m, distance) taken: on the last
            # sweep (m = max count - 1), the SM farthest from the cursor.
            last_sweep = np.flatnonzero(counts == counts.max())
            last = last_sweep[np.argmax((last_sweep - self.cursor) % sms.count)]
            self.cursor = int(last + 1) % sms.count
        return counts


PlacementFactory = Callable[[], BlockPlacement]

#: Placements by name, for the CLI (``--placement``) and ``simulate(placement="...")``.
PLACEMENTS: dict[str, PlacementFactory] = {
    MostFreeResources.name: MostFreeResources,
    FirstFit.name: FirstFit,
    RoundRobin.name: RoundRobin,
}


def make_placement(placement: str | PlacementFactory) -> BlockPlacement:
    """A fresh placement from a name in :data:`PLACEMENTS` or a factory."""
    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise GpusimError(f"unknown block placement {placement!r}; choose from "
                              f"{', '.join(PLACEMENTS)}")
        return PLACEMENTS[placement]()
    return placement()
