"""Prometheus metrics, read from the engine and session table at scrape time.

Nothing is recorded on the hot path for Prometheus: the engine keeps plain counters and a
tick histogram in numpy, and this collector turns them into metric families when scraped.
Each app gets its own registry (no global state: several engines can live in one process).
Labels carry states, driver types and fixed reason names only (never a session, URL or key,
so the number of series stays bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from .engine import TICK_BUCKETS, Engine
from .sessions import SessionState, SessionTable
from .stream.pipeline import LATENCY_BUCKETS


class EngineCollector(Collector):
    def __init__(self, engine: Engine, table: SessionTable, cost: Any) -> None:
        self.engine, self.table, self.cost = engine, table, cost

    def collect(self) -> Iterator[Any]:
        engine = self.engine
        states = GaugeMetricFamily("avatarfarm_sessions", "Sessions by state", labels=["state"])
        counts = {state: 0 for state in SessionState}
        for session in self.table.list(None):
            counts[session.state] += 1
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states

        frames = engine.all_counters()
        yield CounterMetricFamily(
            "avatarfarm_frames_rendered", "Frames rendered", value=frames["frames_rendered"]
        )
        yield CounterMetricFamily(
            "avatarfarm_frames_dropped",
            "Frames not made in time (the previous frame was repeated)",
            value=frames["frames_dropped"],
        )
        yield _tick_histogram(engine)
        yield GaugeMetricFamily(
            "avatarfarm_engine_lag_seconds",
            "How far past its due time the oldest frame of the last tick was (frames later "
            "than max_lateness_ms are dropped)",
            value=engine.lag_seconds,
        )
        yield CounterMetricFamily(
            "avatarfarm_render_seconds", "Time inside Renderer.render", value=engine.render_seconds
        )
        yield CounterMetricFamily(
            "avatarfarm_tick_errors", "Engine ticks that raised", value=engine.tick_errors
        )
        yield from _stream_metrics(engine)
        yield from _driver_metrics(engine)
        cost = GaugeMetricFamily(
            "avatarfarm_frame_cost_seconds", "Admission's predicted cost of one 1280x720 frame"
        )
        cost.add_metric([], self.cost.describe()["frame_cost_ms_720p"] / 1000)
        yield cost


def _tick_histogram(engine: Engine) -> HistogramMetricFamily:
    buckets, running = [], 0
    counts = engine.tick_buckets.tolist()
    for bound, count in zip((*TICK_BUCKETS, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(
        "avatarfarm_tick_duration_seconds",
        "Engine tick duration (render + hand-off to encoders)",
        buckets=buckets,
        sum_value=engine.tick_seconds,
    )


def _stream_metrics(engine: Engine) -> Iterator[Any]:
    encoded = encode_dropped = errors = reconnects = 0
    latency_counts = np.zeros(len(LATENCY_BUCKETS) + 1, np.int64)
    latency_sum = 0.0
    for session in engine.active_sessions():
        if session.pipeline is None:
            continue
        stats = session.pipeline.stats()
        latency_counts += stats["encode_latency"]["buckets"]
        latency_sum += stats["encode_latency"]["sum_seconds"]
        encoded += stats.get("frames_encoded", 0)
        encode_dropped += stats.get("frames_dropped", 0)
        errors += stats.get("encode_errors", 0)
        for output in stats.get("outputs", {}).values():
            reconnects += max(0, output.get("connects", 0) - 1)
    for name, doc, value in (
        ("avatarfarm_live_frames_encoded", "Frames encoded by live sessions", encoded),
        ("avatarfarm_live_encoder_queue_drops", "Frames dropped at live encoders' queues",
         encode_dropped),
        ("avatarfarm_live_encode_errors", "Encode errors in live sessions", errors),
        ("avatarfarm_live_output_reconnects", "Reconnects of live sessions' outputs", reconnects),
    ):  # fmt: skip
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], value)
        yield gauge
    bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
    yield HistogramMetricFamily(
        "avatarfarm_live_encode_latency_seconds",
        "Live sessions: frame hand-off to encoded packets (queue wait + encode)",
        buckets=list(zip(bounds, np.cumsum(latency_counts).tolist(), strict=True)),
        sum_value=latency_sum,
    )


DRIVER_TYPES = ("websocket", "audio", "vmc", "livelink", "api")
_ACCEPTED = frozenset({"packets", "applied", "bones", "flood"})


def _driver_metrics(engine: Engine) -> Iterator[Any]:
    """Live-input packets per driver type: received, rejected by reason, flood-dropped."""
    counts = engine.driver_counters.snapshot()
    received = CounterMetricFamily(
        "avatarfarm_driver_packets", "Driver packets/messages received", labels=["type"]
    )
    rejected = CounterMetricFamily(
        "avatarfarm_driver_rejected",
        "Driver input rejected or ignored (malformed, wrong source, stale, ...)",
        labels=["type", "reason"],
    )
    flood = CounterMetricFamily(
        "avatarfarm_driver_flood_dropped",
        "Driver packets the kernel dropped while the port was over its share of a core",
        labels=["type"],
    )
    for kind in DRIVER_TYPES:
        received.add_metric([kind], counts.get((kind, "packets"), 0))
        flood.add_metric([kind], counts.get((kind, "flood"), 0))
    for (kind, what), n in sorted(counts.items()):
        if what not in _ACCEPTED:
            rejected.add_metric([kind, what], n)
    yield received
    yield rejected
    yield flood


def build_registry(engine: Engine, table: SessionTable, cost: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, table, cost))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, fds
    return registry
