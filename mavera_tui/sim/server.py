"""Serve the simulator on a real port with uvicorn (real loop time): ``mavera-tui sim``.

The CLI wires ``add_arguments`` into its ``sim`` sub-command and calls ``main(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from .. import catalog
from .app import SimulatedDrop, Simulator, create_sim
from .config import (
    REMAINING_AT,
    REMAINING_COUNTS,
    RESET_MEANINGS,
    RETRY_AFTER_MODES,
    WINDOW_KINDS,
    AutoRecharge,
    Faults,
    Readings,
    SimConfig,
)

if TYPE_CHECKING:
    import uvicorn  # imported when a server is built: the in-process simulator needs none


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options: where to listen, the account, the readings of the rate-limit
    docs, and the common faults."""
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--tier",
        choices=list(catalog.TIERS),
        default=catalog.DEFAULT_TIER,
        help="rate-limit tier (default %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="requests per window, overriding the tier"
    )
    parser.add_argument(
        "--plan",
        choices=list(catalog.PLANS),
        default=catalog.DEFAULT_PLAN,
        help="credit plan (default %(default)s)",
    )
    parser.add_argument(
        "--allocation",
        type=int,
        default=None,
        help="monthly credits, overriding the plan (required for enterprise)",
    )
    parser.add_argument(
        "--period-used", type=int, default=0, help="allocation already used this month"
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=catalog.WINDOW_SECONDS,
        help="window length W in seconds (default %(default)g)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for charges, latencies, faults")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies simulated latencies (0: instant)"
    )
    parser.add_argument("--purchased", type=int, default=0, help="purchased credits at start")
    parser.add_argument("--auto-recharge", action="store_true", help="enable auto-recharge")
    parser.add_argument(
        "--budget-cap",
        type=int,
        default=None,
        help="workspace hard cap in credits (402 budget_exceeded beyond)",
    )
    r = parser.add_argument_group(
        "readings",
        "how this server reads the rate-limit docs where they leave room "
        "(defaults: the simulator's original choices)",
    )
    r.add_argument(
        "--remaining-counts",
        choices=REMAINING_COUNTS,
        default="after",
        help="X-RateLimit-Remaining counted after this request or before it "
        "(one higher) (default %(default)s)",
    )
    r.add_argument(
        "--remaining-at",
        choices=REMAINING_AT,
        default="arrival",
        help="Remaining and Reset computed when the request arrives or when the "
        "answer leaves (default %(default)s)",
    )
    r.add_argument(
        "--reset",
        choices=RESET_MEANINGS,
        default="oldest",
        help="X-RateLimit-Reset is the oldest counted arrival + W, now + W, or "
        "the next multiple of W (minute) (default %(default)s)",
    )
    r.add_argument(
        "--window-kind",
        choices=WINDOW_KINDS,
        default="sliding",
        help="a sliding window, or fixed calendar windows of W aligned to "
        "multiples of W (default %(default)s)",
    )
    f = parser.add_argument_group("faults")
    f.add_argument("--error-rate", type=float, default=0.0, help="share of 500/503 answers")
    f.add_argument("--drop-rate", type=float, default=0.0, help="share of dropped connections")
    f.add_argument("--slow-rate", type=float, default=0.0, help="share of very slow answers")
    f.add_argument(
        "--slow-seconds",
        type=float,
        default=120.0,
        help="extra delay of a slow answer (default %(default)g)",
    )
    f.add_argument(
        "--bad-headers",
        type=float,
        default=0.0,
        help="share of answers with wrong X-RateLimit-* headers",
    )
    f.add_argument(
        "--retry-after",
        choices=RETRY_AFTER_MODES,
        default="seconds",
        help="how 429s carry Retry-After (default %(default)s)",
    )
    f.add_argument(
        "--storm-start",
        type=float,
        default=0.0,
        help="seconds after the first request when a 429 storm starts",
    )
    f.add_argument("--storm-seconds", type=float, default=0.0, help="429 storm length")
    f.add_argument(
        "--foreign-rpm",
        type=float,
        default=0.0,
        help="other traffic on the same key, requests per minute",
    )
    f.add_argument(
        "--runs-out-after",
        type=int,
        default=None,
        help="credits after which the balance is exhausted",
    )
    f.add_argument(
        "--hostile-text", action="store_true", help="escape sequences and markup in messages"
    )
    f.add_argument(
        "--bad-body-rate",
        type=float,
        default=0.0,
        help="share of 200s with a non-JSON or truncated body",
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """A SimConfig from parsed ``add_arguments`` options (ValueError if inconsistent)."""
    faults = Faults(
        error_5xx_rate=args.error_rate,
        drop_rate=args.drop_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        bad_headers=args.bad_headers,
        retry_after_mode=args.retry_after,
        storm_start=args.storm_start,
        storm_seconds=args.storm_seconds,
        foreign_rpm=args.foreign_rpm,
        balance_runs_out_after=args.runs_out_after,
        hostile_text=args.hostile_text,
        bad_body_rate=args.bad_body_rate,
    )
    return SimConfig(
        tier=args.tier,
        limit=args.limit,
        window_seconds=args.window_seconds,
        plan=args.plan,
        allocation=args.allocation,
        period_used=args.period_used,
        purchased=args.purchased,
        seed=args.seed,
        time_scale=args.time_scale,
        auto_recharge=AutoRecharge(enabled=args.auto_recharge),
        budget_cap=args.budget_cap,
        faults=faults,
        readings=Readings(
            remaining_counts=args.remaining_counts,
            remaining_at=args.remaining_at,
            reset=args.reset,
            window_kind=args.window_kind,
        ),
    )


def describe(sim: Simulator, host: str, port: int) -> str:
    cfg = sim.config
    readings = cfg.readings.describe()
    return (
        f"simulator listening on http://{host}:{port}/api/v1 "
        f"(tier {cfg.tier} {cfg.effective_limit}/min, plan {cfg.plan} "
        f"{cfg.monthly_allocation} credits, window {cfg.window_seconds:g} s"
        + (f"; readings: {readings}" if readings else "")
        + ")"
    )


class _QuietDrops(logging.Filter):
    """Simulated drops are on purpose: keep uvicorn from logging a traceback for each."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDrop)


def build_server(sim: Simulator, host: str, port: int) -> uvicorn.Server:
    """A uvicorn Server for ``sim`` (not started). Also used by tests."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    config = uvicorn.Config(
        sim, host=host, port=port, log_level="warning", lifespan="on", access_log=False
    )
    return uvicorn.Server(config)


def bound_port(server: uvicorn.Server) -> int:
    """The port a started uvicorn Server listens on (useful with port 0)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("server has no listening socket")


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a bad --port or --host is one line (OSError,
    OverflowError for an out-of-range port) instead of uvicorn's two tracebacks."""
    if not 0 <= port <= 65535:
        raise OverflowError(f"--port must be from 0 to 65535 (0: any free port), got {port}")
    family, _, _, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and accepted sockets inherit it. socket.create_server leaves it 0, and
    # Nagle's algorithm with delayed ACKs then holds every answer 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def main(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C. Returns the exit status (``errors.EXIT_*``)."""
    from ..errors import EXIT_CANNOT_START, EXIT_OK, EXIT_USAGE

    try:
        sim = create_sim(config_from_args(args))
    except ValueError as exc:
        print(f"mavera-tui sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = _listen(args.host, args.port)
    except OverflowError as exc:
        print(f"mavera-tui sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        code = exc.errno
        why = os.strerror(code) if isinstance(code, int) and code > 0 else exc.strerror or exc
        print(
            f"mavera-tui sim: cannot listen on {args.host}:{args.port}: {why}; pick another "
            "--port (0: any free port) or --host",
            file=sys.stderr,
        )
        return EXIT_CANNOT_START
    server = build_server(sim, args.host, args.port)

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            print(describe(sim, args.host, bound_port(server)), flush=True)
        await task

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits when it cannot start
        return EXIT_CANNOT_START
    finally:
        sock.close()
    if not server.started:
        return EXIT_CANNOT_START
    print("simulator stopped", flush=True)
    return EXIT_OK
