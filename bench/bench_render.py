"""Render throughput: per-stage time per avatar-frame and avatar-frames/s, batched.

Each batch size opens that many 1280x720 bust-framed sessions of one avatar on a fresh
Renderer, renders a few warm-up ticks (compilation, first allocations), then times
`--ticks` ticks of `Renderer.render` with demo motion (each session at its own phase).
Stage times come from `Renderer.stage_seconds` (wall time; on CUDA each stage waits for
the GPU). Reported per avatar-frame: the best tick per stage (the shared CI box is noisy),
the median tick's total, the process CPU time, and avatar-frames/s from the best and the
median tick. On CUDA it also counts launcher calls per tick, which must not grow with the
batch. Memory per session is what one more session adds: its NV12 frame, its NV12
background, its avatar-layer scratch (per layer pixel: a u64 visibility word, a second one
when the avatar has MASK/BLEND materials, and RGBA8), its deformed vertices (clip f32x4,
normal f32x3) and their copy from its last frame (the damage history, 8 f32 per vertex).

Two modes: `incremental` (the default renderer: each frame redoes only the region whose
geometry moved since the session's last frame, kernels/damage.py; the demo motion moves
head and face, not the body, as face-capture driving does) and `full` (every layer redrawn
whole every frame: the cost when the whole avatar moves).

Run: python bench/bench_render.py [--device cpu|cuda] [--batches 1,4,16] [--ticks 20]
     [--modes incremental,full] [--threads N] [--json out.json] [--baseline before.json]
     [--out results.md]
Writes bench/results_render.md (cpu) or bench/results_render_cuda.md (cuda) unless --out
says otherwise; without a GPU, `--device cuda` only says that it is skipped. `--baseline`
adds a before/after table from a `--json` dump of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("deform", "damage", "raster", "shade", "composite")
WIDTH, HEIGHT = 1280, 720
GODETTE = Path(__file__).resolve().parents[2] / "shared/assets/vrm/Godette/Godette_vrm_v4.vrm"
CPU_BATCHES = "1,4,16"
CUDA_BATCHES = "1,16,256,1024"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def session_bytes(renderer, slot: int) -> dict[str, int]:
    """What one session holds: frame, background, layer scratch, deformed vertices."""
    from avatarfarm.render.renderer import HISTORY_WIDTH

    state = renderer._slots[slot]
    _, _, lw, lh = (int(v) for v in renderer._slot_layer[slot])
    vertices = int(renderer.pool.ranges[state.avatar][1])
    return {
        "frame": state.width * state.height * 3 // 2,
        "background": state.shown.bg_size * state.shown.bg_frames,
        "layer": lw * lh * (8 + (0 if renderer._scratch.shared_blend else 8) + 4),
        "vertices": vertices * (16 + 12),
        "history": vertices * 4 * HISTORY_WIDTH,
    }


def count_launches(renderer_module) -> list[int]:
    """Wrap the CUDA launchers so that each call is counted (one per stage per tick)."""
    calls = [0]

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)

        return wrapper

    kernels = renderer_module.CUDA_KERNELS
    renderer_module.CUDA_KERNELS = type(kernels)(*(counted(f) for f in kernels))
    return calls


def run(
    avatar, batch: int, ticks: int, device: str, launches: list[int] | None, incremental: bool
) -> dict:
    from avatarfarm.render.motion import demo_motion
    from avatarfarm.render.renderer import Renderer
    from avatarfarm.render.scene import Scene

    renderer = Renderer(device, incremental=incremental)
    slots = np.array(
        [renderer.open(avatar, WIDTH, HEIGHT, Scene(framing="bust")) for _ in range(batch)]
    )
    phase = np.arange(batch) * 0.37
    for i in range(3):
        renderer.render(slots, *demo_motion(i / 30.0 + phase))
    stage = {name: [] for name in STAGES}
    totals = []
    if launches is not None:
        launches[0] = 0
    cpu0 = time.process_time()
    for i in range(ticks):
        renderer.stage_seconds = {}
        t0 = time.perf_counter()
        renderer.render(slots, *demo_motion(1.0 + i / 30.0 + phase))
        totals.append(time.perf_counter() - t0)
        for name in STAGES:
            stage[name].append(renderer.stage_seconds.get(name, 0.0))
    cpu = time.process_time() - cpu0
    frames = batch * ticks
    result = {
        "batch": batch,
        "stage_ms": {k: 1e3 * min(v) / batch for k, v in stage.items()},
        "best_ms": 1e3 * min(totals) / batch,
        "median_ms": 1e3 * statistics.median(totals) / batch,
        "cpu_ms": 1e3 * cpu / frames,
        "afps_best": batch / min(totals),
        "afps_median": batch / statistics.median(totals),
        "memory": session_bytes(renderer, int(slots[0])),
    }
    if launches is not None:
        result["launcher_calls_per_tick"] = launches[0] / ticks
    return result


def table(rows: list[dict], cuda: bool) -> list[str]:
    head = (
        "| batch | "
        + " | ".join(STAGES)
        + " | render best | render median | CPU | af/s best | af/s median |"
    )
    if cuda:
        head += " launcher calls / tick |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [str(r["batch"])] + [f"{r['stage_ms'][s]:.2f}" for s in STAGES]
        cells += [f"{r['best_ms']:.2f}", f"{r['median_ms']:.2f}", f"{r['cpu_ms']:.2f}"]
        cells += [f"{r['afps_best']:.0f}", f"{r['afps_median']:.0f}"]
        if cuda:
            cells.append(f"{r['launcher_calls_per_tick']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_lines(memory: dict[str, int]) -> list[str]:
    total = sum(memory.values())
    parts = ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in memory.items())
    return [f"Memory per session: {total / 2**20:.2f} MiB ({parts})."]


def compare(before: dict, after: dict) -> list[str]:
    lines = [
        "| avatar | batch | stage | before ms | after ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in after.items():
        old = {r["batch"]: r for r in before.get(name, [])}
        for r in rows:
            b = old.get(r["batch"])
            if b is None:
                continue
            pairs = [(s, b["stage_ms"].get(s, 0.0), r["stage_ms"][s]) for s in STAGES]
            pairs.append(("render (median)", b["median_ms"], r["median_ms"]))
            pairs.append(("CPU per af", b["cpu_ms"], r["cpu_ms"]))
            for stage, x, y in pairs:
                ratio = f"{x / y:.2f}x" if x > 0 and y > 0 else "-"
                lines.append(f"| {name} | {r['batch']} | {stage} | {x:.2f} | {y:.2f} | {ratio} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batches", default=None, help=f"cpu: {CPU_BATCHES}; cuda: {CUDA_BATCHES}")
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--modes", default="incremental,full", help="incremental and/or full")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also dump the numbers here")
    parser.add_argument("--baseline", type=Path, default=None, help="--json of an earlier run")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results_render.md (cpu), _cuda.md (cuda)"
    )
    args = parser.parse_args()

    import numba

    from avatarfarm.kernels.backend import cuda_available
    from avatarfarm.render import renderer as renderer_module
    from avatarfarm.render.avatars import load

    cuda = args.device == "cuda"
    if cuda and not cuda_available():
        print("no CUDA GPU visible to numba: the CUDA benchmark is skipped")
        return
    if args.threads:
        numba.set_num_threads(args.threads)
    batches = [int(b) for b in (args.batches or (CUDA_BATCHES if cuda else CPU_BATCHES)).split(",")]
    out_path = args.out or Path(__file__).with_name(
        "results_render_cuda.md" if cuda else "results_render.md"
    )
    launches = count_launches(renderer_module) if cuda else None
    avatars = {"default": "default"}
    if GODETTE.exists():
        avatars["Godette"] = GODETTE

    results: dict[str, list[dict]] = {}
    out = [
        f"# Render benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "",  # the machine line, once a parallel run has chosen the threading layer
        f"Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"{WIDTH}x{HEIGHT}, bust framing, default scene (background + AI label), demo motion. "
        "Milliseconds per avatar-frame: per stage the best of "
        f"{args.ticks} ticks; render = the whole `Renderer.render` call (best and median tick); "
        "CPU = process CPU time over all ticks.",
    ]
    modes = args.modes.split(",")
    for name, spec in avatars.items():
        avatar = load(spec)
        for mode in modes:
            rows = []
            for batch in batches:
                row = run(avatar, batch, args.ticks, args.device, launches, mode != "full")
                rows.append(row)
                print(
                    f"{name} {mode} batch {batch}: {row['afps_median']:.0f} af/s (median), "
                    + ", ".join(f"{s} {row['stage_ms'][s]:.2f}" for s in STAGES)
                    + " ms/af",
                    flush=True,
                )
            key = name if mode == modes[0] else f"{name} ({mode})"
            results[key] = rows
            out += ["", f"## {name} ({args.device}, {mode})", ""] + table(rows, cuda)
        out += [""] + memory_lines(rows[0]["memory"])
    threads = f"{numba.get_num_threads()} threads"
    if not cuda:  # the threading layer is chosen by the first parallel kernel
        threads += f", {numba.threading_layer()} layer"
    out[2] = (
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, numba {numba.__version__} "
        f"({threads}). Device: {args.device}."
    )
    if args.baseline is not None:
        before = json.loads(args.baseline.read_text())
        out += [
            "",
            "## Before / after",
            "",
            f"Before: `{args.baseline.name}` "
            f"({before.get('when', 'earlier run')}), same command on the previous kernels.",
            "",
        ]
        out += compare(before["results"], results)
    text = "\n".join(out) + "\n"
    print(text)
    out_path.write_text(text)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
