"""Operator presence: standby after N s without input, resume on input, history kept."""

from __future__ import annotations

import pytest

from avatarfarm.server.drivers.presence import PresenceMonitor


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_standby_after_timeout_and_resume_on_input() -> None:
    clock = Clock()
    mon = PresenceMonitor(operator_required=True, timeout=10.0, clock=clock)
    assert mon.poll() == "active"  # grace period from session start
    clock.t += 10.5
    assert mon.poll() == "standby"
    mon.record("vmc", "192.168.1.20:39539")
    assert mon.poll() == "active"
    clock.t += 9.0
    assert mon.poll() == "active"
    clock.t += 1.5
    assert mon.poll() == "standby"


def test_without_operator_required_always_active() -> None:
    clock = Clock()
    mon = PresenceMonitor(operator_required=False, timeout=1.0, clock=clock)
    clock.t += 100
    assert mon.poll() == "active"


def test_history_records_connections_and_silence() -> None:
    clock = Clock(0.0)
    mon = PresenceMonitor(operator_required=True, timeout=5.0, clock=clock)
    mon.connect("websocket", "10.0.0.2:4000")
    clock.t = 1.0
    mon.record("websocket", "10.0.0.2:4000")
    mon.record("livelink", "10.0.0.3:55000")
    clock.t = 3.0
    mon.record("livelink", "10.0.0.3:55000")
    clock.t = 20.0
    assert mon.poll() == "standby"
    clock.t = 21.0
    mon.disconnect("websocket", "10.0.0.2:4000")
    mon.record("livelink", "10.0.0.3:55000")  # the phone comes back: a new record
    history = mon.history()
    assert [(h["type"], h["connected_at"], h["disconnected_at"]) for h in history] == [
        ("websocket", 0.0, 21.0),  # a WebSocket stays connected while silent
        ("livelink", 1.0, 8.0),  # UDP: closed timeout s after its last packet
        ("livelink", 21.0, None),
    ]
    assert history[0]["address"] == "10.0.0.2:4000"
    assert history[2]["last_input_at"] == 21.0
    mon.disconnect("livelink")
    assert mon.history()[2]["disconnected_at"] == 21.0


def test_history_is_bounded() -> None:
    clock = Clock(0.0)
    mon = PresenceMonitor(history_limit=3, timeout=1.0, clock=clock)
    for i in range(10):
        clock.t = float(i * 10)
        mon.record("vmc", f"10.0.0.{i}:1")
        mon.poll()
    history = mon.history()
    assert len(history) == 3
    assert history[-1]["address"] == "10.0.0.9:1"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PresenceMonitor(timeout=0)
