"""When the batch can end, and what holding window room for a capped job costs it.

The window gives each of its ``L`` admissions back one window after it was used, so the
key's sends form ``L`` chains: a chain's next send is no earlier than a window after its
last. With ``S`` sends left, the ``S``-th future room, which is where the batch's last send
goes, is at ``p[rem] + q * P``: ``p`` the chains' phases (when each next gives room back)
sorted, ``S - 1 = q * L + rem`` and ``P`` the window plus the mirror's margin. The chains
ranked after ``rem`` carry one send fewer; those whose phase is well before
``p[rem] + P`` are spare (a chain ranked there only because it went first this round is
not).

Holding room for a capped job whose slot frees at ``t`` (``SlotGate.reserve_for_capped``)
moves the earliest chain to ``t``. That is free while ``t`` stays within the phases that
already decide the end (``p[rem]``), and costs the batch up to ``t - p[rem]`` past them. A
batch that fills its windows exactly (``S = k * L``) has no spare chain: before this plan,
capped jobs started mid-window as their slots freed pushed chains up to a window late, and
such batches ended a whole window after the bound (1.25-1.34 of it).

So holds are allowed up to a target end: the earliest end that both the window and the
capped endpoints can make, if capped jobs may start only within an allowance after each
round's first sends (a small simulation of their slots at measured latencies, a binary
search over the allowance). When capped work has slack, the target is the window's own
end and no hold costs anything; when it would otherwise end last, the window gives up as
much as makes both end together; and when it ends last whatever the window gives up, the
target is its end: the window's sends may move up to then at no cost.
"""

from __future__ import annotations

import bisect
import heapq

#: The allowance is searched to this fraction of a window (one 64th: about 1 s at 60 s).
_STEPS = 64


class EndPlan:
    """The batch's target end, recomputed when the capped work or the round changes."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self.target = 0.0  # the end holds may push the window's last send to (+ latency)
        self.window_end = 0.0  # the window's last send with no hold at all
        self.allowance = 0.0  # of a round, for capped starts past the free spread

    # --- the window's side ---------------------------------------------------------------

    @staticmethod
    def end_of(phases: list[float], sends: int, period: float) -> float:
        """The time of the last of ``sends`` sends if each takes the next room."""
        if sends <= 0 or not phases:
            return phases[0] if phases else 0.0
        q, rem = divmod(sends - 1, len(phases))
        return phases[rem] + q * period

    # --- the capped side -----------------------------------------------------------------

    @staticmethod
    def capped_end(
        work: list[tuple[list[float], int, float]],
        *,
        base: float,
        period: float,
        allowance: float,
        spare: int,
        lead: float,
    ) -> float:
        """When the capped work ends: per endpoint, its slots' free times, its queued jobs
        and their latency, each job started as a slot frees, unless that is more than
        ``allowance`` after its round's start (``base`` plus whole periods): then it takes
        one of the round's ``spare`` chains, or waits for the next round, where it starts
        ``lead`` after the round's start (when most of its chains give room back)."""
        heap: list[tuple[float, int]] = []
        left = []
        end = base
        for i, (lanes, n, _) in enumerate(work):
            left.append(n)
            for f in lanes:
                heap.append((f, i))
                end = max(end, f)
        heapq.heapify(heap)
        used: dict[int, int] = {}
        while heap:
            f, i = heapq.heappop(heap)
            if left[i] <= 0:
                continue
            left[i] -= 1
            rnd, off = divmod(f - base, period)
            if off > allowance:
                if used.get(int(rnd), 0) < spare:
                    used[int(rnd)] = used.get(int(rnd), 0) + 1
                else:  # the next round, as the bulk of its chains give room back
                    f += period - off + min(lead, allowance)
            e = f + work[i][2]
            end = max(end, e)
            heapq.heappush(heap, (e, i))
        return end

    def plan(
        self,
        key: tuple[object, ...],
        *,
        phases: list[float],
        sends: int,
        period: float,
        tail: float,
        capped: list[tuple[list[float], int, float]],
        base: float,
    ) -> float:
        """The target end for ``key`` (recomputed only when it changes). ``capped``: per
        capped endpoint with queued jobs, its slots' free times, its queued jobs and their
        latency; ``tail``: the latency of the batch's last (shortest) jobs; ``base``: the
        start of a round of the window's sends."""
        if key == self._key:
            return self.target
        self._key = key
        q, rem = divmod(max(sends, 1) - 1, len(phases))
        self.window_end = w_end = phases[rem] + q * period + tail
        # Chains not needed in the last round can start late, but only those with slack to
        # give: a chain a round ahead (it went before the others this round) has none.
        spare = sum(1 for p in phases[rem + 1 :] if phases[rem] + period - p >= period / 2)
        spread = (phases[rem] - base) % period

        def cap_end(extra: float) -> float:
            return self.capped_end(
                capped,
                base=base,
                period=period,
                allowance=spread + extra,
                spare=spare,
                lead=spread,
            )

        if not capped or cap_end(0.0) <= w_end:
            # Capped work ends in time with starts only where the window's end does not
            # move: nothing to give up.
            self.allowance, self.target = 0.0, w_end
            return self.target
        step = period / _STEPS
        lo, hi = 0, _STEPS  # the least allowance (in 64ths of a round) at which both meet
        top = cap_end(hi * step)
        if top > w_end + hi * step:
            # Capped work ends last whatever the window gives up: the best of a few. The
            # batch then ends when the capped work does, and the window's sends may move
            # up to then at no cost: holding room for capped starts is free until there.
            # (Aiming at the window's end plus the allowance instead, holds were refused
            # and capped slots idled half of each window for want of an admission: a
            # batch bound by its focus groups ended at 1.1-1.3 of that bound.)
            ends = {i: cap_end(i * step) for i in range(0, _STEPS, 4)} | {_STEPS: top}
            best = min(ends, key=lambda i: max(ends[i], w_end + i * step))
            self.allowance = best * step
            self.target = max(ends[best], w_end + self.allowance)
            return self.target
        while lo < hi:
            mid = (lo + hi) // 2
            if cap_end(mid * step) <= w_end + mid * step:
                hi = mid
            else:
                lo = mid + 1
        self.allowance = lo * step
        self.target = w_end + self.allowance
        return self.target

    @staticmethod
    def holds_within(
        phases: list[float], starts: list[float], sends: int, period: float, limit: float
    ) -> int:
        """How many of ``starts`` (capped starts, ascending) may hold a room each while the
        window's last send stays at or before ``limit``: each hold moves the earliest
        chain to its start."""
        p = list(phases)
        limit = max(limit, EndPlan.end_of(p, sends, period)) + 1e-6  # free holds always go
        n = 0
        for t in starts:
            if not p:
                break
            p.pop(0)
            bisect.insort(p, t)
            if EndPlan.end_of(p, sends, period) > limit:
                break
            n += 1
        return n
