"""The governing proxy: ``mavera-tui proxy [--listen 127.0.0.1:8787] [--db PATH]``.

Apps set their base URL to ``http://127.0.0.1:8787/api/v1`` and change nothing else. Every
request becomes a job of the engine (:class:`mavera_tui.governor.Governor`, one per API
key): it waits for the key's window and its endpoint's slot instead of meeting a 429, is
priced and pre-flighted (402 at once if the balance can never cover it: never sent), and
the API's answer goes back unchanged (status, headers, body; a streamed answer as its
events arrive). Overflow (``[proxy] max_queue`` waiting, or ``max_wait`` seconds without
being sent) is a 429 with a Retry-After, never a hang. When an app disconnects, its queued
request is dropped and its stream closed upstream (the slot is freed).

Keys: by default the key each app sends (``Authorization: Bearer``): several keys, several
engines and windows; keys live only in memory (the HTTP client's headers), named by a short
hash. ``--key-from-env``: apps send a local token and the proxy uses ``MAVERA_API_KEY``.
Optional request headers ``X-Mavera-Priority`` (a whole number, higher first) and
``X-Mavera-Caller`` (a name) are read and never forwarded (nothing from the app's headers
is: the engine's client sends its own). It listens on loopback unless told otherwise, and
then requires caller tokens (``--token``). Never imports textual.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import runloop
from .client import is_loopback_host
from .config import Config
from .errors import ConfigError
from .governor import GovernedResponse, Governor, error_body, key_id
from .jobs import PRIORITY_RANGE
from .store import Store

log = logging.getLogger("mavera_tui.proxy")

PRIORITY_HEADER = "X-Mavera-Priority"
CALLER_HEADER = "X-Mavera-Caller"
TOKEN_HEADER = "X-Mavera-Token"
#: Not passed back: they describe one hop (the proxy's own connection sets them).
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",  # the body comes decoded from the engine's client
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
    }
)
#: Most API keys (engines) one proxy serves: each holds a window, a connection pool and
#: tasks, and an app sending made-up keys must not grow them without end.
MAX_KEYS = 64


class TooManyKeys(Exception):
    """More API keys than ``MAX_KEYS``."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError if not."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"--listen {text!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:8787 (port 0: any free)"
        )
    return host, int(port)


def _own(status: int, message: str, type_: str, code: str) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(message, type_, code),
        content_type="application/json",
        headers={"X-Mavera-Governor": code},
    )


class _AppStream:
    """The stream sink for one app connection: an event stream goes out as it arrives."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None
        self.gone = False

    async def start(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        resp = web.StreamResponse(status=status)
        for k, v in headers:
            if k.lower() not in _HOP:
                resp.headers.add(k, v)
        self.resp = resp
        try:
            await resp.prepare(self.request)
        except Exception:
            self.gone = True
            raise

    async def write(self, chunk: bytes) -> None:
        assert self.resp is not None
        try:
            await self.resp.write(chunk)
        except Exception:
            self.gone = True
            raise

    async def end(self) -> None:
        assert self.resp is not None
        try:
            await self.resp.write_eof()
        except Exception:
            self.gone = True
            raise


@dataclass
class ProxyOptions:
    """How the proxy runs (beyond the settings model)."""

    key_from_env: bool = False
    db: str | None = None
    sim: Any = None  # an in-process simulator to front (tests, demos); None: the target


class Proxy:
    """The aiohttp.web application and its governors (one per API key)."""

    def __init__(self, config: Config, options: ProxyOptions | None = None) -> None:
        self.config = config
        self.options = options or ProxyOptions()
        raw = config.proxy.tokens or ""
        self.tokens = [t.strip() for t in raw.split(",") if t.strip()]
        self.governors: dict[str, Governor] = {}
        self._starting: dict[str, asyncio.Task[Governor]] = {}
        self.store: Store | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.host = ""
        self.requests = 0
        self.refused_auth = 0
        self.closing = False  # stopping: new requests are answered 503 at once

    # ------------------------------------------------------------------ lifecycle ----

    def app(self) -> web.Application:
        """The aiohttp application (every path goes to ``handle``)."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str, port: int) -> int:
        """Open the store, bind, serve; returns the port (useful with 0)."""
        if not is_loopback_host(host) and not self.tokens:
            raise ConfigError(
                f"listening on {host} (beyond loopback) needs caller tokens: give "
                "--token TOKEN (or [proxy] tokens) and have apps send it"
            )
        if self.options.db:
            self.store = await Store.open(self.options.db)
        if self.options.key_from_env:
            await self._governor(None)  # fail now (no key, bad URL), not at the first request
        # handler_cancellation: an app that disconnects cancels its handler, so a request
        # still queued is never sent and a stream is closed upstream.
        self.runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self.host = host
        return self.port

    async def stop(self) -> None:
        """Stop: new requests are answered 503; the engines stop sending, wait for what is
        in flight (paid for) and answer what still waits 503; then the server and the
        store close."""
        self.closing = True
        for g in list(self.governors.values()):
            await g.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.governors.clear()
        if self.store is not None:
            await self.store.close()
            self.store = None

    @property
    def url(self) -> str:
        """The base URL apps use."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"

    async def _governor(self, key: str | None) -> Governor:
        """The engine for ``key`` (None: MAVERA_API_KEY), started on first use."""
        kid = key_id(key) if key else "env"
        g = self.governors.get(kid)
        if g is not None:
            return g
        if len(self.governors) + len(self._starting) >= MAX_KEYS:
            raise TooManyKeys(f"this proxy already serves {MAX_KEYS} API keys")
        task = self._starting.get(kid)
        if task is None:

            async def make() -> Governor:
                gov = Governor(
                    self.config,
                    api_key=key,
                    store=self.store,
                    sim=self.options.sim,
                    resume=False,  # no app waits for a job of an earlier run
                    role="proxy",
                )
                await gov.start()
                return gov

            task = self._starting[kid] = asyncio.ensure_future(make())
        try:
            g = await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(kid, None)
        self.governors[kid] = g
        return g

    # -------------------------------------------------------------------- requests ----

    def _check_token(self, request: web.Request, bearer: str | None) -> bool:
        if not self.tokens:
            return True
        given = bearer if self.options.key_from_env else request.headers.get(TOKEN_HEADER)
        if not given:
            return False
        return any(hmac.compare_digest(given.encode(), t.encode()) for t in self.tokens)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One app request: to its key's governor, and the answer back unchanged."""
        self.requests += 1
        if self.closing:
            return _own(503, "mavera-tui proxy: stopping; not sent", "api_error", "proxy_stopping")
        path = request.path
        if not (path.startswith("/api/") or path.startswith("/v1/")):
            return _own(
                404,
                f"mavera-tui proxy: no route {path}; use the base URL http://HOST:PORT/api/v1",
                "invalid_request_error",
                "not_found",
            )
        bearer = _bearer(request.headers.get("Authorization"))
        if not self._check_token(request, bearer):
            self.refused_auth += 1
            where = "Authorization: Bearer" if self.options.key_from_env else TOKEN_HEADER
            return _own(
                401,
                f"mavera-tui proxy: send a caller token ({where})",
                "authentication_error",
                "invalid_proxy_token",
            )
        if not self.options.key_from_env and not bearer:
            self.refused_auth += 1
            return _own(
                401,
                "mavera-tui proxy: send your Mavera API key as 'Authorization: Bearer <key>' "
                "(or run the proxy with --key-from-env)",
                "authentication_error",
                "invalid_api_key",
            )
        try:
            priority = _priority(request.headers.get(PRIORITY_HEADER))
        except ValueError as e:
            return _own(400, f"mavera-tui proxy: {e}", "invalid_request_error", "invalid_priority")
        body: Any
        if request.method == "GET":
            body = dict(request.query)
        else:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (ValueError, UnicodeDecodeError):
                return _own(
                    400,
                    "mavera-tui proxy: the request body is not valid JSON",
                    "invalid_request_error",
                    "invalid_json",
                )
        try:
            gov = await self._governor(None if self.options.key_from_env else bearer)
        except TooManyKeys as e:
            return _own(503, f"mavera-tui proxy: {e}", "api_error", "too_many_keys")
        except ConfigError as e:
            return _own(502, f"mavera-tui proxy: {e}", "api_error", "proxy_not_configured")
        sink = (
            _AppStream(request) if isinstance(body, dict) and body.get("stream") is True else None
        )
        try:
            resp = await gov.request(
                request.method,
                path,
                json=body,
                priority=priority,
                caller=request.headers.get(CALLER_HEADER),
                sink=sink,
            )
        except Exception as e:  # a bug must not become aiohttp's bare 500 (or a hang)
            log.exception("proxy request failed")
            if sink is not None and sink.resp is not None:
                return sink.resp
            return _own(
                502,
                f"mavera-tui proxy: internal error ({type(e).__name__}); see the --debug log",
                "api_error",
                "proxy_error",
            )
        if sink is not None and sink.resp is not None:
            return sink.resp  # already sent as it arrived (or cut off by the app)
        return _response(resp)

    # --------------------------------------------------------------------- metrics ----

    def collect(self) -> Iterator[Any]:
        """Prometheus metric families: queue depth, wait by priority, refusals by reason,
        upstream 429s (target 0), requests and waiting by caller."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        govs = list(self.governors.items())
        depth = GaugeMetricFamily(
            "mavera_proxy_queue_depth", "Requests waiting to be sent, by key", labels=["key"]
        )
        r429 = CounterMetricFamily(
            "mavera_proxy_upstream_429", "429 answers from the API (target 0)", labels=["key"]
        )
        inflight = GaugeMetricFamily(
            "mavera_proxy_in_flight", "Requests in flight to the API, by key", labels=["key"]
        )
        sent = CounterMetricFamily(
            "mavera_proxy_upstream_requests", "Requests sent to the API", labels=["key"]
        )
        wait = SummaryMetricFamily(
            "mavera_proxy_wait_seconds",
            "Seconds a request waited before it was sent, by priority",
            labels=["priority"],
        )
        refused = CounterMetricFamily(
            "mavera_proxy_refusals", "Requests answered by the proxy itself", labels=["reason"]
        )
        callers = CounterMetricFamily(
            "mavera_proxy_caller_requests", "Requests by caller", labels=["caller"]
        )
        waiting = GaugeMetricFamily(
            "mavera_proxy_caller_waiting", "Requests waiting by caller", labels=["caller"]
        )
        waits: dict[int, tuple[int, float]] = {}
        reasons: dict[str, int] = {"auth": self.refused_auth}
        by_caller: dict[str, tuple[int, int]] = {}
        for kid, g in govs:
            sched = g.engine.scheduler
            if sched is None:
                continue
            with contextlib.suppress(Exception):  # read from the exporter's thread
                depth.add_metric([kid], g.queue_depth())
            r429.add_metric([kid], sched.stats.status_counts.get("429", 0))
            sent.add_metric([kid], sched.stats.requests_total)
            inflight.add_metric([kid], sched.slots.in_flight_total())
            for p, (n, total) in list(g.stats.waits.items()):
                n0, t0 = waits.get(p, (0, 0.0))
                waits[p] = (n0 + int(n), t0 + total)
            for reason, n in list(g.stats.refusals.items()):
                reasons[reason] = reasons.get(reason, 0) + n
            for name, c in list(g.stats.callers.items()):
                a, b = by_caller.get(name, (0, 0))
                by_caller[name] = (a + c.requests, b + c.waiting)
        for p, (n, total) in sorted(waits.items()):
            wait.add_metric([str(p)], count_value=n, sum_value=total)
        for reason, n in sorted(reasons.items()):
            refused.add_metric([reason], n)
        for name, (nreq, nwait) in sorted(by_caller.items()):
            callers.add_metric([name], nreq)
            waiting.add_metric([name], nwait)
        yield from (depth, inflight, r429, sent, wait, refused, callers, waiting)


class _ProxyCollector:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Any]:
        return self.proxy.collect()


def serve_proxy_metrics(proxy: Proxy, port: int, addr: str = "127.0.0.1") -> Any:
    """The proxy's metrics on ``addr:port`` (loopback by default); ``.close()`` stops."""
    from prometheus_client import CollectorRegistry, start_http_server

    from .metrics import MetricsServer

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_ProxyCollector(proxy))
    server, thread = start_http_server(port, addr=addr, registry=reg)
    return MetricsServer(server.server_address[1], server, thread)


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if text[:7].lower() != "bearer ":
        return None
    return text[7:].strip() or None


def _priority(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    try:
        p = int(value.strip())
    except ValueError:
        raise ValueError(
            f"{PRIORITY_HEADER} must be a whole number from {PRIORITY_RANGE[0]} to "
            f"{PRIORITY_RANGE[1]}, got {value[:40]!r}"
        ) from None
    if not PRIORITY_RANGE[0] <= p <= PRIORITY_RANGE[1]:
        raise ValueError(
            f"{PRIORITY_HEADER} must be from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}, got {p}"
        )
    return p


def _response(resp: GovernedResponse) -> web.Response:
    out = web.Response(status=resp.status, body=resp.content)
    # Body bytes as they came: the Content-Type is the API's own, not aiohttp's default.
    out.headers.popall("Content-Type", None)
    for k, v in resp.headers.items():
        if k.lower() not in _HOP:
            out.headers.add(k, v)
    return out


# ============================================================================ the CLI ====


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``mavera-tui proxy``: its own options, then the engine options every engine command
    takes (the settings model's)."""
    from . import config
    from .cli import _add_target_options, _port

    config.add_flag(p, "proxy.listen")
    p.add_argument("--db", default=None, help="SQLite file: every request's job and attempts")
    p.add_argument(
        "--key-from-env",
        action="store_true",
        help="apps send a local token (Authorization: Bearer); the proxy sends "
        "MAVERA_API_KEY instead (default: each app's own key is used)",
    )
    config.add_flag(p, "proxy.tokens")
    config.add_flag(p, "proxy.max_queue")
    config.add_flag(p, "proxy.max_wait")
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT (queue depth, waits, refusals, "
        "upstream 429s)",
    )
    p.add_argument(
        "--debug",
        metavar="FILE",
        default=None,
        help="write a debug log to FILE (never the key)",
    )
    _add_target_options(p)


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Returns the exit status."""
    from .cli import _setup_debug, loaded_config
    from .errors import EXIT_CANNOT_START, EXIT_OK, EXIT_USAGE

    _setup_debug(args.debug)
    cfg = loaded_config(args).config
    try:
        host, port = parse_listen(cfg.proxy.listen)
    except ConfigError as e:
        print(f"mavera-tui proxy: {e}", file=sys.stderr)
        return EXIT_USAGE
    proxy = Proxy(cfg, ProxyOptions(key_from_env=args.key_from_env, db=args.db))

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await proxy.start(host, port)
        except OSError as e:
            await proxy.stop()
            print(
                f"mavera-tui proxy: cannot listen on {host}:{port}: {e.strerror or e}; pick "
                "another --listen",
                file=sys.stderr,
            )
            return EXIT_CANNOT_START
        except BaseException:
            await proxy.stop()
            raise
        metrics = None
        if args.metrics_port is not None:
            try:
                metrics = serve_proxy_metrics(proxy, args.metrics_port)
            except OSError as e:
                await proxy.stop()
                print(
                    f"mavera-tui proxy: cannot serve metrics on port {args.metrics_port}: "
                    f"{e.strerror or e}",
                    file=sys.stderr,
                )
                return EXIT_CANNOT_START
        mode = "MAVERA_API_KEY for every app" if args.key_from_env else "each app's own key"
        target = next(iter(proxy.governors.values())).notice if proxy.governors else ""
        print(
            f"proxy listening on {proxy.url} ({mode}"
            + (f"; {target}" if target else f"; target {cfg.engine.base_url or 'the API'}")
            + (f"; metrics on 127.0.0.1:{metrics.port}" if metrics else "")
            + ")",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            print("proxy stopping: waiting for requests in flight", file=sys.stderr, flush=True)
            await proxy.stop()
            if metrics is not None:
                metrics.close()
        return EXIT_OK

    return runloop.run(serve())
