"""Render the README picture: the built-in avatar with a few expressions, and a vertical
1080x1920-style frame, all through the same path as a live stream (batched render -> NV12
-> back to RGB).

    python bench/readme_picture.py        # writes bench/presenter.png
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from avatarfarm.render.scene import Scene
from avatarfarm.server.offline import StillPose, render_still

OUT = Path(__file__).resolve().parent / "presenter.png"
SHOTS = [
    ("neutral", {}, (0, 0, 0)),
    ("aa", {"jawOpen": 0.6, "mouthSmileLeft": 0.3, "mouthSmileRight": 0.3}, (0, 0, 0)),
    ("happy", {"happy": 1.0}, (-12, 4, 5)),
    ("blink + turn", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0, "browInnerUp": 0.6}, (20, -5, 0)),
]


def main() -> None:
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (_, expressions, head) in enumerate(SHOTS):
            path = Path(tmp) / f"{i}.png"
            render_still("default", (400, 400), Scene(framing="head"),
                         StillPose(expressions, head=head), path)  # fmt: skip
            tiles.append(Image.open(path).convert("RGB"))
        vertical = Path(tmp) / "vertical.png"
        smile = StillPose({"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5})
        scene = Scene(framing="bust", background="#3a2f4a")
        render_still("default", (720, 1280), scene, smile, vertical)
        tall = Image.open(vertical).convert("RGB").resize((450, 800), Image.LANCZOS)
    sheet = Image.new("RGB", (800 + 450, 800), "#101418")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 2) * 400, (i // 2) * 400))
    sheet.paste(tall, (800, 0))
    sheet.save(OUT, optimize=True)
    print(OUT)


if __name__ == "__main__":
    main()
