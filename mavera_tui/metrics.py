"""Prometheus metrics: the engine's latest snapshot in the Prometheus text format.

A custom Collector reads whatever snapshot its source returns (the recorder's or the
monitor's last one: immutable, so reading it from the HTTP server's thread is safe) and
exposes the counters and gauges the vendor's docs say to watch. prometheus-client writes
the format; ``serve_metrics`` binds 127.0.0.1 only and stops with ``close()``.
Headless: never imports textual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .snapshot import IN_FLIGHT, Snapshot

PREFIX = "mavera"


class SnapshotCollector(Collector):
    """Metrics from ``source()``, a callable returning the latest Snapshot (or None)."""

    def __init__(self, source: Callable[[], Snapshot | None]):
        self.source = source

    def collect(self) -> Iterator[Any]:
        snap = self.source()
        if snap is None:
            return
        yield from snapshot_metrics(snap)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def snapshot_metrics(s: Snapshot) -> Iterator[Any]:
    """The metric families for one snapshot."""
    yield _counter("requests", "Requests sent by this engine", s.requests_total)
    yield _counter("responses_429", "Rate-limit (429) responses", s.responses_429_total)
    yield _counter(
        "responses_402", "Payment required (402) responses", s.status_counts.get("402", 0)
    )
    yield _counter("retries", "Requests that were retries of a job", s.retries_total)
    yield _counter(
        "credits_used", "Credits charged for this engine's requests", s.credits_used_total
    )
    status = CounterMetricFamily(
        f"{PREFIX}_responses", "Responses by HTTP status or error kind", labels=["status"]
    )
    for k, v in sorted(s.status_counts.items()):
        status.add_metric([k], v)
    yield status
    by_ep = CounterMetricFamily(
        f"{PREFIX}_credits_used_by_endpoint", "Credits charged per endpoint", labels=["endpoint"]
    )
    est = CounterMetricFamily(
        f"{PREFIX}_credits_estimated_by_endpoint",
        "Estimates of settled jobs per endpoint (estimated vs actual)",
        labels=["endpoint"],
    )
    sent = CounterMetricFamily(
        f"{PREFIX}_requests_by_endpoint", "Requests per endpoint", labels=["endpoint"]
    )
    inflight = GaugeMetricFamily(
        f"{PREFIX}_endpoint_in_flight", "Requests in flight per endpoint", labels=["endpoint"]
    )
    cap = GaugeMetricFamily(
        f"{PREFIX}_endpoint_concurrency_cap", "The endpoint's concurrency cap", labels=["endpoint"]
    )
    for e in s.endpoints:
        by_ep.add_metric([e.key], e.credits_used_total)
        est.add_metric([e.key], e.estimated_total)
        sent.add_metric([e.key], e.sent_total)
        inflight.add_metric([e.key], e.in_flight)
        if e.cap is not None:
            cap.add_metric([e.key], e.cap)
    yield from (by_ep, est, sent, inflight, cap)
    yield _gauge("rate_limit_limit", "Requests allowed per window", s.limit)
    yield _gauge(
        "rate_limit_window_used",
        "Requests counted in the current window (requests per minute at the default 60 s window)",
        s.window_used,
    )
    yield _gauge("rate_limit_foreign", "Estimated requests of other clients on the key", s.foreign)
    if s.remaining is not None:
        yield _gauge("rate_limit_remaining", "Last X-RateLimit-Remaining seen", s.remaining)
    q = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs by waiting state", labels=["state"])
    for k, v in sorted(s.queue.items()):
        if k != IN_FLIGHT:
            q.add_metric([k], v)
    yield q
    yield _gauge("in_flight", "Requests in flight", s.in_flight)
    fin = CounterMetricFamily(f"{PREFIX}_jobs_finished", "Jobs by final state", labels=["state"])
    for k, v in sorted(s.finished.items()):
        fin.add_metric([k], v)
    yield fin
    if s.balance is not None:
        yield _gauge("credits_balance", "Credits remaining (plan + purchased)", s.balance)
    yield _gauge("credits_reserved", "Estimates held by admitted jobs", s.reserved)
    burn = GaugeMetricFamily(
        f"{PREFIX}_burn_rate_credits_per_minute",
        "Credits per minute over a trailing window",
        labels=["window"],
    )
    for w, rate in (("1m", s.burn_1m), ("5m", s.burn_5m), ("15m", s.burn_15m)):
        burn.add_metric([w], rate)
    yield burn
    if s.eta_s is not None:
        yield _gauge("credits_eta_seconds", "Seconds until credits run out at burn_5m", s.eta_s)
    yield _gauge("snapshot_timestamp_seconds", "Wall time of the snapshot", s.t)


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of one snapshot (for tests and one-off dumps)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap))
    return generate_latest(reg)


@dataclass
class MetricsServer:
    """A running exporter; ``close()`` stops it."""

    port: int
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    source: Callable[[], Snapshot | None] | int,
    port: int | Callable[[], Snapshot | None],
    addr: str = "127.0.0.1",
) -> MetricsServer:
    """Serve ``source()``'s metrics on ``addr:port`` (loopback only by default); port 0
    picks a free port (see ``.port``). ``source`` runs on the server's thread: give it
    something that returns an already-built snapshot, not a live scheduler's method."""
    if isinstance(source, int) and callable(port):  # (port, source), as monitor.py calls it
        source, port = port, source
    assert callable(source) and isinstance(port, int)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(source))
    server, thread = start_http_server(port, addr=addr, registry=reg)
    return MetricsServer(server.server_address[1], server, thread)
