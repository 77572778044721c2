"""The FastAPI app factory: wires settings, keys, engine, sessions, capacity and routes.

Everything lives on `app.state.server` (no module globals), so a process can hold
several apps/engines, e.g. one per GPU, and tests can build one per case.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..auth import KeyRing
from ..capacity import CostModel, CpuSampler, probe_frame_cost
from ..config import Settings
from ..engine import Engine
from ..metrics import build_registry
from ..sessions import SessionTable
from . import (
    admin,
    avatars,
    console,
    drive,
    drivers,
    errors,
    media,
    media_uploads,
    outputs,
    pose,
    sessions,
)
from .avatar_store import AvatarStore
from .deps import ServerState
from .limits import BodyLimit
from .media_store import MediaStore
from .quota import StorageQuota
from .tickgap import TickGap

log = logging.getLogger(__name__)
FALLBACK_FRAME_COST_S = 0.05  # used when the probe is off and no cost is configured

OnReady = Callable[[ServerState], Awaitable[Any]]


def create_app(
    settings: Settings,
    *,
    renderer: Any = None,
    keys: KeyRing | None = None,
    on_ready: OnReady | None = None,
) -> FastAPI:
    """Build the app; the engine starts (after the capacity probe) in the app's lifespan."""
    if renderer is None:
        from avatarfarm.render.renderer import Renderer

        renderer = Renderer(
            settings.device, enforce_label=settings.enforce_label, label_text=settings.label_text
        )
    keys = keys or KeyRing(settings.all_api_keys(), settings.admin_key)
    table = SessionTable(settings.tenant_max_sessions)
    store = AvatarStore(settings.data_dir / "avatars", settings.max_upload_bytes)
    cost = CostModel(
        (settings.frame_cost_ms or FALLBACK_FRAME_COST_S * 1000) / 1000,
        settings.capacity_budget,
        settings.max_sessions,
    )
    refine = cost.observe if settings.frame_cost_ms is None else None  # a pinned cost stays
    engine = Engine(
        renderer,
        queue_size=settings.command_queue_size,
        pose_slots=settings.max_sessions,
        on_tick=refine,
        max_lateness=settings.max_lateness_ms / 1000,
    )
    uploads = MediaStore(settings.data_dir / "media", settings.max_upload_bytes)
    quota = StorageQuota(
        settings.tenant_storage_bytes, (store.root, uploads.root), settings.max_upload_bytes
    )
    state = ServerState(
        settings, keys, engine, table, cost, store, uploads, quota,
        build_registry(engine, table, cost),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.capacity_probe:  # also compiles the kernels before the first session
            avatar = await run_in_threadpool(store.asset, "", "default")
            measured = await run_in_threadpool(probe_frame_cost, renderer, avatar)
            log.info("capacity probe: %.1f ms per 1280x720 frame", measured * 1000)
            if settings.frame_cost_ms is None:
                cost.base = measured
        engine.start()
        sampler = asyncio.create_task(_sample_cpu(cost)) if refine is not None else None
        if on_ready is not None:
            await on_ready(state)
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
            state.draining = True
            await run_in_threadpool(engine.drain, settings.drain_timeout_s)
            await run_in_threadpool(engine.stop, 2.0)

    app = FastAPI(
        title="avatarfarm",
        version="0.1.0",
        description="Batched avatar render server: sessions, outputs, pose, previews.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.server = state
    app.state.previews = Counter()  # open MJPEG previews by tenant
    errors.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(TickGap, engine=engine)
    for module in (admin, avatars, media_uploads, sessions, outputs, pose, drive, drivers, media,
                   console):  # fmt: skip
        app.include_router(module.router)
    return app


async def _sample_cpu(cost: CostModel, period: float = 1.0) -> None:
    """Feed admission the process's CPU use (encoders and HTTP included) every second."""
    sampler = CpuSampler()
    while True:
        await asyncio.sleep(period)
        cost.observe_cpu(sampler.sample())
