"""A UDP port with one receive thread: the part VMC and Live Link receivers share.

One thread per port reads datagrams and hands each to `handle`. A packet from a source
outside `allowed` is dropped before parsing; any exception from `handle` is counted under
its `DriverPacketError.reason` (or `error`) and the loop goes on, so garbage and floods
cost CPU on this thread only and never reach the engine. `stop()` returns within about
`POLL` seconds.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable

POLL = 0.05  # seconds the thread waits for a packet before checking for stop
MAX_DATAGRAM = 65_535


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
    ) -> None:
        self.host = host
        self.requested_port = port
        self.allowed = frozenset(allowed) if allowed is not None else None
        self._on_input = on_input
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
        while not self._stop.is_set():
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                self.counts["socket_error"] += 1
                continue
            self.counts["packets"] += 1
            if self.allowed is not None and source[0] not in self.allowed:
                self.counts["dropped_source"] += 1
                continue
            try:
                self.handle(data, source)
            except DriverPacketError as exc:
                self.counts[exc.reason] += 1
            except Exception:  # noqa: BLE001 - a bad packet must never end the thread
                self.counts["error"] += 1
