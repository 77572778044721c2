"""The real server as a child process on a free loopback port, for end-to-end tests.

`python -m avatarfarm.server.serve` is started with settings in its environment, waited
for until /readyz answers (start-up compiles the kernels: slow on a cold cache), and
stopped with SIGTERM (drain), then SIGKILL if it does not exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = float(os.environ.get("AVATARFARM_TEST_READY_S", "300"))

TENANT_KEYS = {"t1": "key-tenant-one-123", "t2": "key-tenant-two-456"}
ADMIN_KEY = "key-admin-789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server; `url`, `client(key)` and the captured output (`output()`)."""

    def __init__(
        self, workdir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        base = {
            "AVATARFARM_API_KEYS": ",".join(f"{t}:{k}" for t, k in TENANT_KEYS.items()),
            "AVATARFARM_ADMIN_KEY": ADMIN_KEY,
            "AVATARFARM_DATA_DIR": str(self.workdir / "data"),
            "AVATARFARM_HLS_ROOT": str(self.workdir / "hls"),
            "AVATARFARM_RECORDINGS_ROOT": str(self.workdir / "rec"),
            "AVATARFARM_DEVICE": "cpu",
            "AVATARFARM_FRAME_COST_MS": "2",
            "AVATARFARM_DRAIN_TIMEOUT_S": "5",
            "AVATARFARM_TENANT_MAX_SESSIONS": "4",
            "AVATARFARM_MAX_UPLOAD_MB": "8",
        }
        self.env = {**os.environ, **base, **(env or {})}
        self.env = {k: v for k, v in self.env.items() if v != ""}  # "" removes a setting
        self.args = [sys.executable, "-m", "avatarfarm.server.serve", "--port", str(self.port)]
        self.args += args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {READY_TIMEOUT_S} s:\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the server drains), SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: ServerProcess | None = None


def shared_server() -> ServerProcess:
    """One server for every API test module in this pytest process (stopped at exit).

    Module fixtures cannot share a session fixture without a conftest entry, and starting
    a server per module costs seconds of kernel loading each time.
    """
    global _shared
    if _shared is None:
        import atexit
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="avatarfarm-e2e-"))
        _shared = ServerProcess(workdir).start()
        atexit.register(_shared.stop)
    return _shared
