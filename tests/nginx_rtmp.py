"""A real nginx with the RTMP module on a loopback port, for tests that push and pull streams.

Tests need a real ingest peer (DESIGN.md: real peers over mocks). nginx runs in the
foreground (`daemon off`) from a config in a temp folder, so each test owns its server and
can stop and restart it on the same port to exercise reconnects.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

_MODULE_DIRS = (Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules"))
_MODULE_FILE = "ngx_rtmp_module.so"
_STREAM_MODULE_FILE = "ngx_stream_module.so"


def _find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def _module(name: str) -> Path | None:
    """A dynamic module's path; Debian packages the RTMP and stream modules as loadable .so."""
    return next((d / name for d in _MODULE_DIRS if (d / name).exists()), None)


def _rtmp_module() -> Path | None:
    return _module(_MODULE_FILE)


def skip_reason() -> str | None:
    """Why nginx-rtmp tests cannot run here, or None when they can."""
    if _find_nginx() is None:
        return "nginx not installed (apt-get install nginx libnginx-mod-rtmp)"
    if _rtmp_module() is None:
        return "nginx RTMP module missing (apt-get install libnginx-mod-rtmp)"
    return None


def tls_skip_reason() -> str | None:
    """Why the RTMPS front (nginx's stream module + openssl) cannot run here, or None."""
    if _module(_STREAM_MODULE_FILE) is None:
        return "nginx stream module missing (apt-get install libnginx-mod-stream)"
    if shutil.which("openssl") is None:
        return "openssl not installed (apt-get install openssl)"
    return skip_reason()


def self_signed_cert(folder: Path, name: str = "ingest") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: what an RTMPS ingest presents in tests."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NginxRtmp:
    """One nginx process serving `rtmp://127.0.0.1:<port>/live/<key>`.

    With `tls=(cert, key)` it also serves `rtmps://127.0.0.1:<tls_port>/live/<key>`: TLS
    terminated by nginx's stream module in front of the RTMP port, as ingests that speak
    RTMPS commonly do it (nginx-rtmp has no TLS of its own).
    """

    def __init__(
        self, workdir: Path, port: int | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        reason = tls_skip_reason() if tls else skip_reason()
        if reason:
            raise RuntimeError(reason)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.conf = self.workdir / "nginx.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_conf()

    def url(self, key: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key}"

    def tls_url(self, key: str, app: str = "live") -> str:
        return f"rtmps://127.0.0.1:{self.tls_port}/{app}/{key}"

    def _write_conf(self) -> None:
        w = self.workdir
        tls_front = ""
        if self.tls:
            cert, key = self.tls
            tls_front = (
                "stream {\n"
                "  server {\n"
                f"    listen 127.0.0.1:{self.tls_port} ssl;\n"
                f"    ssl_certificate {cert};\n"
                f"    ssl_certificate_key {key};\n"
                f"    proxy_pass 127.0.0.1:{self.port};\n"
                "  }\n"
                "}\n"
            )
        self.conf.write_text(
            (f"load_module {_module(_STREAM_MODULE_FILE)};\n" if self.tls else "")
            + f"load_module {_rtmp_module()};\n"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {w / 'nginx.pid'};\n"
            f"error_log {w / 'error.log'} info;\n"
            "events { worker_connections 64; }\n"
            "rtmp {\n"
            "  server {\n"
            f"    listen 127.0.0.1:{self.port};\n"
            "    chunk_size 4096;\n"
            "    application live { live on; record off; }\n"
            "  }\n"
            "}\n" + tls_front
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx and wait until its port accepts connections."""
        self._proc = subprocess.Popen(
            [_find_nginx() or "nginx", "-c", str(self.conf), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"nginx exited at start: {err.strip()}")
            if _port_open(self.port) and (self.tls_port is None or _port_open(self.tls_port)):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop nginx (fast shutdown: live connections are cut, as in a crash of the ingest)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> NginxRtmp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def nginx_or_skip(tmp_path: Path) -> NginxRtmp:
    """A started nginx for a test, or skip the test with the reason."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    return server
