"""A UDP port with one receive thread: the part VMC and Live Link receivers share.

One thread per port reads datagrams and hands each to `handle`. A packet from a source
outside `allowed` is dropped before parsing; any exception from `handle` is counted under
its `DriverPacketError.reason` (or `error`) and the loop goes on. `stop()` returns within
about `POLL` seconds.

A flood is bounded by CPU time, not by packet count, because parsing is what costs: a
VSeeFace bundle of 110 messages takes ~100 times as long as a Live Link packet, and a slow
machine parses fewer of either. With `cpu_share`, the thread uses at most that share of a
core (its own CPU clock, `BURST_S` of slack). Over it, the thread stops reading: the
socket buffer fills and the kernel drops the rest at no cost to this process, and the GIL,
which the engine thread needs between kernels, is held no more than that share of the
time. Kernel drops are counted as `flood` (Linux reports them per datagram, SO_RXQ_OVFL).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

POLL = 0.05  # seconds the thread waits for a packet before checking for stop
MAX_DATAGRAM = 65_535
BURST_S = 0.25  # seconds of a port's CPU share it may save up for a burst
MIN_PAUSE_S = 0.005  # shorter pauses would spend the share on waking up
SO_RXQ_OVFL = 40  # Linux: each datagram carries the socket's drop count (not in `socket`)
_DROPS = socket.CMSG_SPACE(4)


class CpuBudget:
    """`share` seconds of CPU per second, up to `share * BURST_S` saved."""

    def __init__(self, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share, self.capacity = share, share * BURST_S
        self._balance, self._clock = self.capacity, clock
        self._last = clock()

    def charge(self, cpu_s: float) -> float:
        """Spend `cpu_s`; the seconds to pause when the balance is overdrawn, else 0."""
        now = self._clock()
        earned = (now - self._last) * self.share
        self._balance = min(self.capacity, self._balance + earned) - cpu_s
        self._last = now
        if self._balance >= 0.0:
            return 0.0
        return max(MIN_PAUSE_S, -self._balance / self.share)


class DriverPacketError(ValueError):
    """A packet that was received but could not be used; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UdpReceiver:
    """Binds `host:port` (0 = ephemeral) and feeds datagrams to `handle` on its own thread."""

    kind = "udp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed: Iterable[str] | None = None,
        on_input: Callable[[str, str], None] | None = None,
        cpu_share: float | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.allowed = frozenset(allowed) if allowed is not None else None
        self._on_input = on_input
        self._budget = CpuBudget(cpu_share) if cpu_share is not None else None
        self.counts: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; only valid after start()."""
        if self._sock is None:
            raise RuntimeError(f"{self.kind} receiver is not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> tuple[str, int]:
        """Bind and start the receive thread; OSError (port in use, bad host) propagates."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(POLL)
        if sys.platform == "linux":
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self.kind}-{self.address[1]}", daemon=True
        )
        self._thread.start()
        return self.address

    def stop(self) -> None:
        """Stop the thread and close the port (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def handle(self, data: bytes, source: tuple[str, int]) -> None:
        """Use one datagram; raise DriverPacketError for what is malformed."""
        raise NotImplementedError

    def input_seen(self, source: tuple[str, int]) -> None:
        """Tell the presence policy that a usable input arrived from `source`."""
        if self._on_input is not None:
            self._on_input(self.kind, f"{source[0]}:{source[1]}")

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        used = time.thread_time()
        while not self._stop.is_set():
            if self._budget is not None:
                now = time.thread_time()
                wait = self._budget.charge(now - used)
                used = now
                if wait > 0.0:
                    self._stop.wait(min(wait, POLL))
                    continue
            try:
                data, ancillary, _, source = sock.recvmsg(MAX_DATAGRAM, _DROPS)
            except TimeoutError:
                continue
            except OSError:
                self.counts["socket_error"] += 1
                continue
            self.counts["packets"] += 1
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) == 4:
                    self.counts["flood"] = struct.unpack("=I", value)[0]
            if self.allowed is not None and source[0] not in self.allowed:
                self.counts["dropped_source"] += 1
                continue
            try:
                self.handle(data, source)
            except DriverPacketError as exc:
                self.counts[exc.reason] += 1
            except Exception:  # noqa: BLE001 - a bad packet must never end the thread
                self.counts["error"] += 1
