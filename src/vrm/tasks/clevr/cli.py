"""`vrm clevr execute` and `vrm clevr render`: vrm's executor and renderer on CLEVR-format files."""

from __future__ import annotations

import argparse
from pathlib import Path

from vrm import VrmError


def cmd_execute(args) -> None:
    from vrm.tasks.clevr.executor import execute_files

    n = execute_files(args.scenes, args.questions, args.out)
    print(f"answered {n} questions: {args.out}")


def cmd_render(args) -> None:
    from vrm.tasks.clevr.data import load_data
    from vrm.tasks.clevr.executor import read_list
    from vrm.tasks.clevr.render import render_scene

    if args.size < 8:
        raise VrmError("--size must be at least 8 pixels")
    data = load_data(args.data)
    scenes = read_list(args.scenes, "scenes")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VrmError(f"{out}: cannot create the output folder ({e.strerror or e})") from None
    for i, scene in enumerate(scenes):
        if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
            raise VrmError(f"{args.scenes}: scene {i} has no objects list")
        name = Path(scene.get("image_filename") or f"{scene.get('image_index', i):06d}.png").name
        if not name.lower().endswith(".png"):
            name += ".png"
        try:
            image = render_scene(scene, data.colors, data.sizes, args.size, args.view)
        except VrmError as e:
            raise VrmError(f"{args.scenes}: scene {i}: {e}") from None
        try:
            image.save(out / name)
        except OSError as e:
            raise VrmError(f"{out / name}: cannot write ({e.strerror or e})") from None
    print(f"rendered {len(scenes)} scenes into {out}")


def add_clevr_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clevr execute`` and ``clevr render`` to vrm's command line."""
    from vrm.tasks.clevr.render import CLEVR_VIEW

    clevr = subparsers.add_parser("clevr", help="run vrm's CLEVR program executor or renderer on CLEVR-format files")
    sub = clevr.add_subparsers(dest="action", required=True)

    e = sub.add_parser("execute", help="answer CLEVR(-Math) programs; write every node's output")
    e.add_argument("--scenes", required=True, help="CLEVR scenes JSON ({'scenes': [...]})")
    e.add_argument("--questions", required=True, help="CLEVR questions JSON ({'questions': [...]}) with programs")
    e.add_argument("--out", required=True, help="write {'questions': [{'answer', 'node_outputs'}]} here")
    e.set_defaults(func=cmd_execute)

    r = sub.add_parser("render", help="draw CLEVR scenes top-down as DIR/<image_filename>")
    r.add_argument("--scenes", required=True, help="CLEVR scenes JSON")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--size", type=int, default=64, help="image side in pixels")
    r.add_argument("--view", type=float, default=CLEVR_VIEW,
                   help="half-width of the ground square shown, in scene units")
    r.add_argument("--data", help="CLEVR data folder (default: $VRM_CLEVR_DATA or shared/data/clevr)")
    r.set_defaults(func=cmd_render)
