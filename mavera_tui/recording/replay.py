"""Replay: a recording played back through the same monitor, with a REPLAY marker and a time bar.

``ReplayEngine`` implements EngineControl read-only over the recorded snapshots:
``snapshot()`` is the recorded snapshot at the cursor (mode "replay"), pause/resume are the
replay's pause/play, submit and cancel refuse. It decodes lazily (from the nearest
keyframe), and rebuilds the chart History from the snapshots before the cursor whenever
the cursor jumps. ``ReplayApp`` (:mod:`mavera_tui.ui.replay_app`) is the monitor plus the
time bar and its keys. The engine part never imports textual; the app is imported only when
a replay is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..estimate import Estimate, Verdict
from ..history import History
from ..jobs import JobSpec
from ..snapshot import Snapshot
from .codec import BlockFrame, DecodeError, FrameDecoder, is_key_frame, state_to_snapshot
from .timespec import TimeContext, parse_time

SPEEDS = (1.0, 10.0, 60.0)
READ_ONLY = "a replay is read-only: nothing can be submitted or cancelled"


@dataclass(frozen=True)
class ReplayPosition:
    """Where the cursor is, for the time bar."""

    t: float
    index: int
    total: int
    start: float
    end: float
    playing: bool
    speed: float


class ReplayEngine:
    """EngineControl over recorded snapshots ``(t, frame)`` in time order (a frame: a
    zdelta1 blob, or a snapshot of a zblock1 block; ``Recording.snapshot_rows``).

    ``now`` is the real clock playback runs on (injectable so tests need no sleeps).
    ``generation`` changes whenever the cursor moves other than forward in sequence: the
    monitor then rebuilds its charts with ``history_at``.
    """

    def __init__(
        self,
        rows: list[tuple[float, bytes | BlockFrame]],
        alerts: list[float] | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        target: str = "",
    ):
        rows = [(float(t), b if isinstance(b, BlockFrame) else bytes(b)) for t, b in rows if b]
        if not rows:
            raise ValueError("the recording holds no snapshots")
        self.times = [t for t, _ in rows]
        self.frames = [b for _, b in rows]
        self.keyframes = [i for i, b in enumerate(self.frames) if is_key_frame(b)] or [0]
        self.alert_times = sorted(alerts or [])
        self.now = now
        self.target = target
        self.playing = False
        self.speed = SPEEDS[0]
        self.generation = 0
        self._dec = FrameDecoder()
        self._dec_index: int | None = None  # index the decoder's state is at
        self.index = 0
        self._snap: Snapshot | None = None
        self._anchor: tuple[float, float] = (0.0, self.times[0])  # (real, recording t)
        self._goto(0)
        if self._snap is None:
            raise ValueError("no snapshot in the recording can be decoded")

    # --- loading ------------------------------------------------------------------------

    @classmethod
    async def load(cls, path: str, **kw: Any) -> ReplayEngine:
        """Read a recording (read-only). Raises StoreError / ValueError with a clear message."""
        from .reader import Recording

        async with await Recording.open(path) as rec:
            rows = await rec.snapshot_rows()
            alerts = await rec.alert_times()
        if not rows:
            raise ValueError(f"{path} holds no snapshots (was it written by `record`?)")
        return cls(rows, alerts, target=rec.target, **kw)

    # --- decoding -----------------------------------------------------------------------

    def _keyframe_before(self, i: int) -> int:
        k = bisect.bisect_right(self.keyframes, i) - 1
        return self.keyframes[max(0, k)]

    def _decode_to(self, i: int) -> None:
        """Bring the decoder to index ``i``; on damage keep the last good snapshot."""
        if self._dec_index == i:
            self.index = i
            return
        start = self._dec_index
        kf = self._keyframe_before(i)
        if start is None or start > i or start < kf:
            self._dec.reset()
            start = kf - 1
        st = None
        for j in range(start + 1, i + 1):
            try:
                st = self._dec.decode(self.frames[j])
            except DecodeError:  # st stays the last good frame's (index too)
                self._dec_index = None
                continue
            self._dec_index = j
            self.index = j
        if st is not None:  # only the frame shown becomes a Snapshot: seeking stays cheap
            self._snap = replace(state_to_snapshot(st, self._dec.names), mode="replay")

    def _goto(self, i: int, *, rebuild: bool = True) -> None:
        """Move the cursor; ``rebuild`` tells the monitor to rebuild its charts."""
        self._decode_to(max(0, min(len(self.times) - 1, i)))
        if rebuild:
            self.generation += 1
        self._anchor = (self.now(), self.times[self.index])

    # --- EngineControl ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self.playing:
            real0, t0 = self._anchor
            target = t0 + (self.now() - real0) * self.speed
            i = bisect.bisect_right(self.times, target) - 1
            if i > self.index:
                self._decode_to(i)
            if self.index >= len(self.times) - 1:
                self.playing = False
        assert self._snap is not None
        return replace(self._snap, paused=not self.playing)

    async def submit(self, spec: JobSpec) -> str:
        raise ValueError(READ_ONLY)

    def pause(self) -> None:
        self.playing = False

    def resume(self) -> None:
        if self.index >= len(self.times) - 1:
            self._goto(0)
        self.playing = True
        self._anchor = (self.now(), self.times[self.index])

    def cancel(self, job_id: str) -> bool:
        return False

    def preflight(self, est: Estimate) -> Verdict:
        return Verdict(False, est.high, est.high, 0, 0, 0, READ_ONLY)

    # --- replay controls ------------------------------------------------------------------

    def toggle(self) -> bool:
        """Play/pause; returns True if now playing."""
        self.pause() if self.playing else self.resume()
        return self.playing

    def step(self, n: int) -> None:
        """Move ``n`` snapshots (negative: back); pauses playback."""
        self.playing = False
        self._goto(self.index + n, rebuild=n != 1)

    def cycle_speed(self) -> float:
        self.speed = (
            SPEEDS[(SPEEDS.index(self.speed) + 1) % len(SPEEDS)]
            if self.speed in SPEEDS
            else SPEEDS[0]
        )
        self._anchor = (self.now(), self.times[self.index])
        return self.speed

    def seek(self, t: float) -> None:
        """Jump to the last snapshot at or before ``t`` (the first one if ``t`` is earlier)."""
        self._goto(max(0, bisect.bisect_right(self.times, t) - 1))

    def next_alert(self) -> float | None:
        """Jump to the first snapshot showing the next alert after the cursor; its time."""
        cur = self.times[self.index]
        k = bisect.bisect_right(self.alert_times, cur)
        if k >= len(self.alert_times):
            return None
        t = self.alert_times[k]
        i = min(len(self.times) - 1, bisect.bisect_left(self.times, t))
        self._goto(i)
        return t

    def position(self) -> ReplayPosition:
        return ReplayPosition(
            self.times[self.index],
            self.index,
            len(self.times),
            self.times[0],
            self.times[-1],
            self.playing,
            self.speed,
        )

    def history_at(self, bucket_s: float = 10.0, span_s: float = 900.0) -> History:
        """The charts' History as it stood at the cursor: fed with the snapshots of the
        last ``span_s`` seconds up to it (decoded with a separate decoder)."""
        h = History(bucket_s, span_s)
        end = self.index
        first = bisect.bisect_left(self.times, self.times[end] - span_s)
        dec = FrameDecoder()
        for j in range(self._keyframe_before(first), end + 1):
            try:
                st = dec.decode(self.frames[j])
            except DecodeError:
                continue
            if j >= first:
                h.add(state_to_snapshot(st, dec.names, rows=False))
        return h

    def parse_goto(self, text: str) -> float:
        """A time typed by the operator, in the one time grammar (recording/timespec.py):
        relative forms such as ``+5m``/``-90s`` count from the cursor."""
        ctx = TimeContext(self.times[0], self.times[-1], self.times[self.index])
        return parse_time(text, ctx)


# ====================================================================== the app =======


def create_replay_app(engine: ReplayEngine, **kw: Any) -> Any:
    """The monitor over ``engine`` with the time bar and replay keys (imports textual:
    :mod:`mavera_tui.ui.replay_app`)."""
    from ..ui.replay_app import ReplayApp

    return ReplayApp(engine, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``replay`` subcommand's options."""
    p.add_argument("file", help="a recording (the --db of `mavera-tui record`)")
    p.add_argument(
        "--at",
        help="start at this time: unix seconds, ISO, HH:MM, start+5m, "
        "end-10m (the forms of the g key and of report --since)",
    )
    p.add_argument("--speed", type=float, choices=SPEEDS, default=1.0)
    p.add_argument("--play", action="store_true", help="start playing at once")
    from .. import config

    config.add_flag(p, "ui.refresh")
    p.add_argument("--debug", metavar="LOG", help="write a debug log to this file")


def main(args: argparse.Namespace) -> int:
    """``mavera-tui replay``: exit code; an unreadable file is one line on stderr."""
    import sqlite3

    from ..errors import EXIT_CANNOT_START, EXIT_USAGE
    from ..store import StoreError

    try:
        engine = asyncio.run(ReplayEngine.load(args.file))
    except (StoreError, ValueError) as e:  # not a recording, or one with no snapshot
        print(f"replay: {e}", file=sys.stderr)
        return EXIT_CANNOT_START
    except sqlite3.DatabaseError as e:
        print(f"replay: {args.file} is damaged: {e}", file=sys.stderr)
        return EXIT_CANNOT_START
    if getattr(args, "at", None):
        try:
            engine.seek(engine.parse_goto(args.at))
        except ValueError as e:  # a bad --at
            print(f"replay: {e}", file=sys.stderr)
            return EXIT_USAGE
    engine.speed = float(getattr(args, "speed", 1.0) or 1.0)
    if getattr(args, "play", False):
        engine.resume()
    from ..cli import loaded_config

    ui = loaded_config(args).config.ui
    app = create_replay_app(
        engine, refresh=ui.refresh, debug_log=getattr(args, "debug", None), keys=ui.keys
    )
    app.run()
    return app.return_code or 0
