"""Gaps between engine ticks while sessions join with heavy avatars or change to long videos.

A new avatar's textures and a video background's frames are copied into the renderer's
buffers by the engine loop; done in one go (or by an arena doubling by copying itself)
they stall every running session. This runs the real engine with `--sessions` 720p30
sessions (CPU backend, encoder none), then (1) opens `--joins` sessions one by one, each
with a fresh copy of the sample VRM whose textures are replaced by 2048x2048 RGBA ones
(48 MiB; small 320x180 sessions, so the pool and its texel arena grow while the
rendering load hardly does), and (2) PATCHes one session to a `--video-frames` long
video background. It prints the longest gap between ticks around each (the frame period
is 33 ms).

Run: python bench/bench_joins.py [--sessions 4] [--joins 6] [--video-frames 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from avatarfarm.render.avatars import load
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Scene
from avatarfarm.server.engine import Engine
from avatarfarm.server.sessions import DriverSpec, Session, SessionSpec, VideoSpec

W, H, FPS = 1280, 720, 30
VRM = Path(__file__).resolve().parents[2] / "shared/assets/vrm/Godette/Godette_vrm_v4.vrm"


def _session(width: int = W, height: int = H) -> Session:
    video = VideoSpec(width=width, height=height, fps=FPS, encoder="none")
    return Session("bench", SessionSpec(video=video, driver=DriverSpec(idle=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--joins", type=int, default=6)
    parser.add_argument("--video-frames", type=int, default=150)
    parser.add_argument("--vrm", type=Path, default=VRM)
    args = parser.parse_args()

    engine = Engine(Renderer("cpu"))
    ticks: list[float] = []
    tick = engine.tick
    engine.tick = lambda now: (ticks.append(time.perf_counter()), tick(now))[1]  # type: ignore[method-assign]

    def longest_gap_since(start: float) -> float:
        times = np.array([t for t in ticks if t >= start - 0.05])
        return float(np.diff(times).max() * 1000) if len(times) > 1 else float("nan")

    base = load(str(args.vrm))
    rng = np.random.default_rng(0)
    textures = tuple(
        rng.integers(0, 255, (2048, 2048, 4), np.uint8) for _ in range(len(base.textures))
    )
    engine.start()
    try:
        default = load("default")
        sessions = [
            engine.create(_session(), default, None).result(60) for _ in range(args.sessions)
        ]
        time.sleep(2.0)
        start = time.perf_counter()
        time.sleep(1.5)
        quiet = longest_gap_since(start)
        joins = []
        for _ in range(args.joins):
            heavy = dataclasses.replace(base, textures=textures)  # a new asset: pooled anew
            start = time.perf_counter()
            engine.create(_session(320, 180), heavy, None).result(60)  # small: little load
            time.sleep(0.4)
            joins.append(longest_gap_since(start))
        compiled = engine.renderer.compile(Scene(background="#00ff00"), W, H)
        still = compiled.backgrounds[0]
        loop = [np.full_like(still, i % 256) for i in range(args.video_frames)]
        video = dataclasses.replace(compiled, backgrounds=loop)
        engine.renderer.compile = lambda *a, **k: video  # type: ignore[method-assign]
        start = time.perf_counter()
        engine.set_scene(sessions[0], Scene(background="#00ff00")).result(60)
        patch_ms = (time.perf_counter() - start) * 1000
        time.sleep(0.5)
        patch_gap = longest_gap_since(start)
    finally:
        engine.stop(2.0)
    texture_mib = sum(t.nbytes for t in textures) / 2**20
    print(f"# joins bench: {args.sessions} x {W}x{H}@{FPS}, CPU backend, encoder none, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print(f"longest gap between ticks, quiet: {quiet:.1f} ms")
    print(f"while each of {args.joins} sessions joins with a {texture_mib:.0f} MiB-textured "
          f"avatar: {', '.join(f'{g:.0f}' for g in joins)} ms")  # fmt: skip
    print(f"while one session changes to a {args.video_frames}-frame video background "
          f"({len(loop) * still.nbytes / 2**20:.0f} MiB): {patch_gap:.0f} ms "
          f"(the change took {patch_ms:.0f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
