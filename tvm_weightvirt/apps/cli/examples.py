"""`wvirt examples`: three small trained models with their data and a manifest."""

from __future__ import annotations

import os

import numpy as np

from .common import written_whole


def add_parser(command) -> None:
    parser = command(
        "examples",
        help="write three small trained models with their data and a manifest, to try the "
        "commands on (sensors.onnx, gestures.onnx, friedman.pt2, *.npz, suite.toml, "
        "sensors_input.npy)",
    )
    parser.add_argument("folder", help="a new (or empty) folder")


def run(args) -> int:
    from ..examples import write_user_models

    if os.path.isfile(args.folder) or (os.path.isdir(args.folder) and os.listdir(args.folder)):
        raise ValueError(f"'{args.folder}' exists and is not an empty folder")
    with written_whole(args.folder, folder=True) as tmp:
        write_user_models(tmp)
        with np.load(os.path.join(tmp, "sensors.npz")) as data:
            np.save(os.path.join(tmp, "sensors_input.npy"), data["x_test"][:1])
    print(f"wrote {', '.join(sorted(os.listdir(args.folder)))} to '{args.folder}'")
    return 0
