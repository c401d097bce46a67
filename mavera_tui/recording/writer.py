"""What a recording writes besides what the engine stores: snapshot blocks, packing, retention.

``RecordingWriter`` takes each snapshot the recorder reads, encodes it (``BlockEncoder``,
zblock1) and writes a block of up to ``block_snapshots`` at a time; every ``pack_every``
seconds it has the store pack the ledger's rows and the finished jobs into compressed
blocks (``Store.pack``), and with ``keep`` it prunes what is older (``Store.prune``). A
SIGKILL loses at most the snapshots of the block being filled (``block_snapshots``
intervals, 10 s at the default 1 s); packing moves rows in one transaction, so the ledger
and the jobs lose nothing. Never imports textual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..snapshot import Snapshot
from .codec import BLOCK_KEYFRAME_EVERY, BLOCK_SNAPSHOTS, BlockEncoder, SnapshotBlock
from .fleet import prune_fleet

__all__ = ["PACK_EVERY", "PRUNE_EVERY", "RecordingWriter"]

#: Seconds between retention passes: a pass folds and deletes at most about this much.
PRUNE_EVERY = 3600.0
#: Seconds between packing passes: the ledger's rows and finished jobs unpacked at most.
PACK_EVERY = 60.0


class RecordingWriter:
    """Snapshot blocks, packing and retention for one recording on ``store``."""

    def __init__(
        self,
        store: Any,
        clock: Clock,
        log: Callable[[str], None],
        *,
        keyframe_every: int = BLOCK_KEYFRAME_EVERY,
        block_snapshots: int = BLOCK_SNAPSHOTS,
        keep: float | None = None,
        prune_every: float = PRUNE_EVERY,
        pack_every: float | None = PACK_EVERY,
    ):
        self.store = store
        self.clock = clock
        self.log = log
        self.encoder = BlockEncoder(keyframe_every, block_snapshots)
        self.snapshots_written = 0
        self.bytes_written = 0
        self.encode_seconds = 0.0
        self.keep = keep  # retention in seconds; None keeps everything
        self.prune_every = max(1.0, float(prune_every))
        self.pack_every = None if pack_every is None else max(1.0, float(pack_every))
        self.pruned: dict[str, int] = {"ledger": 0, "snapshots": 0, "jobs": 0}
        self.packed: dict[str, int] = {"ledger": 0, "jobs": 0}
        self._last_t = 0.0
        self._group_bytes = 0  # bytes of the blocks not merged yet
        self._next_prune: float | None = None
        self._next_pack: float | None = None

    def write(self, snap: Snapshot) -> None:
        """Encode one snapshot; a block it completes goes to the store's writer."""
        # Its time is the snapshot's own (rounded), kept strictly increasing.
        t = round(snap.t, 3)
        t = t if t > self._last_t else round(self._last_t + 0.001, 3)
        self._last_t = t
        t0 = time.perf_counter()
        blocks = self.encoder.add(t, snap)
        self.encode_seconds += time.perf_counter() - t0
        self._store(blocks)
        self.snapshots_written += 1

    def flush(self) -> None:
        """Write the block being filled, and merge its group (at the end)."""
        t0 = time.perf_counter()
        blocks = self.encoder.flush(final=True)
        self.encode_seconds += time.perf_counter() - t0
        self._store(blocks)

    def _store(self, blocks: list[tuple[SnapshotBlock, bool]]) -> None:
        for block, merges in blocks:
            times = [round((t - block.t0) * 1000) for t in block.times]
            self.store.add_snapshot_block(
                block.t0, block.times[-1], block.key, times, block.data, merges=merges
            )
            if merges:  # what stays: the merged block, not its parts
                self.bytes_written -= self._group_bytes
                self._group_bytes = 0
            else:
                self._group_bytes += len(block.data)
            self.bytes_written += len(block.data)

    async def maintain(self) -> None:
        """Pack and prune when due (called every tick; a failed pass is retried at the
        next one and recording goes on)."""
        now = self.clock.now()
        if self.pack_every is not None and (self._next_pack is None or now >= self._next_pack):
            first = self._next_pack is None
            self._next_pack = now + self.pack_every
            if not first:  # nothing to pack at the start of a fresh file
                try:
                    for k, v in (await self.store.pack()).items():
                        self.packed[k] = self.packed.get(k, 0) + v
                except Exception as e:
                    self.log(f"packing failed: {type(e).__name__}: {e}")
        if self.keep is None or (self._next_prune is not None and now < self._next_prune):
            return
        self._next_prune = now + self.prune_every
        try:
            await self.prune()
        except Exception as e:
            self.log(f"retention failed: {type(e).__name__}: {e}")

    async def prune(self) -> dict[str, int]:
        """One retention pass: drop what is older than ``keep`` seconds (ledger rows and
        blocks, folded into the daily totals first; snapshots up to a keyframe; final
        jobs). Runs through the store's single writer. Returns the rows dropped per table."""
        if self.keep is None:
            return {}
        before = self.clock.wall() - self.keep
        dropped = await self.store.prune(before)
        # The fleet's archived ledger (record --shared) too, folded per day and process.
        dropped["fleet ledger"] = await prune_fleet(self.store, before)
        for k, v in dropped.items():
            self.pruned[k] = self.pruned.get(k, 0) + v
        if any(dropped.values()):
            self.log(
                "retention: dropped "
                + ", ".join(f"{v} {k} rows" for k, v in dropped.items() if v)
                + f" older than {self.keep / 86400:g} d (daily totals kept)"
            )
        return dropped

    async def finish(self) -> None:
        """The last block and a last packing pass (at a clean stop)."""
        self.flush()
        if self.pack_every is not None:
            try:
                for k, v in (await self.store.pack()).items():
                    self.packed[k] = self.packed.get(k, 0) + v
            except Exception as e:
                self.log(f"packing failed: {type(e).__name__}: {e}")
