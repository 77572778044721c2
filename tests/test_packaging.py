"""The wheel installs only `avatarfarm/...`: a generic top-level `kernels`, `server` or
`render` package would collide with other installed distributions."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_only_the_avatarfarm_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("avatarfarm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"avatarfarm", next(t for t in top if t.endswith(".dist-info"))}
    shipped = ("render/asset.py", "render/gltf.py", "kernels/raster.py", "server/cli.py",
               "server/stream/pipeline.py", "server/drivers/vmc.py",
               "server/api/console/index.html")  # fmt: skip
    for module in shipped:
        assert f"avatarfarm/{module}" in names
    assert not any(name.startswith("avatarfarm/__init__") for name in names)  # a namespace
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "avatarfarm = avatarfarm.server.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
