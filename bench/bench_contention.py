"""Render ticks while another process takes CPU: what the tick pays for a borrowed core.

In the server the kernel threads share the cores with encoders, HTTP and whatever else
runs on the host. This opens `--sessions` 1280x720 bust sessions of the default avatar on
the CPU renderer, renders ticks paced at 30 per second with demo motion, and alternates
windows without and with a competitor: a separate process that spins `--steal` ms of
every 10 ms (one core's worth of it at most). It reports the median and p99 tick and what
the competitor added to each. A stage whose threads each own a fixed slice pays for every
stolen millisecond in full (the other threads wait at its end); one whose threads claim
work items (kernels/backend.py `claim_item`) pays about half on two cores.

Run: python bench/bench_contention.py [--sessions 6] [--steal 2] [--ticks 240] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

SPIN = """
import sys, time
burst, period = float(sys.argv[1]) / 1e3, 0.01
nxt = time.monotonic()
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < burst:
        pass
    nxt += period
    time.sleep(max(0.0, nxt - time.monotonic()))
"""


def ticks(renderer, slots: np.ndarray, phase: np.ndarray, start: float, n: int) -> np.ndarray:
    """Render `n` ticks paced at 30 per second; the render time of each, in ms."""
    from avatarfarm.render.motion import demo_motion

    out = np.empty(n)
    due = time.perf_counter()
    for i in range(n):
        due += 1 / 30
        time.sleep(max(0.0, due - time.perf_counter()))
        motion = demo_motion(start + i / 30.0 + phase)
        t0 = time.perf_counter()
        renderer.render(slots, *motion)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--steal", type=float, default=2.0, help="ms of every 10 ms")
    parser.add_argument("--ticks", type=int, default=240, help="per window")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of windows")
    args = parser.parse_args()

    from avatarfarm.render.avatars import load
    from avatarfarm.render.renderer import Renderer
    from avatarfarm.render.scene import Scene

    renderer = Renderer("cpu")
    avatar = load("default")
    slots = np.array(
        [renderer.open(avatar, 1280, 720, Scene(framing="bust")) for _ in range(args.sessions)]
    )
    phase = np.arange(args.sessions) * 0.37
    ticks(renderer, slots, phase, 0.0, 10)  # compile, first allocations
    print(
        f"# contention bench: {args.sessions} x 1280x720, competitor {args.steal:g} ms "
        f"of every 10 ms, {args.ticks} ticks per window, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    quiet, loaded = [], []
    for r in range(args.rounds):
        quiet.append(ticks(renderer, slots, phase, 1.0 + r * 20, args.ticks))
        spin = subprocess.Popen([sys.executable, "-c", SPIN, str(args.steal)])
        try:
            time.sleep(0.2)
            loaded.append(ticks(renderer, slots, phase, 10.0 + r * 20, args.ticks))
        finally:
            spin.kill()
            spin.wait()
        q, lo = quiet[-1], loaded[-1]
        print(
            f"round {r + 1}: median {np.median(q):.1f} -> {np.median(lo):.1f} ms, "
            f"p99 {np.percentile(q, 99):.1f} -> {np.percentile(lo, 99):.1f} ms"
        )
    q, lo = np.concatenate(quiet), np.concatenate(loaded)
    print(
        f"all: median tick {np.median(q):.1f} ms quiet, {np.median(lo):.1f} ms with the "
        f"competitor (+{np.median(lo) - np.median(q):.1f}); p99 {np.percentile(q, 99):.1f} / "
        f"{np.percentile(lo, 99):.1f} ms (+{np.percentile(lo, 99) - np.percentile(q, 99):.1f})"
    )


if __name__ == "__main__":
    main()
