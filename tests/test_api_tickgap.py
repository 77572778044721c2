"""HTTP handlers start between the engine's ticks (server/api/tickgap.py)."""

from __future__ import annotations

import asyncio
import threading
import time

from avatarfarm.render.renderer import Renderer
from avatarfarm.server.api.tickgap import MAX_WAIT_S, TickGap
from avatarfarm.server.engine import Engine


class _HeldTick:
    """A real engine whose tick, run on another thread, lasts until released."""

    def __init__(self) -> None:
        self.engine = Engine(Renderer("cpu"))
        self.started, self.release = threading.Event(), threading.Event()
        self.engine._tick = lambda now: (self.started.set(), self.release.wait(5))
        self.thread = threading.Thread(target=self.engine.tick, args=(0.0,))

    def __enter__(self) -> Engine:
        self.thread.start()
        assert self.started.wait(5)
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(5)


def _recording_app(seen: list, engine: Engine):
    async def app(scope, receive, send):
        seen.append((scope["type"], engine._ticking))

    return app


def test_after_tick_runs_once_when_the_running_tick_ends():
    engine = Engine(Renderer("cpu"))
    ran = []
    assert engine.after_tick(lambda: ran.append("now")) is False  # no tick: not kept
    inner = engine._tick

    def tick(now):
        assert engine.after_tick(lambda: ran.append(("after", engine._ticking)))
        ran.append("tick")
        inner(now)

    engine._tick = tick
    engine.tick(0.0)
    assert ran == ["tick", ("after", False)]
    engine._tick = inner
    engine.tick(1.0)
    assert ran == ["tick", ("after", False)]  # run once, not again


def test_a_request_arriving_mid_tick_starts_when_the_tick_ends():
    held = _HeldTick()
    seen: list = []

    async def scenario():
        with held as engine:
            gap = TickGap(_recording_app(seen, engine), engine)
            requests = [asyncio.create_task(gap({"type": "http"}, None, None)) for _ in range(3)]
            await gap({"type": "websocket"}, None, None)  # live driving never waits
            await asyncio.sleep(MAX_WAIT_S / 5)
            assert seen == [("websocket", True)]  # the HTTP handlers wait for the tick
            held.release.set()
            await asyncio.wait_for(asyncio.gather(*requests), 1)
        await gap({"type": "http"}, None, None)  # between ticks: at once

    asyncio.run(scenario())
    assert seen == [("websocket", True)] + [("http", False)] * 4


def _one_request_mid_tick(lag_s: float) -> tuple[list, float]:
    """Send one HTTP request while a tick runs whose engine is `lag_s` behind: what the
    app saw (type, ticking) and how long the request waited."""
    held = _HeldTick()
    seen: list = []

    async def scenario():
        with held as engine:
            engine.lag_seconds = lag_s
            gap = TickGap(_recording_app(seen, engine), engine)
            start = time.perf_counter()
            await gap({"type": "http"}, None, None)
            return time.perf_counter() - start

    return seen, asyncio.run(scenario())


def test_a_tick_longer_than_the_limit_holds_a_request_only_that_long():
    seen, waited = _one_request_mid_tick(0.0)
    assert seen == [("http", True)]  # served while the overlong tick still ran
    assert MAX_WAIT_S * 0.9 <= waited < 1.0


def test_an_engine_behind_schedule_holds_no_request():
    seen, waited = _one_request_mid_tick(0.040)  # ticks back to back: no gap after this one
    assert seen == [("http", True)]
    assert waited < MAX_WAIT_S / 2
