"""The `avatarfarm` command line: avatar tools, single-frame/clip rendering, the server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from avatarfarm.render.asset import AssetError


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except AssetError as exc:
        print(f"avatarfarm: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"avatarfarm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
