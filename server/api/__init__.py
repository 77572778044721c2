"""The HTTP API (FastAPI, /v1) and the operator console; build it with `create_app`."""

from .app import create_app

__all__ = ["create_app"]
