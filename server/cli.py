"""The `avatarfarm` command line: avatar tools, single-frame/clip rendering, the server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from avatarfarm.render.asset import AssetError
from avatarfarm.render.scene import SceneError


def _avatar_info(args: argparse.Namespace) -> int:
    from avatarfarm.render.avatars import load

    asset = load(args.avatar)
    print(json.dumps(asset.summary(), indent=2, ensure_ascii=False))
    return 0


def _export_default(args: argparse.Namespace) -> int:
    from avatarfarm.render.default_avatar import load_default_avatar
    from avatarfarm.render.glb_export import export_glb

    export_glb(load_default_avatar(), args.out)
    print(args.out)
    return 0


def _render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avatarfarm.render.camera import Placement
    from avatarfarm.render.scene import Label, Scene

    from . import offline

    size = offline.parse_size(args.size)
    label = Label(text=args.label) if args.label else Label()
    scene = Scene(background=args.background, framing=args.framing,
                  placement=Placement(scale=args.zoom), label=label)  # fmt: skip
    out = Path(args.out)
    if args.seconds is not None:
        if out.suffix.lower() != ".mp4":
            raise ValueError("--seconds writes a clip: give an .mp4 --out")
        count = offline.render_clip(args.avatar, size, scene, args.seconds, args.fps, out,
                                    args.device)  # fmt: skip
        print(f"{out} ({count} frames)")
        return 0
    if out.suffix.lower() not in offline.IMAGE_SUFFIXES:
        raise ValueError("--out must end in .png, .jpg or .jpeg (or use --seconds with .mp4)")
    pose = offline.StillPose(
        offline.parse_expressions(args.expression),
        head=(args.head_yaw, args.head_pitch, args.head_roll),
        eyes=(args.eye_yaw, args.eye_pitch, args.eye_yaw, args.eye_pitch),
    )
    offline.render_still(args.avatar, size, scene, pose, out, args.device)
    print(out)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(
        host=args.host, port=args.port, device=args.device, config=args.config, demo=args.demo
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatarfarm", description="Batched avatar render and streaming server."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    avatar = commands.add_parser("avatar", help="inspect and export avatars")
    avatar_commands = avatar.add_subparsers(dest="avatar_command", required=True)
    info = avatar_commands.add_parser("info", help="print a JSON summary of an avatar")
    info.add_argument("avatar", help="'default' or a .glb/.gltf/.vrm file")
    info.set_defaults(run=_avatar_info)
    export = avatar_commands.add_parser(
        "export-default", help="write the built-in avatar as a standard GLB"
    )
    export.add_argument("out", help="output .glb path")
    export.set_defaults(run=_export_default)

    render = commands.add_parser("render", help="render a frame (PNG/JPEG) or a clip (MP4)")
    render.add_argument("--avatar", default="default", help="'default' or a .glb/.vrm file")
    render.add_argument("--expression", action="append", default=[], metavar="NAME=VALUE",
                        help="e.g. jawOpen=0.7 (repeatable; ARKit or VRM names)")  # fmt: skip
    render.add_argument("--head-yaw", type=float, default=0.0)
    render.add_argument("--head-pitch", type=float, default=0.0)
    render.add_argument("--head-roll", type=float, default=0.0)
    render.add_argument("--eye-yaw", type=float, default=0.0)
    render.add_argument("--eye-pitch", type=float, default=0.0)
    render.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (even)")
    render.add_argument("--framing", default="bust", choices=("head", "bust", "full"))
    render.add_argument("--zoom", type=float, default=1.0, help="scale of the framed avatar")
    render.add_argument("--background", default="#203040", help="#rrggbb or an image/video")
    render.add_argument("--label", default=None, help="text of the AI-content label")
    render.add_argument("--seconds", type=float, default=None, help="render a clip instead")
    render.add_argument("--fps", type=int, default=30)
    render.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    render.add_argument("--out", required=True, help="frame.png | frame.jpg | clip.mp4")
    render.set_defaults(run=_render)

    serve = commands.add_parser("serve", help="run the render server (HTTP API + console)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default 8080)")
    serve.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    serve.add_argument("--config", default=None, help="avatarfarm.toml settings file")
    serve.add_argument(
        "--demo", action="store_true", help="also start a demo session; print the console URL"
    )
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (AssetError, SceneError) as exc:
        print(f"avatarfarm: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"avatarfarm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
