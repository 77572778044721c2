"""Engine host bookkeeping per session per frame, at 1,000 sessions (target <= 10 us).

Render-only mode (encoder "none": no StreamPipeline), the real Renderer on the CPU
backend with tiny frames. Each tick renders every session once (fps 60, the clock
advanced by exactly one frame per tick); a tenth of the sessions get a new pose per tick
and half run the idle animation, as in production. Bookkeeping is the engine's tick time
minus the time inside `Renderer.render` (kernels and the renderer's own packing, which
its own benchmark covers), divided by frames rendered.

Run: python bench/bench_engine.py [--sessions 1000] [--ticks 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from avatarfarm.render.avatars import load
from avatarfarm.render.renderer import Renderer
from avatarfarm.render.scene import Label, Scene
from avatarfarm.render.vocabulary import VOCABULARY
from avatarfarm.server.engine import Engine
from avatarfarm.server.sessions import DriverSpec, Session, SessionSpec, VideoSpec

FPS = 60
SIDE = 32  # smallest useful frame: the kernels are not what this measures


def run(sessions: int, ticks: int, device: str) -> dict[str, float]:
    renderer = Renderer(device, enforce_label=False)
    engine = Engine(renderer, queue_size=sessions + 16, pose_slots=sessions)
    engine._running.set()  # take commands; they run on this thread via run_pending()
    avatar = load("default")
    scene = Scene(label=Label(enabled=False))
    made = []
    for i in range(sessions):
        video = VideoSpec(SIDE, SIDE, FPS, encoder="none")
        spec = SessionSpec(video=video, scene=scene, driver=DriverSpec(idle=i % 2 == 0))
        made.append(engine.create(Session("bench", spec), avatar, None))
    while not made[-1].done():  # run_pending takes a bounded batch per call, as a tick does
        engine.run_pending()
    live = [f.result(0) for f in made]
    t0 = float(engine._rows.t0[: engine._rows.used].max())
    expr = np.zeros(len(VOCABULARY), np.float32)
    head = np.zeros(3, np.float32)
    engine.tick(t0)  # warm-up: compilation, first allocations
    tick_s = render_s = 0.0
    before = engine.all_counters()
    for n in range(1, ticks + 1):
        for s in live[n % 10 :: 10]:
            head[0] = n
            engine.set_pose(s, expr, head, None)
        before_tick, before_render = engine.tick_seconds, engine.render_seconds
        engine.tick(t0 + n / FPS)
        tick_s += engine.tick_seconds - before_tick
        render_s += engine.render_seconds - before_render
    after = engine.all_counters()
    frames = after["frames_rendered"] - before["frames_rendered"]
    dropped = after["frames_dropped"] - before["frames_dropped"]
    engine._running.clear()
    return {
        "sessions": sessions,
        "ticks": ticks,
        "frames": frames,
        "dropped": dropped,
        "tick_ms": 1000 * tick_s / ticks,
        "render_ms": 1000 * render_s / ticks,
        "bookkeeping_us_per_session_frame": 1e6 * (tick_s - render_s) / max(frames, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = run(args.sessions, args.ticks, args.device)
    cpu = platform.processor() or platform.machine()
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"# engine bookkeeping: {cpu}, {os.cpu_count()} cores, {args.device}, {when}")
    for key, value in result.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}")
    verdict = "meets" if result["bookkeeping_us_per_session_frame"] <= 10 else "MISSES"
    print(f"target <= 10 us per session per frame: {verdict}")


if __name__ == "__main__":
    main()
