"""The balance: reading it, re-reading it on demand, polling it while jobs are parked,
and reconciling charges we could not read. The credit gate decides on the numbers; this
module fetches them, through the window like any request of ours."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import catalog
from .. import client as api
from .. import snapshot as S
from ..catalog import Endpoint
from ..client import Outcome, parse_balance
from . import credits as C
from .first_read import FirstRead

if TYPE_CHECKING:
    from .loop import Scheduler


def purchases_since(body: Any, since_wall: float) -> int:
    """Credits purchased (auto-recharge, dashboard) after ``since_wall``, from the billing
    answer's transaction history (absent or unreadable: 0)."""
    txs = body.get("transactions") if isinstance(body, dict) else None
    total = 0
    for tx in txs if isinstance(txs, list) else []:
        if not isinstance(tx, dict) or tx.get("type") != "purchase":
            continue
        amount, ts = tx.get("amount"), tx.get("timestamp")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            continue
        try:
            when = datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
        except (TypeError, ValueError):
            continue
        if when >= since_wall - 1.0:
            total += int(abs(amount))
    return total


class BalanceKeeper(FirstRead):
    """Reads GET /billing/credits for a scheduler and runs its balance tasks. With
    ``--shared`` the first read is the fleet's: adopted when another process of the key
    read it (:mod:`..shared.balance`), else read by one process for all of them."""

    def __init__(self, sched: Scheduler) -> None:
        self.s = sched
        self.path = catalog.ENDPOINTS["billing_credits"].path
        self.body: Any = None  # the last billing answer
        self.poller: asyncio.Task[None] | None = None
        self.verifier: asyncio.Task[None] | None = None
        self.deferred: asyncio.Task[None] | None = None
        self.when = "start"  # when the first balance read was made: start, during, end
        # The last balance adopted was read with jobs of ours in flight. The docs do not say
        # when a request is charged: a server that charges at arrival had already taken
        # theirs, and we take each again when its answer comes (the batch's end balance
        # too low by what was running). Re-read at the end (reconcile) when the window
        # has room, with nothing in flight.
        self.overlapped = False
        self._busy_at_write = 0
        self._read_at_ms: float | None = None  # Redis time of the last read's admission

    def tasks(self) -> list[asyncio.Task[None]]:
        """The balance tasks running (to cancel on close or abort)."""
        return [t for t in (self.poller, self.verifier, self.deferred) if t is not None]

    async def refresh(self, lease: str | None = None, *, adopt: bool = True) -> bool:
        """GET /billing/credits through the window; adopt the balance. False on failure.
        ``lease``: the fleet already admitted it (a deferred read). ``adopt`` False: a read
        for the fleet only (published to it, not taken as this process's own balance)."""
        s, ep = self.s, catalog.ENDPOINTS["billing_credits"]
        out = await self.send(ep, self.path, lease)
        if out is not None and out.status == 404 and self.path == ep.path:
            # The packs page documents GET /api/billing/credits, outside /api/v1: a server
            # that only serves that path is found here once and remembered.
            alt = getattr(s.transport, "origin_path", lambda p: None)(catalog.BILLING_ALT_PATH)
            if alt:
                out2 = await self.send(ep, alt)
                if out2 is not None and out2.status != 404:
                    self.path, out = alt, out2
        if out is None:
            return False
        bal = parse_balance(out.body) if out.ok else None
        if bal is None:
            if out.ok:
                s._alert(
                    "warning",
                    "balance_unreadable",
                    "GET /billing/credits answered without a balance we could read",
                )
            return False
        if not adopt:
            if s.fleet is not None:
                s.fleet.balance(bal, self._read_at_ms)
            return True
        s.credits.read_balance(s.clock.now())
        self.overlapped = self._busy_at_write > 0 or s.slots.in_flight_total() > 0
        s.slots.note_latency("billing_credits", out.latency)
        self.body = out.body
        st = s.stats
        if st.balance_start is None and st.first_send is None:
            # Only a balance read before our first job is a baseline for reconciling.
            st.balance_start, st.balance_start_wall = bal.total, s.clock.wall()
        for a in s.budget.set_balance(bal):
            s._alert(a.level, a.kind, a.message)
        if s.fleet is not None:
            s.fleet.balance(bal, self._read_at_ms)
        return True

    async def send(self, ep: Endpoint, path: str, lease: str | None = None) -> Outcome | None:
        """One request of the engine's own (not a job): waits for the window like any other.
        ``lease``: already admitted by the fleet."""
        s = self.s
        window = s.window
        while True:
            now = s.clock.now()
            if s._closing:
                if s.fleet is not None and lease is not None:
                    s.fleet.done_own(lease, None)
                return None
            if window.available(now) > 0:
                break
            await s.clock.sleep(max(0.01, window.next_free(now) - now))
        if s.fleet is not None and lease is None:
            lease = await s.fleet.admit_own(ep)
        self._read_at_ms = s.fleet.own_at.get(lease) if s.fleet and lease else None
        if s._closing:
            if s.fleet is not None:
                s.fleet.done_own(lease, None)
            return None
        window.reserve()
        s.stats.sent(ep.key)
        self._busy_at_write = s.slots.in_flight_total()
        stamp, kw = s._stamper(None)
        out: Outcome | None = None
        try:
            out = await s.transport.request(
                ep.method, path, None, timeout=min(30.0, s.config.request_timeout), **kw
            )
        finally:
            if stamp.at is None:
                window.release()
            if s.fleet is not None:
                s.fleet.done_own(lease, out)
        now = stamp.at if stamp.at is not None else now
        done = s.clock.now()
        window.observe(now, done, out.headers, s.clock.wall())
        s.stats.answered(out)
        # The documented fallback is an absolute URL on the API's host: the ledger keeps
        # paths, as for every other row.
        s._ledger(None, ep, urlsplit(path).path if "://" in path else path, 1, now, out, 0)
        if out.error is not None and out.error.kind == api.RATE_LIMITED:
            s._hold_key(out, done, now)
        return out

    def verify(self) -> None:
        """Re-read the balance, then give the jobs waiting on it their verdict again (at
        most one read at a time)."""
        if self.verifier is None or self.verifier.done():
            self.verifier = asyncio.create_task(self._verify(), name="balance-verify")

    async def _verify(self) -> None:
        s = self.s
        if not await self.refresh():
            s.credits.read_balance(s.clock.now())  # unreadable: decide on what we have
        s._release(s.credits.settle_wait)

    def start_credit_poll(self) -> None:
        """After a 402: poll the balance until the parked jobs can go."""
        if self.poller is None or self.poller.done():
            self.poller = asyncio.create_task(self._credit_poll_loop(), name="credit-poll")

    def announce_park(self, kind: str, why: str, said: str | None = None) -> None:
        """Paid jobs were just parked (a 402 of ours, or the fleet's balance at 0): say so,
        with what the server ``said`` (rendered literally), and poll the balance until they
        can go."""
        self.s._alert(
            "error",
            kind,
            f"{why}: jobs that cost credits are parked; polling the balance every "
            f"{self.s.config.credit_poll:g} s" + ("" if said is None else f". Server said: {said}"),
        )
        self.start_credit_poll()

    def start_refresh(self) -> None:
        """Re-read the balance every ``balance_refresh`` seconds (when set)."""
        if self.s.config.balance_refresh > 0:
            self.poller = asyncio.create_task(self._refresh_loop(), name="balance-refresh")

    async def _credit_poll_loop(self) -> None:
        """While jobs wait for credits: poll the balance; resume when it covers them."""
        s, gate = self.s, self.s.credits
        while gate.hold is not None and not s._closing:
            await s.clock.sleep(s.config.credit_poll)
            if s._closing:
                return
            ok = await self.refresh()
            n = sum(1 for j in gate.parked if j.state == S.WAITING_CREDITS)
            action, job = gate.poll(ok)
            if action == C.POLL_PROBE and job is not None:
                s._enqueue(job)
                s._alert("info", "probe", f"probing the workspace budget with {job.id}")
                s._wake.set()
                return
            if action == C.POLL_RESUME:
                s._release(gate.parked)
                s._alert(
                    "info",
                    "credits_resumed",
                    f"credits available ({s.budget.total}): resumed {n} parked jobs",
                )
                return
            if action == C.POLL_STOP:
                return

    async def _refresh_loop(self) -> None:
        s = self.s
        while not s._closing:
            await s.clock.sleep(s.config.balance_refresh)
            if not s._paused:
                await self.refresh()

    async def reconcile(self) -> None:
        """After a run with charges we could not read (drops after the work, timeouts,
        unreadable answers): read the balance again and, if its movement is consistent
        with what we know (at least the known charges, at most known + the unknown
        attempts' estimates), adopt it as what the API charged."""
        s, st = self.s, self.s.stats
        if not st.credits_unknown_attempts:
            if any(j.state in (S.BLOCKED, S.WAITING_CREDITS) for j in s.jobs.values()):
                # Jobs were refused for credits: end on the API's balance, not on ours (a
                # server that charges at arrival had already taken what was running when
                # we last read it, and we took it again as the answers came).
                await self.refresh()
            elif (
                self.overlapped
                and s.slots.in_flight_total() == 0
                and s.window.available(s.clock.now()) > 0
            ):
                # The same for a balance read while jobs ran (balance_read auto reads a
                # batch that fills its windows exactly after its last send): one more read
                # now that nothing runs, only if the window has room (the batch is not
                # kept waiting for it; else its end balance is ours, maybe too low). In a
                # fleet our own window says nothing of the others' work: only if the read
                # takes room none of their queued jobs needs.
                if s.fleet is None:
                    await self.refresh()
                elif lease := await s.fleet.admit_free(catalog.ENDPOINTS["billing_credits"]):
                    await self.refresh(lease=lease)
            return
        if st.balance_start is None:
            st.reconcile_note = "no balance was read before the first job: cannot reconcile"
            return
        if not await self.refresh() or s.budget.total is None:
            st.reconcile_note = "could not read the balance to reconcile unknown charges"
            return
        purchases = purchases_since(self.body, st.balance_start_wall)
        moved = st.balance_start - s.budget.total + purchases
        known = s.credits_used_total
        if known <= moved <= known + st.credits_unknown_max:
            st.credits_reconciled = moved - known
            st.credits_extra = moved - s.budget.spent
            st.reconcile_note = (
                f"{moved - known} credits of {st.credits_unknown_attempts} "
                "attempt(s) with unreadable outcomes, from the balance"
            )
        else:
            st.reconcile_note = (
                f"the balance moved by {moved}, not between {known} and "
                f"{known + st.credits_unknown_max}: other spending on "
                "the account? credits_used counts only readable charges"
            )
