"""One thread per destination, fed through a bounded packet queue.

A slow or dead destination only ever loses its own packets: `offer()` never blocks, a full
queue drops and counts, and the muxer thread resumes on the next keyframe. RTMP pushes
reconnect by themselves with exponential backoff and ask the encoder for an IDR, so a
player joining the re-published stream starts decoding at once.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from fractions import Fraction
from typing import Any

from .packets import EncodedPacket
from .targets import Target
from .urls import mask_text

log = logging.getLogger(__name__)
STABLE_S = 30.0  # a connection up this long resets the reconnect backoff


class State(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    RETRYING = "retrying"
    FAILED = "failed"
    CLOSED = "closed"


class Backoff:
    """0.5 s doubling to a 30 s cap, +-20 % jitter so many sessions do not reconnect in step."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, jitter: float = 0.2) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self._attempt = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.first * 2 ** min(self._attempt, 32))  # no overflow, ever
        self._attempt += 1
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self._attempt = 0


class Destination:
    """A muxer thread for one Target; packets in through `offer()`, state out via `stats()`."""

    def __init__(
        self,
        dest_id: int,
        target: Target,
        templates: Callable[[], tuple[Any, Any] | None],
        request_idr: Callable[[], None],
        queue_size: int = 90,
    ) -> None:
        self.id = dest_id
        self.target = target
        self._templates = templates
        self._request_idr = request_idr
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._accepting = False  # a muxer is open and wants packets
        self._await_key = True  # drop video until the next keyframe
        self._stopping = threading.Event()
        self._backoff = Backoff()
        self.state = State.CONNECTING
        self.last_error: str | None = None
        self.counters = {"packets_sent": 0, "bytes_sent": 0, "dropped": 0, "connects": 0}
        self._thread = threading.Thread(target=self._run, name=f"dest-{dest_id}", daemon=True)
        self._thread.start()

    # -- producer side (encoder thread) -------------------------------------------------
    def offer(self, packets: list[EncodedPacket]) -> None:
        """Queue one frame's packets without ever blocking; a full queue drops and counts.

        One queue item per frame (video + its audio) keeps thread wake-ups per frame at one.
        """
        with self._lock:
            if not self._accepting:
                return
            batch = []
            for packet in packets:
                if self._await_key:
                    if packet.kind != "video" or not packet.keyframe:
                        continue
                    self._await_key = False
                batch.append(packet)
            if not batch:
                return
            try:
                self._queue.put_nowait(batch)
            except queue.Full:
                self.counters["dropped"] += len(batch)
                self._await_key = True  # the decoder needs a fresh keyframe after a gap

    # -- muxer thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # a bug: say so in stats instead of a silent dead thread
            log.exception("output %d stopped", self.id)
            self._fail(exc)
            self.state = State.FAILED
        with self._lock:
            self._accepting = False
        if self.state != State.FAILED:
            self.state = State.CLOSED
        self.target.discard()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            container = self._connect()
            if container is None:
                if not self._wait_retry():
                    return
                continue
            live_since = time.monotonic()
            clean = self._pump(*container)
            self._close_container(container[0])
            if time.monotonic() - live_since >= STABLE_S:
                self._backoff.reset()  # an ingest that takes the stream and drops it backs off
            if clean or not self._wait_retry():
                return

    def _connect(self) -> tuple[Any, Any, Any] | None:
        templates = self._templates()
        while templates is None and not self._stopping.wait(0.05):
            templates = self._templates()
        if templates is None:
            return None
        try:
            opened = self.target.open(templates)
        except Exception as exc:
            self._fail(exc)
            return None
        with self._lock:
            self._drain()
            self._accepting, self._await_key = True, True
        self._request_idr()
        self.counters["connects"] += 1
        self.state = State.LIVE
        log.info("output %d live: %s", self.id, self.target.display)
        return opened

    def _pump(self, container: Any, video: Any, audio: Any) -> bool:
        """Mux until stopped and drained (True) or the connection breaks (False)."""
        offsets: dict[str, int] | None = None
        while True:
            try:
                batch: list[EncodedPacket] = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return True
                continue
            if offsets is None:  # the first packet is always a video keyframe
                offsets = {"video": batch[0].pts, "audio": _ceil(batch[0].seconds / _AUDIO_TB)}
            for packet in batch:
                offset = offsets[packet.kind]
                if packet.pts < offset:
                    continue
                try:
                    container.mux(packet.to_av(video if packet.kind == "video" else audio, offset))
                except Exception as exc:
                    with self._lock:
                        self._accepting = False
                    self._fail(exc)
                    return False
                self.counters["packets_sent"] += 1
                self.counters["bytes_sent"] += len(packet.data)

    def _fail(self, exc: Exception) -> None:
        self.last_error = mask_text(f"{type(exc).__name__}: {exc}", (self.target.secret,))
        self.state = State.RETRYING if self.target.retry else State.FAILED
        log.warning("output %d (%s) failed: %s", self.id, self.target.display, self.last_error)

    def _wait_retry(self) -> bool:
        """Sleep the backoff delay; False when this destination should end instead."""
        if not self.target.retry:
            return False
        return not self._stopping.wait(self._backoff.next_delay())

    def _close_container(self, container: Any) -> None:
        try:
            self.target.close(container)
        except Exception as exc:
            log.debug("output %d close: %s", self.id, mask_text(str(exc), (self.target.secret,)))

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    # -- control -------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the muxer thread to flush what is queued and finalize; does not wait."""
        self._stopping.set()
        with self._lock:
            self._accepting = False

    def close(self, timeout: float) -> bool:
        """Flush what is queued, finalize the file or stream; True if it ended in time."""
        self.stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.target.display,
            "kind": self.target.kind,
            "state": self.state.value,
            "last_error": self.last_error,
            "queued": self._queue.qsize(),
            **self.counters,
        }


_AUDIO_TB = Fraction(1, 48_000)


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)
