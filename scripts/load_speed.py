"""How long an engine takes to load, and what the per-tile vision cache saves on a reference picture.

A measuring stick (docs/performance.md, "Load and the vision cache"): `--loads` engine loads after
a warm-up load (so the files are in the page cache and OpenVINO's conversion exists), then a request
with a reference picture beside a new frame (random pixels, so no tile repeats), its vision
features computed with nothing cached and with the reference cached, `--repeats` times each,
interleaved. To time another tree of the code, put it first on PYTHONPATH.

    python3 scripts/load_speed.py CHECKPOINT [--loads 3] [--repeats 3] [--size 800x600]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

import smolsight
from smolsight.bench import cpu_name
from smolsight.engine import Engine


def noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def vision_seconds(engine: Engine, inputs: dict) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        engine.image_features(inputs)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="800x600")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    print(f"smolsight from {os.path.dirname(smolsight.__file__)}; {cpu_name()}; load {os.getloadavg()[0]:.2f}")
    engine = Engine.load(args.checkpoint, device="cpu", quiet=True)
    loads = []
    for _ in range(args.loads):
        start = time.perf_counter()
        engine = Engine.load(args.checkpoint, device="cpu", quiet=True)
        loads.append(time.perf_counter() - start)
    print(f"engine load: median {statistics.median(loads):.2f} s ({', '.join(f'{s:.2f}' for s in loads)})")
    reference = noise(width, height, seed=0)
    cold, warm = [], []
    for repeat in range(args.repeats):
        inputs = engine.process(engine.request([reference, noise(width, height, seed=1 + repeat)], "What changed since the first picture?"))
        engine.vision_cache.clear()
        cold.append(vision_seconds(engine, inputs))
        engine.vision_cache.clear()
        vision_seconds(engine, engine.process(engine.request(reference, "?")))
        warm.append(vision_seconds(engine, inputs))
    tiles = len(inputs["pixel_values"][0])
    print(f"reference + frame ({tiles} tiles): nothing cached {statistics.median(cold):.2f} s, "
          f"reference cached {statistics.median(warm):.2f} s (medians of {args.repeats}); load {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
