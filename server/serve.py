"""`avatarfarm serve`: settings -> app -> uvicorn; `--demo` also starts one idle session.

With no API keys configured a key is generated, printed once on stdout (never logged) and
the server listens on 127.0.0.1 only, whatever host was asked for.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from .auth import KeyRing, Principal
from .config import ConfigError, load_settings
from .sessions import SessionError

log = logging.getLogger("avatarfarm.serve")
DEMO_SESSION = {
    "avatar": "default",
    "video": {"width": 640, "height": 360, "fps": 25, "encoder": "none"},
    "scene": {"background": "#2a3b4f"},
    "driver": {"idle": True},
}


def serve(
    host: str | None = None,
    port: int | None = None,
    device: str | None = None,
    config: str | None = None,
    demo: bool = False,
) -> int:
    """Run the server until SIGINT/SIGTERM (then drain); returns the exit status."""
    from .api.app import create_app
    from .api.deps import ServerState

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(config, host=host, port=port, device=device)
        keys = KeyRing(settings.all_api_keys(), settings.admin_key)
    except ConfigError as exc:
        print(f"avatarfarm: {exc}", file=sys.stderr)
        return 2
    bind = settings.host
    if keys.generated is not None and bind != "127.0.0.1":
        log.warning("no API keys configured: listening on 127.0.0.1 only (not %s)", bind)
        bind = "127.0.0.1"
    url = f"http://{bind}:{settings.port}/"

    async def on_ready(state: ServerState) -> None:
        if keys.generated is not None:
            print(f"avatarfarm: API key (shown once): {keys.generated}", flush=True)
        print(f"avatarfarm: console at {url}", flush=True)
        if demo:
            await _start_demo(state, keys)

    app = create_app(settings, keys=keys, on_ready=on_ready)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=bind, port=settings.port, log_level="info", timeout_graceful_shutdown=5
        )
    )
    server.run()
    return 0


async def _start_demo(state, keys: KeyRing) -> None:
    from .api.errors import ApiError
    from .api.models import SessionCreate
    from .api.sessions import start_session

    tenant = keys.tenants[0] if keys.tenants else "default"
    principal = Principal(tenant, admin=True)
    try:
        session, _ = await start_session(
            state, principal, SessionCreate.model_validate(DEMO_SESSION), None
        )
    except (ApiError, SessionError) as exc:
        log.error("demo session not started: %s", getattr(exc, "message", exc))
        return
    print(f"avatarfarm: demo session {session.id} ({tenant})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avatarfarm serve")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--config")
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.device, args.config, args.demo)


if __name__ == "__main__":
    sys.exit(main())
