"""RTMP publishing in Python, so that no ingest can stall the process.

FFmpeg's RTMP client runs inside PyAV with the GIL held: an ingest that accepts the TCP
connection and then never answers froze every thread (engine, encoders, HTTP) for as long
as it kept quiet. Here PyAV only muxes FLV into memory; this module speaks RTMP over a
Python socket, whose every wait releases the GIL and has a timeout.

The protocol subset is what a live publisher needs (Adobe RTMP 1.0 spec): the simple
handshake, connect / releaseStream / FCPublish / createStream / publish in AMF0, chunked
audio, video and data messages, and answers to the server's pings.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import time
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 5.0  # connect, each handshake step, each reply, each send
OUT_CHUNK = 4096
_VERSION = 3
_HANDSHAKE = 1536
# chunk streams and message types (spec 5.4, 7.1)
_CS_CONTROL, _CS_COMMAND, _CS_AUDIO, _CS_DATA, _CS_VIDEO = 2, 3, 4, 5, 6
_SET_CHUNK, _USER = 1, 4
_AUDIO, _VIDEO, _DATA_AMF0, _COMMAND_AMF3, _COMMAND_AMF0 = 8, 9, 18, 17, 20
_PING_REQUEST, _PING_RESPONSE = 6, 7
_FLV_CHANNEL = {_AUDIO: _CS_AUDIO, _VIDEO: _CS_VIDEO, _DATA_AMF0: _CS_DATA}


class RtmpError(ConnectionError):
    """The ingest refused or broke the session; the message is safe to show (no key)."""


# -- AMF0 (only the types RTMP commands use) ---------------------------------------------
def amf_encode(value: Any) -> bytes:
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(struct.pack(">H", len(k.encode())) + k.encode() + amf_encode(v)
                        for k, v in value.items())  # fmt: skip
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def amf_decode_all(data: bytes) -> list[Any]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _amf_decode(data, pos)
        values.append(value)
    return values


def _amf_decode(data: bytes, pos: int) -> tuple[Any, int]:
    kind = data[pos]
    pos += 1
    if kind == 0x00:
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if kind == 0x01:
        return data[pos] != 0, pos + 1
    if kind in (0x02, 0x0C):  # string, long string
        width = 2 if kind == 0x02 else 4
        (n,) = struct.unpack_from(">H" if width == 2 else ">I", data, pos)
        start = pos + width
        return data[start : start + n].decode(errors="replace"), start + n
    if kind in (0x03, 0x08):  # object, ECMA array (with a count to skip)
        if kind == 0x08:
            pos += 4
        out: dict[str, Any] = {}
        while True:
            (n,) = struct.unpack_from(">H", data, pos)
            key = data[pos + 2 : pos + 2 + n].decode(errors="replace")
            pos += 2 + n
            if n == 0 and data[pos] == 0x09:
                return out, pos + 1
            out[key], pos = _amf_decode(data, pos)
    if kind in (0x05, 0x06):  # null, undefined
        return None, pos
    if kind == 0x0A:  # strict array
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _amf_decode(data, pos)
            items.append(item)
        return items, pos
    raise RtmpError(f"unsupported AMF0 type 0x{kind:02x} from the ingest")


# -- the connection ----------------------------------------------------------------------
class RtmpPublisher:
    """One publishing connection: `connect()`, then `send_flv()` the muxer's bytes."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        segments = parts.path.strip("/").split("/")
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "rtmps" else 1935)
        self.tls = parts.scheme == "rtmps"
        self.app = "/".join(segments[:-1])
        # platforms sign the stream name with a query (txSecret=..., sign=...): keep it on
        self.stream_name = segments[-1] + (f"?{parts.query}" if parts.query else "")
        self.tc_url = f"{parts.scheme}://{parts.hostname}:{self.port}/{self.app}"
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._inbuf = b""
        self._in_chunk = 128
        self._in_headers: dict[int, list[int]] = {}  # csid -> [timestamp, length, type, msid]
        self._in_partial: dict[int, bytes] = {}
        self._txn = 0
        self._stream_id = 0
        self._flv = b""
        self._flv_header_left = 13  # FLV file header (9) + the first PreviousTagSize (4)

    # -- setup ---------------------------------------------------------------------------
    def connect(self) -> None:
        """TCP (+TLS), handshake, and publish; raises OSError / RtmpError on failure."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            if self.tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._handshake()
            self._send(_CS_CONTROL, _SET_CHUNK, 0, 0, struct.pack(">I", OUT_CHUNK))
            self._command("connect", {
                "app": self.app, "type": "nonprivate", "flashVer": "FMLE/3.0 (avatarfarm)",
                "tcUrl": self.tc_url,
            })  # fmt: skip
            self._await_result(self._txn)
            self._command("releaseStream", None, self.stream_name)
            self._command("FCPublish", None, self.stream_name)
            self._command("createStream", None)
            self._stream_id = int(self._await_result(self._txn)[3])
            self._command("publish", None, self.stream_name, "live", msid=self._stream_id)
            self._await_publish()
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> None:
        c1 = struct.pack(">II", 0, 0) + os.urandom(_HANDSHAKE - 8)
        self._sendall(bytes([_VERSION]) + c1)
        s0s1 = self._read(1 + _HANDSHAKE)
        if s0s1[0] != _VERSION:
            raise RtmpError(f"ingest speaks RTMP version {s0s1[0]}, not 3")
        s1 = s0s1[1:]
        self._sendall(s1[:4] + struct.pack(">I", 0) + s1[8:])  # C2 echoes S1
        self._read(_HANDSHAKE)  # S2 (echoes C1; not checked, as most clients do)

    def _command(self, name: str, *args: Any, msid: int = 0) -> None:
        self._txn += 1
        body = amf_encode(name) + amf_encode(self._txn) + b"".join(amf_encode(a) for a in args)
        self._send(_CS_COMMAND, _COMMAND_AMF0, 0, msid, body)

    def _await_result(self, txn: int) -> list[Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            values = self._next_command(deadline)
            if len(values) >= 2 and values[1] == txn:
                if values[0] == "_result":
                    return values
                if values[0] == "_error":
                    raise RtmpError(f"ingest refused: {_describe(values)}")

    def _await_publish(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            values = self._next_command(deadline)
            if values and values[0] == "onStatus" and len(values) >= 4:
                info = values[3] if isinstance(values[3], dict) else {}
                if info.get("level") == "error":
                    raise RtmpError(f"ingest refused the stream: {_describe(values)}")
                if info.get("code") == "NetStream.Publish.Start":
                    return

    def _next_command(self, deadline: float) -> list[Any]:
        while True:
            if time.monotonic() > deadline:
                raise RtmpError(f"the ingest did not answer in {self.timeout:g} s")
            kind, payload = self._read_message()
            if kind == _COMMAND_AMF3 and payload:
                payload = payload[1:]
                kind = _COMMAND_AMF0
            if kind == _COMMAND_AMF0:
                return amf_decode_all(payload)

    # -- streaming -----------------------------------------------------------------------
    def send_flv(self, data: bytes) -> None:
        """Forward FLV bytes from the muxer: each complete tag becomes one RTMP message."""
        self._answer_server()
        self._flv += data
        if self._flv_header_left:
            skipped = min(self._flv_header_left, len(self._flv))
            self._flv, self._flv_header_left = self._flv[skipped:], self._flv_header_left - skipped
        while len(self._flv) >= 11:
            kind = self._flv[0]
            size = int.from_bytes(self._flv[1:4], "big")
            end = 11 + size + 4  # tag header, body, PreviousTagSize
            if len(self._flv) < end:
                return
            stamp = int.from_bytes(self._flv[4:7], "big") | (self._flv[7] << 24)
            body = self._flv[11 : 11 + size]
            self._flv = self._flv[end:]
            if kind == _DATA_AMF0:
                body = amf_encode("@setDataFrame") + body  # how publishers send onMetaData
            if kind in _FLV_CHANNEL:
                self._send(_FLV_CHANNEL[kind], kind, stamp, self._stream_id, body)

    def _answer_server(self) -> None:
        """Read what the server sent meanwhile (pings, chunk size, errors); never waits."""
        while self._sock is not None:
            if not self._inbuf:
                readable, _, _ = select.select([self._sock], [], [], 0)
                pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()
                if not readable and not pending:
                    return
            kind, payload = self._read_message()
            if kind == _COMMAND_AMF0:
                values = amf_decode_all(payload)
                info = values[3] if len(values) >= 4 and isinstance(values[3], dict) else {}
                if info.get("level") == "error":
                    raise RtmpError(f"ingest stopped the stream: {_describe(values)}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if self._stream_id:
                self._sock = sock
                self._command("FCUnpublish", None, self.stream_name)
                self._command("deleteStream", None, self._stream_id)
        except OSError:
            pass
        finally:
            self._sock = None
            sock.close()

    # -- chunks --------------------------------------------------------------------------
    def _send(self, csid: int, kind: int, stamp: int, msid: int, payload: bytes) -> None:
        extended = stamp >= 0xFFFFFF
        ext = struct.pack(">I", stamp) if extended else b""
        header = bytes([csid]) + (0xFFFFFF if extended else stamp).to_bytes(3, "big")
        header += len(payload).to_bytes(3, "big") + bytes([kind]) + struct.pack("<I", msid)
        parts = [header + ext + payload[:OUT_CHUNK]]
        for start in range(OUT_CHUNK, len(payload), OUT_CHUNK):
            parts.append(bytes([0xC0 | csid]) + ext + payload[start : start + OUT_CHUNK])
        self._sendall(b"".join(parts))

    def _read_message(self) -> tuple[int, bytes]:
        """The next complete message (type, payload); chunk size and pings are handled here."""
        while True:
            first = self._read(1)[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + self._read(1)[0]
            elif csid == 1:
                low, high = self._read(2)
                csid = 64 + low + 256 * high
            header = self._in_headers.setdefault(csid, [0, 0, 0, 0])
            if fmt <= 2:
                stamp = int.from_bytes(self._read(3), "big")
                if fmt <= 1:
                    header[1] = int.from_bytes(self._read(3), "big")
                    header[2] = self._read(1)[0]
                if fmt == 0:
                    header[3] = struct.unpack("<I", self._read(4))[0]
                if stamp == 0xFFFFFF:
                    stamp = struct.unpack(">I", self._read(4))[0]
                header[0] = stamp if fmt == 0 else header[0] + stamp
            elif header[0] >= 0xFFFFFF:
                self._read(4)  # type 3 repeats the extended timestamp
            partial = self._in_partial.get(csid, b"")
            partial += self._read(min(self._in_chunk, header[1] - len(partial)))
            if len(partial) < header[1]:
                self._in_partial[csid] = partial
                continue
            self._in_partial.pop(csid, None)
            kind = header[2]
            if kind == _SET_CHUNK:
                self._in_chunk = struct.unpack(">I", partial[:4])[0] & 0x7FFFFFFF
            elif kind == _USER and len(partial) >= 6:
                event, stamp_bytes = struct.unpack(">H", partial[:2])[0], partial[2:6]
                if event == _PING_REQUEST:
                    ping = struct.pack(">H", _PING_RESPONSE) + stamp_bytes
                    self._send(_CS_CONTROL, _USER, 0, 0, ping)
            return kind, partial

    def _read(self, n: int) -> bytes:
        while len(self._inbuf) < n:
            self._inbuf += self._recv_some()
        out, self._inbuf = self._inbuf[:n], self._inbuf[n:]
        return out

    def _recv_some(self) -> bytes:
        if self._sock is None:
            raise RtmpError("connection closed")
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise RtmpError(f"the ingest did not answer in {self.timeout:g} s") from None
        if not data:
            raise RtmpError("the ingest closed the connection")
        return data

    def _sendall(self, data: bytes) -> None:
        if self._sock is None:
            raise RtmpError("connection closed")
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise RtmpError(f"the ingest took no data for {self.timeout:g} s") from None


def _describe(values: list[Any]) -> str:
    """The status code (`NetStream.Publish.BadName`); descriptions may quote the key."""
    info = next((v for v in values if isinstance(v, dict) and "code" in v), {})
    return str(info.get("code") or values[0])


class FlvSink:
    """The file PyAV's FLV muxer writes into: bytes go straight to the publisher."""

    def __init__(self, publisher: RtmpPublisher) -> None:
        self.publisher = publisher

    def write(self, data: bytes) -> int:
        self.publisher.send_flv(bytes(data))
        return len(data)
