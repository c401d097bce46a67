"""When the balance is first read: before the first job, later where it costs the batch no
window (``balance_read``), or, with ``--shared``, once for the whole fleet (adopted by the
processes that did not read it). A mixin of :class:`.balance.BalanceKeeper`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import catalog

if TYPE_CHECKING:
    from ..shared.state import SharedBalance
    from .loop import Scheduler

log = logging.getLogger("mavera_tui.balance")


class FirstRead:
    """The first balance read of a scheduler's run: when, and whose."""

    s: Scheduler
    body: Any
    when: str
    overlapped: bool
    deferred: asyncio.Task[None] | None

    if TYPE_CHECKING:  # the keeper's, used here

        async def refresh(self, lease: str | None = None) -> bool: ...

        def announce_park(self, kind: str, why: str, said: str | None = None) -> None: ...

    # --- when to read it first ---------------------------------------------------------

    async def plan(self, batch: int) -> bool:
        """``balance_read`` auto or end before a batch of ``batch`` jobs: True to read the
        balance first after all, else the read is deferred (or the fleet's adopted)."""
        s = self.s
        when = s.config.balance_read
        later = when == "end" or self.would_spill(batch)
        if when == "auto" and s.fleet is not None:
            # A fleet's batch is the sum of its processes' parts, which none of them
            # knows: the read goes where it costs the fleet's queued work nothing.
            if s.fleet.shares_balance:
                got = await s.fleet.take_balance(claim=False)
                if not isinstance(got, str):
                    self.adopt(got)  # one of the fleet read it: no read at all
                    return False
            later = True
            self.fleet_read_later()
        elif later:
            self.read_later(batch)
        if later:
            # Nor is the limit read before the first job: it teaches it (one job, the
            # quickest, goes alone first).
            s.window_gate.learning = s.config.limit is None
        return not later

    def would_spill(self, batch: int | None) -> bool:
        """Whether a read before a batch of ``batch`` jobs would cost it a whole window: the
        batch fills its windows exactly, so one more request is the first of another
        window. The limit as configured or learned; unknown, a multiple of the basic
        tier's 120 (which divides every tier's above the lowest) is taken to spill. A
        batch that is a multiple of the starter tier's 60 alone is read first: if the key
        is a starter key that costs it a window (420 jobs: 1.17 of the bound), else
        nothing, where a job sent alone to learn the limit first costs every batch its
        latency (1.05 instead of 1.03 at 420 jobs on a basic key)."""
        s = self.s
        lim = s.window.limit
        if s.config.limit is None and not s.window.limit_learned:
            lim = catalog.TIERS["basic"]
        return batch is not None and batch >= lim and batch % lim == 0

    def read_later(self, batch: int) -> None:
        """Read the balance when it costs the batch nothing: as soon as the key's limit, once
        learned, leaves room for it (the batch is not a multiple of it), or else once every
        job of the batch has been sent and the window has room before the batch ends (a
        batch that ends first is not kept waiting for it: its summary has no balance)."""
        s = self.s
        s._alert(
            "info",
            "balance_later",
            f"balance read after the batch: {batch} jobs fill their windows of "
            f"{s.window.limit} exactly, and a read first would cost a whole window more; "
            "pre-flight checks start with the read, and the API's 402 stops an overdraft",
        )
        self.when = "none"  # until it is read (a batch that ends first is never read)
        self.deferred = asyncio.create_task(self._read_later(batch), name="balance-later")

    async def _read_later(self, batch: int) -> None:
        s = self.s
        tick = min(0.25, s.window.window / 40)
        while not s._closing:
            await s.clock.sleep(tick)
            learned = s.window.limit_learned and not self.would_spill(batch)
            sent_all = s.stats.first_send is not None and not s.queue.any_ready()
            if learned or (sent_all and s.queue.next_due() is None):
                if s.fleet is not None and s.fleet.shares_balance:
                    got = await s.fleet.take_balance(claim=False)
                    if not isinstance(got, str):
                        self.adopt(got)  # another process of the fleet read it
                        return
                if await self.refresh():
                    self.when = "during" if learned else "end"
                    return
                await s.clock.sleep(1.0)  # a lost answer: try again shortly

    async def first(self) -> bool:
        """The balance before the first job. Pre-flight is blind without it: a lost answer
        (5xx, drop, timeout) is worth a couple of retries. In a fleet, a fresh balance of
        the fleet's is adopted instead, or one process reads it while the others wait."""
        s = self.s
        if s.fleet is not None and s.fleet.shares_balance:
            got = await self._fleet_first_read()
            if got is not None:
                return got
        return await self._read_with_retries()

    async def _read_with_retries(self) -> bool:
        s = self.s
        for delay in (1.0, 2.0, 0.0):
            if await self.refresh():
                return True
            if s._closing or not delay:
                break
            await s.clock.sleep(delay)
        return False

    async def _fleet_first_read(self) -> bool | None:
        """Adopt, read for the fleet, or wait for the process reading it. None: read it
        ourselves (Redis away, or the reader took longer than a window and a request
        timeout: a read of ours would wait for the same window)."""
        s, fleet = self.s, self.s.fleet
        assert fleet is not None
        give_up = time.monotonic() + s.window.window + min(30.0, s.config.request_timeout)
        waited = False
        while not s._closing:
            got = await fleet.take_balance(claim=True)
            if not isinstance(got, str):
                self.adopt(got)
                return True
            if got == "claimed":
                # Ours to read for the fleet: the claim is renewed while we read (with the
                # retries), and published or dropped at the end.
                keeper = asyncio.create_task(fleet.hold_claim(), name="balance-claim")
                try:
                    ok = await self._read_with_retries()
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await keeper
                if ok:
                    await fleet.published()
                else:
                    await fleet.drop_claim()
                return ok
            if got != "wait" or time.monotonic() > give_up:
                return None
            if not waited:
                waited = True
                log.debug("waiting for the balance another process of the fleet reads")
            await asyncio.sleep(0.02)
        return False

    def adopt(self, sb: SharedBalance) -> None:
        """Take the fleet's balance as ours, as if we had read it ``sb.age`` seconds ago
        (the credit gate re-reads an old one before refusing on it)."""
        from ..shared.balance import adopted  # only with --shared (Redis's client)

        s = self.s
        bal = adopted(sb)
        s.credits.read_balance(s.clock.now() - sb.age)
        self.overlapped = False
        self.body = None
        self.when = "shared"
        st = s.stats
        if st.balance_start is None and st.first_send is None:
            st.balance_start, st.balance_start_wall = bal.total, s.clock.wall() - sb.age
        for a in s.budget.set_balance(bal):
            s._alert(a.level, a.kind, a.message)
        s._alert(
            "info",
            "balance_shared",
            f"balance {bal.total} adopted from the fleet (read by {sb.by} {sb.age:.1f} s "
            "ago, less what the fleet was charged since): no read of our own",
        )
        if bal.total is not None and bal.total <= 0 and s.credits.hold is None:
            # The fleet ran out (another process's 402, or its read after one): paid jobs
            # wait for credits as a 402 of our own would have them, not refused outright.
            from .. import client as api

            s.credits.refused(api.CREDITS, "insufficient_credits", True)
            self.announce_park(api.CREDITS, "the fleet's balance is 0")

    # --- a fleet's deferred read (balance_read auto with --shared) ----------------------

    def fleet_read_later(self) -> None:
        """In a fleet, ``auto`` reads the balance when the read costs the fleet nothing:
        into room of the shared window that no queued send of any process needs (the
        fleet's batch may fill its windows exactly, which no process can tell from its
        own part of it). One process reads it for the fleet; the others adopt it."""
        s = self.s
        s._alert(
            "info",
            "balance_later",
            "balance read deferred: with --shared and balance_read auto it goes into room "
            "of the key's window that no queued job of the fleet needs (or is adopted from "
            "the process of the fleet that read it); the API's 402 stops an overdraft",
        )
        self.when = "none"
        self.deferred = asyncio.create_task(self._fleet_read_later(), name="balance-later")

    async def _fleet_read_later(self) -> None:
        s, fleet = self.s, self.s.fleet
        assert fleet is not None
        ep = catalog.ENDPOINTS["billing_credits"]
        tick = min(0.25, s.window.window / 40)
        try:
            while not s._closing:
                await s.clock.sleep(tick)
                if s.stats.first_send is None and s.queue.any_ready():
                    continue  # our part of the batch has not started: it is not counted yet
                got = await fleet.take_balance(claim=fleet.shares_balance)
                if not isinstance(got, str) and fleet.shares_balance:
                    self.adopt(got)
                    return
                if got != "claimed" and fleet.shares_balance:
                    continue  # another process reads it for the fleet (or Redis is away)
                lease = await fleet.admit_free(ep)
                if lease is None:
                    continue  # not free yet (the claim is renewed at the next tick)
                sent_all = not s.queue.any_ready() and s.queue.next_due() is None
                if await self.refresh(lease=lease):
                    self.when = "end" if sent_all else "during"
                    return
                await fleet.drop_claim()
                await s.clock.sleep(1.0)  # a lost answer: try again shortly
        finally:
            if fleet.shares_balance and not s._closing:
                await fleet.drop_claim()
