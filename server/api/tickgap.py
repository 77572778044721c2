"""HTTP requests start in the gaps between the engine's ticks.

Where render and encode threads keep the CPU busy (the CPU backend on a few cores), a
request handled mid-tick takes its CPU from the tick's kernel threads, and a parallel
stage pays for a core taken from it several times over at its barrier. So a request that
arrives mid-tick waits for that tick to end, at most MAX_WAIT_S, before its handler runs:
it then shares the CPU with the encoders, whose queues absorb the delay, not with the
tick. WebSockets (live driving) never wait; neither does anything while no tick runs, or
while the engine is behind schedule: its ticks then follow each other at once, so waiting
would only slow the request (a client sending one request at a time would get one a tick).
"""

from __future__ import annotations

import asyncio
from typing import Any

MAX_WAIT_S = 0.05  # a tick longer than this (an overloaded engine) no longer holds requests


class TickGap:
    """ASGI middleware: an HTTP request's handler starts after the running tick."""

    def __init__(self, app: Any, engine: Any) -> None:
        self.app, self.engine = app, engine
        self._gap: asyncio.Future | None = None  # the end of the running tick, shared

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._after_tick()
        await self.app(scope, receive, send)

    async def _after_tick(self) -> None:
        gap = self._gap
        if gap is None or gap.done():
            loop = asyncio.get_running_loop()
            gap = loop.create_future()
            if not self.engine.after_tick(lambda: _wake(loop, gap)):
                return  # between ticks now
            self._gap = gap
        try:
            await asyncio.wait_for(asyncio.shield(gap), MAX_WAIT_S)
        except TimeoutError:
            pass


def _wake(loop: asyncio.AbstractEventLoop, gap: asyncio.Future) -> None:
    """On the engine thread: end `gap` on its loop (unless the server is shutting down)."""
    try:
        loop.call_soon_threadsafe(_end, gap)
    except RuntimeError:  # the loop has closed
        pass


def _end(gap: asyncio.Future) -> None:
    if not gap.done():
        gap.set_result(None)
