"""Prometheus metrics, one registry per app so several apps can live in one process (tests).

Under ``bridge serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by ``bridge.workers``)
every worker writes its values to the shared directory and ``render()`` adds up all of
them, so a scrape that lands on any worker sees the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_started = Counter(
            "bridge_calls_started", "Media streams accepted", registry=self.registry
        )
        self.calls_active = Gauge(
            "bridge_calls_active",
            "Calls in progress",
            registry=self.registry,
            multiprocess_mode="livesum",  # the workers' calls added up, dead ones left out
        )
        self.calls_finished = Counter(
            "bridge_calls_finished",
            "Calls ended, by status and reason",
            ["status", "end_reason"],
            registry=self.registry,
        )
        self.barge_ins = Counter("bridge_barge_ins", "Barge-ins handled", registry=self.registry)
        self.rejected = Counter(
            "bridge_requests_rejected",
            "Requests refused before costing anything",
            ["reason"],
            registry=self.registry,
        )
        self.bad_input = Counter(
            "bridge_media_bad_input", "Media sockets closed for bad input", registry=self.registry
        )

        self.provider_errors = Counter(
            "bridge_provider_errors",
            "Model sessions lost or refused, by provider and kind (unreachable, dropped, "
            "expired, limit, refused)",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "bridge_realtime_reconnects",
            "Fresh model sessions opened mid-call, by why (dropped, expired, rollover, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "bridge_realtime_fallbacks",
            "Calls moved to the fallback provider",
            ["from_provider", "to_provider"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        if _multiprocess():
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
