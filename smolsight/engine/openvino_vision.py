"""The vision encoder + connector as an OpenVINO model: converted once per weights, cached on
disk, compiled for the CPU. Why: on CPU, SigLIP over an image's tiles is most of an answer's
time, and OpenVINO's CPU plugin runs it 1.4-2.2x as fast as torch at the same error in bf16
(docs/performance.md has the measurements).

Conversion: `openvino.convert_model` traces `torch_vision.VisionTower` (what `get_image_features` computes
once padding images are dropped: inputs the tiles [N, 3, S, S] and their patch mask
[N, S/p, S/p], N dynamic); no optimum-intel, so no transformers version pin.

Cache: `$SMOLSIGHT_OPENVINO_CACHE` (default ~/.cache/smolsight/openvino) / KEY / {f32,int8}.xml,
and OpenVINO's compiled blobs of them in KEY/compiled.
KEY hashes the vision and connector tensors as loaded (so a LoRA adapter that changes them gets
its own conversion and one that does not shares the base's), their dtype, the vision config, the
OpenVINO and transformers versions and this module's FORMAT. bf16 and f32 inference compile the
same f32 file with a different precision hint; int8 is its own file (nncf post-training
quantisation on tiles of synthetic pictures, or of up to 16 of the user's own with `smolsight
convert --precision int8 --calibration DIR`, which replaces it; `int8.json` beside it says which).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..console import log
from ..errors import SmolsightError
from .torch_vision import VisionTower, real_tiles

FORMAT = 1  # bump when the converted graph or the files change
CACHE_ENV = "SMOLSIGHT_OPENVINO_CACHE"
PRECISIONS = ("bf16", "f32", "int8")
CALIBRATION_PICTURES = 6  # synthetic ones, when no pictures of the user's are given
MAX_CALIBRATION_PICTURES = 16  # of a user's folder: enough for activation ranges, ~13 tiles each
ERROR_PICTURES = 4  # of those, the feature error is measured on (float32 torch on 13 tiles takes seconds)


@dataclass(frozen=True)
class Calibration:
    """What int8 is calibrated on: PIL pictures, and where they came from (for the logs and `int8.json`)."""

    pictures: tuple
    source: str


def core():
    import openvino

    return openvino.Core()


@functools.cache
def cpu_supports_bf16() -> bool:
    """What OpenVINO's CPU plugin reports, not a guess from the CPU's name."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def float_precision(dtype: str) -> str:
    """bf16 where the CPU does bf16 natively and the engine is not float32; else f32."""
    return "bf16" if dtype != "float32" and cpu_supports_bf16() else "f32"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "smolsight" / "openvino")


def weights_key(model) -> str:
    """A content hash of what the conversion depends on (see the module's docstring)."""
    import openvino
    import transformers

    digest = hashlib.sha256()
    header = {"format": FORMAT, "openvino": openvino.__version__, "transformers": transformers.__version__,
              "vision": model.config.vision_config.to_dict(), "scale_factor": model.config.scale_factor}  # fmt: skip
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for part in ("vision_model", "connector"):
        for name, tensor in sorted(getattr(model.model, part).state_dict().items()):
            digest.update(f"{part}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:24]


def model_file(model, precision: str) -> Path:
    """Where the conversion of `model`'s vision weights for `precision` lives (or will)."""
    if precision not in PRECISIONS:
        raise SmolsightError(f"unknown OpenVINO precision {precision!r}; use {', '.join(PRECISIONS)}")
    return cache_root() / weights_key(model) / ("int8.xml" if precision == "int8" else "f32.xml")


def tile_geometry(model) -> tuple[int, int]:
    """(tile side in pixels, patches per side)."""
    vision = model.config.vision_config
    return vision.image_size, vision.image_size // vision.patch_size


def float32_tower(model) -> VisionTower:
    """A float32 copy of the model's tower (the engine's own weights stay as they are)."""
    return VisionTower(copy.deepcopy(model.model.vision_model).float(), copy.deepcopy(model.model.connector).float()).eval()


def reference_features(model, pixels: torch.Tensor, pixel_mask: torch.Tensor | None, tower: VisionTower | None = None) -> torch.Tensor:
    """float32 torch features on the same weights: what the backends' errors are measured against
    (`tower`: a `float32_tower` of the model made before, for several calls)."""
    tiles, masks = real_tiles(pixels, pixel_mask, model.config.vision_config.patch_size)
    with torch.inference_mode():
        return (tower or float32_tower(model))(tiles.float(), masks).flatten(0, 1)


def feature_errors(backends: dict, model, inputs: list, quiet: bool = False) -> dict[str, tuple[float, float]]:
    """Each named backend's (max, mean) absolute difference from float32 torch's features on the
    same weights, over every tile of `inputs` ((pixel values, pixel mask) pairs, as `processed`
    gives): the float32 reference, the slow part, is computed once per input."""
    tower, gaps = float32_tower(model), {name: [] for name in backends}
    with torch.inference_mode():
        for number, (pixels, mask) in enumerate(inputs, 1):
            log(f"  feature error: picture {number}/{len(inputs)}…", quiet)
            reference = reference_features(model, pixels, mask, tower)
            for name, backend in backends.items():
                gaps[name].append((backend(pixels, mask).float() - reference).abs().flatten())
    gaps = {name: torch.cat(parts) for name, parts in gaps.items()}
    return {name: (gap.max().item(), gap.mean().item()) for name, gap in gaps.items()}


def processed(processor, picture) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A picture cut into tiles by the model's own image processor: (pixel values, pixel mask)."""
    inputs = processor.image_processor(images=[[picture]], return_tensors="pt")
    return inputs["pixel_values"], inputs.get("pixel_attention_mask")


def evenly(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spaced, in order."""
    count = min(len(items), count)
    return [items[index * len(items) // count] for index in range(count)]


def convert_float(model, out: Path, quiet: bool) -> None:
    """Trace a float32 copy of the tower and save it uncompressed (f32 weights: the precision is
    chosen when compiling)."""
    import openvino

    side, patches = tile_geometry(model)
    tower = float32_tower(model)
    example = (torch.zeros(1, 3, side, side), torch.ones(1, patches, patches, dtype=torch.bool))
    inputs = [("pixel_values", openvino.PartialShape([-1, 3, side, side]), openvino.Type.f32),
              ("patch_attention_mask", openvino.PartialShape([-1, patches, patches]), openvino.Type.boolean)]  # fmt: skip
    log("  tracing the encoder and connector (the long part)…", quiet)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixes: none vary with the inputs kept
        converted = openvino.convert_model(tower, example_input=example, input=inputs)
    log("  saving…", quiet)
    openvino.save_model(converted, str(out), compress_to_fp16=False)


def synthetic_pictures(count: int = CALIBRATION_PICTURES) -> list:
    """Deterministic synthetic pictures (gradients, noise, shapes): int8's default calibration."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    pictures = []
    for index in range(count):
        width, height = (800, 600) if index % 2 == 0 else (480, 640)
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        base = (ramp * rng.uniform(0.2, 1, 3) + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(base)
        draw = ImageDraw.Draw(picture)
        for _ in range(12):
            x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            box = [x, y, x + int(rng.integers(20, 300)), y + int(rng.integers(20, 200))]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        pictures.append(picture)
    return pictures


def calibration_pictures(folder: str | Path) -> list[Path]:
    """Up to `MAX_CALIBRATION_PICTURES` pictures of `folder`, evenly spaced in name order: a user's
    own scenes to calibrate int8 on. Checked before any model loads."""
    from .media import IMAGE_SUFFIXES

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise SmolsightError(f"calibration folder {folder} is not a directory")
    found = sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES and item.is_file())
    if not found:
        raise SmolsightError(f"calibration folder {folder} has no pictures ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return evenly(found, MAX_CALIBRATION_PICTURES)


def calibration_tiles(model, processor, pictures) -> list[list]:
    """The tiles of `pictures` (PIL images) through the model's own image processor, one
    [tile, patch mask] pair each: what int8 quantisation measures activation ranges on."""
    patch, items = model.config.vision_config.patch_size, []
    for picture in pictures:
        tiles, masks = real_tiles(*processed(processor, picture), patch)
        items.extend([tile[None].float().numpy(), mask[None].numpy()] for tile, mask in zip(tiles, masks))
    return items


def quantize_int8(model, processor, float_file: Path, out: Path, quiet: bool, pictures) -> None:
    """nncf's post-training quantisation (transformer preset: softmax and layer norms stay float),
    calibrated on the tiles of `pictures`."""
    import openvino

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf imports it; its CUDA note is noise here
    import nncf

    items = calibration_tiles(model, processor, pictures)
    log(f"  quantising to int8, calibrated on {len(items)} tiles of {len(pictures)} pictures…", quiet)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if quiet else sys.stderr):  # nncf's progress bars
        quantized = nncf.quantize(core().read_model(str(float_file)), nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(items))  # fmt: skip
    openvino.save_model(quantized, str(out), compress_to_fp16=False)


def convert(model, processor, precision: str, quiet: bool = False, calibration: Calibration | None = None) -> Path:
    """The cached conversion for `precision`, made first if missing (with progress lines); int8 is
    calibrated on synthetic pictures unless `calibration` brings the user's, which replaces the
    cached int8 for these weights. Files are written to a temporary folder and moved in, so a
    crash or a second process converting the same weights never leaves half a model where a
    reader would take it."""
    target = model_file(model, precision)
    calibration = calibration if precision == "int8" else None  # only int8 is calibrated
    if target.exists() and calibration is None:
        return target
    what = f"calibrated on {calibration.source}, replacing the cached int8" if calibration else "once for these weights"
    log(f"Converting the vision encoder to OpenVINO ({precision}); {what}, cached in {target.parent}…", quiet)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".converting-") as work:
        float_file = target.with_name("f32.xml")
        if not float_file.exists():
            convert_float(model, Path(work) / "f32.xml", quiet)
            move_in(Path(work) / "f32.xml", float_file)
        if precision == "int8":
            calibration = calibration or Calibration(tuple(synthetic_pictures()), f"{CALIBRATION_PICTURES} synthetic pictures")
            quantize_int8(model, processor, float_file, Path(work) / "int8.xml", quiet, calibration.pictures)
            move_in(Path(work) / "int8.xml", target)
            calibration_note(target).write_text(json.dumps({"calibrated_on": calibration.source}) + "\n")
    log(f"Converted in {time.perf_counter() - start:.0f} s", quiet)
    return target


def calibration_note(int8_file: Path) -> Path:
    """`int8.json` beside `int8.xml`: what it was calibrated on."""
    return int8_file.with_suffix(".json")


def calibrated_on(int8_file: Path) -> str:
    """What `int8_file` was calibrated on; an int8 converted before the notes were written was
    calibrated on the synthetic pictures (the only ones then)."""
    try:
        return json.loads(calibration_note(int8_file).read_text())["calibrated_on"]
    except (OSError, ValueError, KeyError):
        return f"{CALIBRATION_PICTURES} synthetic pictures (converted before int8.json)"


def move_in(xml: Path, target: Path) -> None:
    """The weights first, then the graph: a reader that finds the .xml finds its .bin."""
    os.replace(xml.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(xml, target)


class OpenVinoVision:
    """The compiled tower, called like `torch_vision.TorchVision`. Each call has its own infer request, so
    threads that prepare requests at the same time do not share one."""

    def __init__(self, compiled, precision: str, patch: int, path: Path) -> None:
        self.compiled = compiled
        self.name = f"openvino {precision}"
        self.patch = patch
        self.path = path

    def __call__(self, pixels: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
        tiles, masks = real_tiles(pixels, pixel_mask, self.patch)
        request = self.compiled.create_infer_request()
        features = request.infer([tiles.float().numpy(), masks.numpy()])[0]  # [N, tokens per tile, hidden]
        return torch.from_numpy(features.copy()).flatten(0, 1)


def load(model, processor, precision: str, quiet: bool = False, calibration: Calibration | None = None) -> OpenVinoVision:
    """Convert (once) and compile for the CPU: `precision` bf16 or f32 picks the inference precision;
    int8 runs its non-quantised parts in bf16 where the CPU supports it (`convert` for `calibration`)."""
    path = convert(model, processor, precision, quiet, calibration)
    start = time.perf_counter()
    hint = precision if precision != "int8" else ("bf16" if cpu_supports_bf16() else "f32")
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "CACHE_DIR": str(path.parent / "compiled")}  # OpenVINO's own cache of compiled blobs: later loads skip compiling  # fmt: skip
    compiled = core().compile_model(str(path), "CPU", config)
    calibrated = f", calibrated on {calibrated_on(path)}" if precision == "int8" else ""
    log(f"Vision on OpenVINO ({precision}{calibrated}), compiled in {time.perf_counter() - start:.1f} s from {path}", quiet)
    return OpenVinoVision(compiled, precision, model.config.vision_config.patch_size, path)
