"""Prometheus metrics, one registry per app so several apps can live in one process (tests).

Under ``bridge serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by ``bridge.workers``)
every worker writes its values to the shared directory and ``render()`` adds up all of
them, so a scrape that lands on any worker sees the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Seconds. A turn's latency includes the model's VAD silence (about half a second) and the
# model's own thinking, so its buckets reach far; clear and store writes are short.
TURN_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
CLEAR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TOOL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# An idle loop wakes well within a millisecond; a caller hears tens of milliseconds.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_started = Counter(
            "bridge_calls_started",
            "Calls accepted, by channel (twilio, sip, openai-sip)",
            ["channel"],
            registry=self.registry,
        )
        self.calls_active = Gauge(
            "bridge_calls_active",
            "Calls in progress, by channel",
            ["channel"],
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

        self.turn_latency = Histogram(
            "bridge_turn_latency_seconds",
            "From the caller's end of speech to the agent's first audio sent to the line",
            ["channel"],
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.clear_latency = Histogram(
            "bridge_clear_latency_seconds",
            "From the caller starting to talk over the agent to the agent's audio being "
            "cleared from the line",
            ["channel"],
            buckets=CLEAR_BUCKETS,
            registry=self.registry,
        )
        self.store_write = Histogram(
            "bridge_store_write_seconds",
            "Time one call-record write (call, turn, event, finish) took, retries included",
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self.store_queue = Gauge(
            "bridge_store_queue_depth",
            "Call-record writes waiting for the store",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.tool_latency = Histogram(
            "bridge_tool_call_seconds",
            "Time an agent's tool call took, by tool",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "bridge_tool_calls",
            "Agents' tool calls, by tool and outcome (ok, error)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "bridge_event_loop_lag_seconds",
            "How late the event loop woke from a timed sleep: grows when the bridge is short "
            "of CPU",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.draining = Gauge(
            "bridge_draining",
            "1 while the bridge drains (takes no new calls) after SIGTERM",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def render(self) -> bytes:
        if _multiprocess():
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
