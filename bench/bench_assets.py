"""Asset load times: the built-in avatar from its cache, and the sample VRM.

python bench/bench_assets.py            # prints a table, writes bench/results_assets.md
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

from avatarfarm.render import default_avatar
from avatarfarm.render.gltf import load_avatar

GODETTE = Path(__file__).resolve().parents[2] / "shared/assets/vrm/Godette/Godette_vrm_v4.vrm"


def timed(fn, repeat: int = 7) -> float:
    """Median seconds of `repeat` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    rows = []

    def default_from_cache():
        default_avatar._MEMO.clear()  # measure the cache file, not the in-process memo
        return default_avatar.load_default_avatar()

    rows.append(("built-in avatar, from its cache file", timed(default_from_cache)))
    if GODETTE.is_file():
        label = "Godette VRM 0.x (8,067 vertices, textured)"
        rows.append((label, timed(lambda: load_avatar(GODETTE))))
    lines = [
        f"# Asset load times — {datetime.date.today()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: "
        "`python bench/bench_assets.py` (median of 7 after a warm-up).",
        "",
        "| what | median |",
        "|---|---|",
        *[f"| {name} | {seconds * 1000:.1f} ms |" for name, seconds in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).parent / "results_assets.md").write_text(text)


if __name__ == "__main__":
    main()
