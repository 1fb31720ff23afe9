"""A synthetic evaluation suite: pictures drawn here, so the right answer is known exactly.

The field report judged SmolVLM2 by eye on six scenarios. These drawings stand in for its
photographs, one family per scenario, with the ground truth recorded as each is drawn: what
objects a scene holds, which side of a heatmap is hotter, how many shrimp are in a tank, what
text a plate carries, how long a pencil is against a ruler, and where a dot moves in a video.
They are not realistic; they are checkable, and the tests count, measure and read the ground
truth back from the pixels.

`write_synthetic_suite` is deterministic: the same seed gives byte-identical files. Cases
alternate between Chinese and English prompts (the short style of `smolsight.tasks`).
Text is drawn with a real CJK font (`cjk_font_path`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import SmolsightError
from ..tasks import LANGS, task_prompt

Colour = tuple[int, int, int]
SIDES = ("left", "right", "top", "bottom")

CJK_FONT_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


# ---------------------------------------------------------------------------------------------
# Fonts


def _fontconfig_cjk_fonts() -> list[str]:
    if not shutil.which("fc-list"):
        return []
    listing = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False).stdout
    return sorted(line.strip().rstrip(":") for line in listing.splitlines() if line.strip())


@functools.cache
def cjk_font_path() -> Path:
    """A font with Chinese glyphs: $SMOLSIGHT_CJK_FONT, else a known path (Noto Sans CJK first),
    else whatever fontconfig lists for Chinese."""
    candidates = [os.environ.get("SMOLSIGHT_CJK_FONT", ""), *CJK_FONT_PATHS, *_fontconfig_cjk_fonts()]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SmolsightError(
        "no font with Chinese glyphs found; install one (Debian/Ubuntu: apt install fonts-noto-cjk) "
        "or point SMOLSIGHT_CJK_FONT at a .ttc/.ttf/.otf file"
    )


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """The CJK font at `size`; in a collection, its Simplified Chinese face where it has one."""
    path = str(cjk_font_path())
    index = 0
    for i in range(16):
        try:
            if "SC" in ImageFont.truetype(path, size, index=i).getname()[0].split():
                index = i
                break
        except OSError:
            break
    return ImageFont.truetype(path, size, index=index)


# ---------------------------------------------------------------------------------------------
# Shared drawing helpers


def _gradient(width: int, height: int, top: Colour, bottom: Colour) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    return np.broadcast_to(np.array(top) * (1 - t) + np.array(bottom) * t, (height, width, 3))


def _noisy(rng: np.random.Generator, base: np.ndarray, sigma: float) -> Image.Image:
    """`base` with smooth sensor-like noise: drawn at a quarter of the size and scaled up, so
    flat areas are not flat yet the PNG stays small."""
    h, w = base.shape[:2]
    coarse = np.clip(128 + rng.normal(0.0, sigma, (h // 4 + 1, w // 4 + 1, 3)), 0, 255).astype(np.uint8)
    noise = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), dtype=float) - 128
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _disc(draw: ImageDraw.ImageDraw, centre, radius: float, fill: Colour) -> None:
    x, y = centre
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


def _ints(values) -> list[int]:
    return [int(round(float(v))) for v in values]


@dataclass
class _Ctx:
    """What a scenario's drawing function gets: its random stream, which case it is, where to save."""

    scenario: str
    index: int
    count: int
    rng: np.random.Generator
    media_dir: Path

    @property
    def lang(self) -> str:
        return LANGS[self.index % len(LANGS)]

    @property
    def stem(self) -> str:
        return f"{self.scenario}-{self.index:02d}"

    def save(self, image: Image.Image) -> str:
        image.save(self.media_dir / f"{self.stem}.png")
        return f"{self.media_dir.name}/{self.stem}.png"

    def case(self, media: list[str] | str, task: str, answer_type: str, expected, *, suffix: str = "",
             prompt: str | None = None, subject: str | None = None, **fields) -> dict:
        """A suite entry: media as written (a list of images, or one video), prompt in the
        short style unless given."""
        head = {"id": self.stem + suffix, "scenario": self.scenario, "media": media, "lang": self.lang, "task": task}
        if subject:
            head["subject"] = subject
        head["prompt"] = prompt or task_prompt(task, self.lang, "short", subject)
        return {**head, "answer_type": answer_type, "expected": expected, **fields}


# ---------------------------------------------------------------------------------------------
# Scenery: sky, ground, sun, trees, houses, flowers

SKY = ((95, 150, 225), (185, 215, 245))
GRASS = ((95, 165, 70), (60, 125, 45))
SUN = (250, 215, 60)
CANOPY = (35, 105, 45)
TRUNK = (110, 75, 40)
WALLS = ((225, 205, 160), (200, 120, 90), (235, 235, 225))
ROOF = (150, 45, 35)
FLOWERS = ((230, 40, 60), (250, 250, 250), (250, 200, 30))
SCENERY_SYNONYMS = {
    "sky": ["天空", "蓝天", "天上"],
    "tree": ["树", "森林", "forest", "woods"],
    "house": ["房", "屋", "建筑", "building", "home", "cottage", "hut", "cabin"],
}


def _tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float) -> list[float]:
    trunk, radius = rng.uniform(35, 60), rng.uniform(32, 45)
    draw.rectangle([x - 6, base - trunk, x + 6, base], fill=TRUNK)
    centre = (x, base - trunk - radius * 0.8)
    _disc(draw, centre, radius, CANOPY)
    return list(centre)


def _house(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float) -> tuple[list[float], Colour]:
    half, wall = rng.uniform(35, 48), rng.uniform(50, 70)
    colour = WALLS[int(rng.integers(len(WALLS)))]
    draw.rectangle([x - half, base - wall, x + half, base], fill=colour, outline=(60, 50, 40))
    draw.polygon([(x - half - 8, base - wall), (x, base - wall - half * 0.9), (x + half + 8, base - wall)], fill=ROOF)
    draw.rectangle([x - 7, base - wall * 0.45, x + 7, base], fill=(90, 60, 40))  # door
    for side in (-1, 1):  # windows, clear of the centre column
        wx = x + side * half * 0.6
        draw.rectangle([wx - 7, base - wall * 0.8, wx + 7, base - wall * 0.55], fill=(170, 210, 235), outline=(60, 50, 40))
    return [x, base - wall * 0.7], colour


def _scenery(ctx: _Ctx) -> list[dict]:
    """Each object gets its own column of the picture, so none hides another's recorded centre."""
    rng, (w, h) = ctx.rng, (640, 480)
    horizon = int(rng.integers(int(h * 0.45), int(h * 0.6)))
    image = _noisy(rng, np.concatenate([_gradient(w, horizon, *SKY), _gradient(w, h - horizon, *GRASS)]), 3)
    draw = ImageDraw.Draw(image)
    columns = list(rng.permutation((np.arange(6) + 0.5) * w / 6))
    objects: list[dict] = []
    if rng.random() < 0.7:
        centre = [columns.pop(), rng.uniform(40, horizon * 0.35)]
        _disc(draw, centre, 26, SUN)
        objects.append({"kind": "sun", "center": _ints(centre), "colour": list(SUN)})
    for _ in range(int(rng.integers(1, 4))):
        centre = _tree(draw, rng, columns.pop(), horizon + rng.uniform(15, 50))
        objects.append({"kind": "tree", "center": _ints(centre), "colour": list(CANOPY)})
    for _ in range(int(rng.integers(0, 3))):
        centre, colour = _house(draw, rng, columns.pop(), horizon + rng.uniform(15, 50))
        objects.append({"kind": "house", "center": _ints(centre), "colour": list(colour)})
    for _ in range(int(rng.integers(0, 30))):  # flowers in the foreground, below every object
        centre = (rng.uniform(10, w - 10), rng.uniform(horizon + 75, h - 8))
        _disc(draw, centre, 5, FLOWERS[int(rng.integers(len(FLOWERS)))])
        _disc(draw, centre, 2, (250, 200, 30))
    kinds = {o["kind"] for o in objects}
    expected = ["sky", "tree"] + (["house"] if "house" in kinds else [])
    synonyms = {k: SCENERY_SYNONYMS[k] for k in expected}
    return [ctx.case([ctx.save(image)], "describe", "contains_all", expected, synonyms=synonyms,
                     meta={"horizon": horizon, "objects": objects})]


# ---------------------------------------------------------------------------------------------
# Accident: a furnace, tank or truck on fire, with a smoke plume

FIRE = ((200, 40, 20), (245, 130, 30), (255, 220, 80))
ACCIDENT_SYNONYMS = {
    "fire": ["火", "燃烧", "着火", "起火", "flame", "burning", "blaze"],
    "smoke": ["烟", "smoky"],
}


def _fire_source(draw: ImageDraw.ImageDraw, kind: str, x: float, ground: float) -> tuple[float, float]:
    """Draw the burning thing; returns the x span along its top where the fire sits."""
    metal, dark = (125, 125, 130), (45, 45, 50)
    if kind == "furnace":
        draw.rectangle([x - 60, ground - 110, x + 60, ground], fill=metal, outline=dark, width=3)
        draw.rectangle([x + 25, ground - 300, x + 45, ground - 110], fill=(105, 105, 110), outline=dark)  # column
        draw.rectangle([x - 20, ground - 50, x + 20, ground], fill=dark)  # door
        return x - 60, ground - 110
    if kind == "tank":
        draw.rectangle([x - 90, ground - 90, x + 90, ground - 20], fill=(175, 175, 180), outline=dark, width=3)
        for end in (-1, 1):
            draw.ellipse([x + end * 90 - 20, ground - 90, x + end * 90 + 20, ground - 20], fill=(175, 175, 180), outline=dark, width=3)
        draw.rectangle([x - 70, ground - 20, x - 55, ground], fill=dark)
        draw.rectangle([x + 55, ground - 20, x + 70, ground], fill=dark)
        return x - 80, ground - 90
    draw.rectangle([x - 100, ground - 95, x + 40, ground - 25], fill=(210, 210, 215), outline=dark, width=3)  # truck box
    draw.rectangle([x + 40, ground - 70, x + 90, ground - 25], fill=(40, 90, 160), outline=dark, width=3)  # cab
    for wx in (x - 75, x - 20, x + 65):
        _disc(draw, (wx, ground - 18), 17, (25, 25, 25))
    return x - 100, ground - 95


def _smoke(rng: np.random.Generator, image: Image.Image, plume: Callable[[float], tuple[float, float]]) -> Image.Image:
    """Translucent grey puffs along `plume` (rise 0 above the flames, 1 at the sky), growing as they rise."""
    layer = Image.new("RGBA", image.size)
    draw = ImageDraw.Draw(layer)
    for k in range(40):
        rise = k / 40
        cx, cy = np.array(plume(rise)) + rng.normal(0, [12, 8])
        r = 30 + 50 * rise + rng.uniform(-8, 8)
        grey = int(rng.integers(80, 135))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(grey, grey, grey + 5, int(rng.integers(150, 220))))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _flames(draw: ImageDraw.ImageDraw, rng: np.random.Generator, left: float, top: float, width: float) -> None:
    """Flame tongues standing on y=top between left and left+width: red outside, yellow inside."""
    for layer, colour in enumerate(FIRE):
        scale = 1.0 - 0.3 * layer
        for _ in range(14):
            bx = left + rng.uniform(0.1, 0.9) * width
            fw, fh = rng.uniform(25, 45) * scale, rng.uniform(70, 130) * scale
            draw.polygon([(bx - fw / 2, top), (bx - fw / 3, top - fh * 0.5), (bx + rng.normal(0, 6), top - fh),
                          (bx + fw / 3, top - fh * 0.5), (bx + fw / 2, top)], fill=colour)


def _accident(ctx: _Ctx) -> list[dict]:
    rng, (w, h) = ctx.rng, (640, 480)
    ground = int(h * 0.78)
    image = _noisy(rng, np.concatenate([_gradient(w, ground, (70, 70, 90), (150, 130, 120)),
                                        _gradient(w, h - ground, (95, 92, 88), (60, 60, 60))]), 4)
    kind = ("furnace", "tank", "truck")[ctx.index % 3]
    left, top = _fire_source(ImageDraw.Draw(image), kind, rng.uniform(w * 0.35, w * 0.6), ground)
    width = 120 if kind == "furnace" else 160
    drift = rng.uniform(-1.0, 1.0)

    def plume(rise: float) -> tuple[float, float]:
        return left + width / 2 + drift * rise * 180, top - 120 - rise * (top - 150)

    image = _smoke(rng, image, plume)
    _flames(ImageDraw.Draw(image), rng, left, top, width)
    sx, sy = plume(0.6)
    meta = {"source": kind, "flame_box": _ints([left + 0.15 * width, top - 45, left + 0.85 * width, top - 5]),
            "smoke_box": _ints([sx - 20, sy - 20, sx + 20, sy + 20])}
    return [ctx.case([ctx.save(image)], "accident", "contains_all", ["fire", "smoke"], synonyms=ACCIDENT_SYNONYMS, meta=meta)]


# ---------------------------------------------------------------------------------------------
# Simulation: a temperature field in the jet colormap, hotter towards one side


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colormap (blue cold, red hot) as 0-255 RGB floats, shape values.shape + (3,)."""
    v = np.asarray(values, dtype=float)[..., None]
    return np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1) * 255


def _field(rng: np.random.Generator, width: int, height: int, side: str) -> np.ndarray:
    """Values in [0, 1] rising towards `side`, with a few warm and cool spots that never
    overturn the trend."""
    v, u = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
    field = {"right": u, "left": 1 - u, "bottom": v, "top": 1 - v}[side].copy()
    for _ in range(int(rng.integers(3, 6))):
        cy, cx, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.06, 0.15)
        field += rng.uniform(-0.12, 0.12) * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma**2))
    return (field - field.min()) / (field.max() - field.min())


def _simulation(ctx: _Ctx) -> list[dict]:
    rng, (w, h) = ctx.rng, (640, 480)
    field_box, bar_box = (40, 60, 500, 440), (535, 60, 560, 440)
    side = SIDES[int(rng.integers(len(SIDES)))]
    image = Image.new("RGB", (w, h), (255, 255, 255))
    fx0, fy0, fx1, fy1 = field_box
    image.paste(Image.fromarray(jet(_field(rng, fx1 - fx0, fy1 - fy0, side)).astype(np.uint8)), (fx0, fy0))
    bx0, by0, bx1, by1 = bar_box
    bar = jet(np.linspace(1, 0, by1 - by0))[:, None, :].repeat(bx1 - bx0, axis=1)
    image.paste(Image.fromarray(bar.astype(np.uint8)), (bx0, by0))
    draw = ImageDraw.Draw(image)
    draw.rectangle([fx0 - 1, fy0 - 1, fx1, fy1], outline=(0, 0, 0))
    draw.rectangle([bx0 - 1, by0 - 1, bx1, by1], outline=(0, 0, 0))
    low = int(rng.integers(15, 30))
    high = low + int(rng.integers(4, 12)) * 10
    for k in range(5):
        y = by1 - k * (by1 - by0) / 4
        draw.line([bx1, y, bx1 + 5, y], fill=(0, 0, 0))
        draw.text((bx1 + 8, y), f"{low + k * (high - low) / 4:g}", fill=(0, 0, 0), font=font(14), anchor="lm")
    title = {"zh": "温度场 (°C)", "en": "Temperature (°C)"}[ctx.lang]
    draw.text(((fx0 + fx1) / 2, 30), title, fill=(0, 0, 0), font=font(22), anchor="mm")
    return [ctx.case([ctx.save(image)], "trend", "trend", f"{side}_hotter",
                     meta={"field_box": list(field_box), "colorbar_box": list(bar_box), "range_c": [low, high]})]


# ---------------------------------------------------------------------------------------------
# Counting: shrimp fry in a tank

SHRIMP = (238, 150, 105)
SHRIMP_OUTLINE = (140, 75, 55)
SHRIMP_EYE = (25, 25, 25)
OUTLINE = 1
TANK = (820, 620)
TANK_RIM = 14


@dataclass(frozen=True)
class _Shrimp:
    """A curved body (discs along an arc, thick at the head), a fan tail and two eyes."""

    skeleton: np.ndarray  # [n, 2] head to tail
    radii: np.ndarray  # [n]
    tail: list[tuple[float, float]]
    eyes: list[tuple[float, float]]
    eye_radius: float
    footprint: np.ndarray  # [m, 3] discs (x, y, r) covering everything drawn, outline included

    @property
    def centre(self) -> np.ndarray:
        return self.skeleton[len(self.skeleton) // 2]


def _shrimp(rng: np.random.Generator, centre: np.ndarray, length: float) -> _Shrimp:
    n = 12
    angles = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) * np.linspace(-0.5, 0.5, n)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * length / (n - 1)
    skeleton = np.cumsum(steps, axis=0) - steps[0]
    skeleton += centre - skeleton[n // 2]
    radii = np.maximum(length * (0.12 - 0.07 * np.linspace(0, 1, n)), 1.5)
    back, forward = steps[-1] / np.linalg.norm(steps[-1]), steps[0] / np.linalg.norm(steps[0])
    tip = skeleton[-1] + back * 0.2 * length
    spread = np.array([-back[1], back[0]]) * 0.15 * length
    tail = [tuple(skeleton[-1]), tuple(tip + spread), tuple(tip - spread)]
    side = np.array([-forward[1], forward[0]]) * radii[0]  # on the body's edge: half of each eye shows
    eye_radius = max(1.2, 0.035 * length)
    eyes = [tuple(skeleton[0] - forward * 0.05 * length + s * side) for s in (-1, 1)]
    body = np.column_stack([skeleton, radii + OUTLINE + 2 * eye_radius])
    tail_disc = np.array([[*(skeleton[-1] + back * 0.1 * length), 0.18 * length + OUTLINE]])
    return _Shrimp(skeleton, radii, tail, eyes, eye_radius, np.vstack([body, tail_disc]))


def _draw_shrimp(draw: ImageDraw.ImageDraw, shrimp: _Shrimp, colour: Colour) -> None:
    """Outline, tail and eyes first, the body over them: eyes then show only where they stick
    out, and never cut a sliver off the body (which would count as a second shrimp)."""
    for point, radius in zip(shrimp.skeleton, shrimp.radii, strict=True):
        _disc(draw, point, radius + OUTLINE, SHRIMP_OUTLINE)
    draw.polygon(shrimp.tail, fill=colour, outline=SHRIMP_OUTLINE)
    for eye in shrimp.eyes:
        _disc(draw, eye, shrimp.eye_radius, SHRIMP_EYE)
    for point, radius in zip(shrimp.skeleton, shrimp.radii, strict=True):
        _disc(draw, point, radius, colour)


def _fits(new: _Shrimp, placed: list[_Shrimp], overlap: bool) -> bool:
    """Inside the tank, and either apart from every other shrimp by 3 px (so connected
    components count them) or, when overlap is allowed, with no centre covered by another."""
    lo, hi = TANK_RIM + 2, np.array(TANK) - TANK_RIM - 2
    fp = new.footprint
    if (fp[:, :2] - fp[:, 2:] < lo).any() or (fp[:, :2] + fp[:, 2:] > hi).any():
        return False
    if not placed:
        return True
    others = np.vstack([s.footprint for s in placed])
    if not overlap:
        gaps = np.linalg.norm(fp[:, None, :2] - others[None, :, :2], axis=2) - fp[:, None, 2] - others[None, :, 2]
        return bool(gaps.min() >= 3)
    centres = np.array([s.centre for s in placed])
    covers_new = np.linalg.norm(others[:, :2] - new.centre, axis=1) <= others[:, 2] + 1
    covers_old = np.linalg.norm(centres[:, None] - fp[None, :, :2], axis=2) <= fp[None, :, 2] + 1
    return not covers_new.any() and not covers_old.any()


def _shrimp_count(rng: np.random.Generator, index: int, count: int) -> int:
    """From 1 to 200, log-spaced over the cases: case i draws from the i-th of `count` bins."""
    edges = np.logspace(0, np.log10(200), count + 1)
    return int(rng.integers(int(np.ceil(edges[index])), int(np.floor(edges[index + 1])) + 1))


def _tank(rng: np.random.Generator) -> Image.Image:
    w, h = TANK
    image = _noisy(rng, _gradient(w, h, (70, 130, 140), (35, 85, 105)), 4)
    draw = ImageDraw.Draw(image)
    for _ in range(25):  # pebbles on the floor, bubbles in the water: nothing shrimp-coloured
        x, y = rng.uniform(TANK_RIM, w - TANK_RIM), rng.uniform(h - 60, h - TANK_RIM)
        grey = int(rng.integers(90, 140))
        draw.ellipse([x - 9, y - 6, x + 9, y + 6], fill=(grey, grey - 8, grey - 20))
        bx, by, r = rng.uniform(TANK_RIM, w - TANK_RIM), rng.uniform(TANK_RIM, h - 80), rng.uniform(2, 5)
        draw.ellipse([bx - r, by - r, bx + r, by + r], outline=(200, 225, 230))
    draw.rectangle([0, 0, w - 1, h - 1], outline=(25, 50, 60), width=TANK_RIM)
    return image


def _counting(ctx: _Ctx) -> list[dict]:
    rng = ctx.rng
    count = _shrimp_count(rng, ctx.index, ctx.count)
    overlap = ctx.index % 2 == 1
    image = _tank(rng)
    base_length = float(np.clip(0.5 * np.sqrt(TANK[0] * TANK[1] / count), 20, 90))
    placed: list[_Shrimp] = []
    while len(placed) < count:
        for _ in range(10_000):
            centre = rng.uniform(TANK_RIM, np.array(TANK) - TANK_RIM)
            shrimp = _shrimp(rng, centre, base_length * rng.uniform(0.75, 1.25))
            if _fits(shrimp, placed, overlap):
                placed.append(shrimp)
                break
        else:
            raise RuntimeError(f"could not place shrimp {len(placed) + 1} of {count}")
    draw = ImageDraw.Draw(image)
    for shrimp in placed:
        _draw_shrimp(draw, shrimp, tuple(int(c) for c in np.array(SHRIMP) + rng.integers(-6, 7, 3)))
    subject = {"zh": "虾苗", "en": "shrimp fry"}[ctx.lang]
    meta = {"overlap": overlap, "body_colour": list(SHRIMP), "centres": [_ints(s.centre) for s in placed]}
    return [ctx.case([ctx.save(image)], "count", "number", count, subject=subject, meta=meta)]


# ---------------------------------------------------------------------------------------------
# Text: a nameplate, a meter, an equipment label; each read back, and asked about


@dataclass(frozen=True)
class _Sign:
    lines: list[str]
    sizes: list[int]
    ink: list[Colour]
    plate: Colour
    question: dict[str, str] | None  # None: ask the qa task's own prompt about `subject`
    subject: str | None
    answer: list[str]
    synonyms: dict[str, list[str]]


def _sign(rng: np.random.Generator, kind: str) -> _Sign:
    if kind == "nameplate":
        model = f"NEU-{int(rng.integers(100, 1000))}"
        return _Sign(["iNeuOS 工业互联网操作系统", f"型号 Model {model}"], [38, 26], [(30, 30, 35)] * 2, (185, 188, 192),
                     None, "iNeuOS", ["operating system", "industrial internet"],
                     {"operating system": ["操作系统"], "industrial internet": ["工业互联网", "industrial iot", "iiot"]})
    if kind == "meter":
        value = f"{rng.uniform(40, 95):.1f}"
        question = {"zh": "仪表显示的出口温度是多少？用一句话回答。",
                    "en": "What outlet temperature does the meter show? Answer in one sentence."}
        return _Sign(["出口温度 Outlet temperature", f"{value} °C"], [26, 60], [(235, 235, 235), (90, 255, 120)],
                     (30, 35, 40), question, None, [value], {})
    number, power = f"P-{int(rng.integers(100, 1000))}", f"{rng.choice([5.5, 7.5, 11, 15, 22]):g}"
    question = {"zh": "这台设备的编号是什么？用一句话回答。",
                "en": "What is the equipment number on the label? Answer in one sentence."}
    return _Sign(["离心泵 Centrifugal pump", f"设备编号 No. {number}", f"额定功率 {power} kW"], [32, 28, 28],
                 [(20, 20, 20)] * 3, (245, 245, 238), question, None, [number], {number: [number.replace("-", "")]})


def _draw_sign(rng: np.random.Generator, sign: _Sign) -> tuple[Image.Image, list[list[int]]]:
    w, h = 640, 360
    image = _noisy(rng, _gradient(w, h, (90, 105, 120), (60, 70, 85)), 3)
    draw = ImageDraw.Draw(image)
    heights = [size * 1.5 for size in sign.sizes]
    top = (h - sum(heights)) / 2
    draw.rounded_rectangle([50, top - 30, w - 50, top + sum(heights) + 30], radius=12, fill=sign.plate,
                           outline=(60, 60, 60), width=3)
    for x in (65, w - 65):
        for y in (top - 15, top + sum(heights) + 15):
            _disc(draw, (x, y), 5, (120, 120, 125))  # rivets
    boxes = []
    for line, size, ink, height in zip(sign.lines, sign.sizes, sign.ink, heights, strict=True):
        position = (w / 2 + rng.uniform(-10, 10), top + height / 2)
        draw.text(position, line, fill=ink, font=font(size), anchor="mm")
        boxes.append(_ints(draw.textbbox(position, line, font=font(size), anchor="mm")))
        top += height
    return image, boxes


def _text(ctx: _Ctx) -> list[dict]:
    kind = ("nameplate", "meter", "label")[ctx.index % 3]
    sign = _sign(ctx.rng, kind)
    image, boxes = _draw_sign(ctx.rng, sign)
    media = [ctx.save(image)]
    meta = {"kind": kind, "lines": sign.lines, "boxes": boxes, "plate": list(sign.plate)}
    read = ctx.case(media, "read", "anls", [" ".join(sign.lines)], suffix="-read", meta=meta)
    question = sign.question[ctx.lang] if sign.question else None
    qa = ctx.case(media, "qa", "contains_all", sign.answer, suffix="-qa", prompt=question, subject=sign.subject,
                  synonyms=sign.synonyms, meta=meta)
    return [read, qa]


# ---------------------------------------------------------------------------------------------
# Hard text: what cameras in plants meet, one kind of trouble per picture, in one language

HARD_KINDS = ("small", "rotated", "low_contrast", "noisy_blur", "multiline", "gauge")
HARD_PHRASES = {
    "zh": ("禁止烟火", "当心触电", "注意安全", "高温危险", "请戴安全帽"),
    "en": ("NO OPEN FLAMES", "DANGER HIGH VOLTAGE", "KEEP CLEAR", "HOT SURFACE", "WEAR A HARD HAT"),
}
HARD_WORDS = {
    "zh": {"lot": "批号", "log": "二号泵维护记录", "service": "上次检修", "hours": "运行时间", "owner": "负责人 王工", "gauge": "出口压力"},
    "en": {"lot": "LOT", "log": "PUMP 2 SERVICE LOG", "service": "Last service", "hours": "Run time", "owner": "Owner J. Smith",
           "gauge": "OUTLET PRESSURE"},
}  # fmt: skip


def _hard_lines(rng: np.random.Generator, kind: str, lang: str) -> list[str]:
    words = HARD_WORDS[lang]
    if kind == "gauge":
        return [words["gauge"], f"{rng.uniform(0.1, 1.6):.2f} MPa"]
    if kind == "multiline":
        hours = int(rng.integers(100, 9000))
        return [words["log"], f"{words['service']} 2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
                f"{words['hours']} {hours} h", words["owner"]]
    phrase = HARD_PHRASES[lang][int(rng.integers(len(HARD_PHRASES[lang])))]
    return [phrase, f"{words['lot']} B{int(rng.integers(1000, 10000))}"]


def _gauge(rng: np.random.Generator, lines: list[str]) -> Image.Image:
    """A round dial with ticks and a needle, its reading in a display window below the centre."""
    w, h = 480, 480
    image = _noisy(rng, _gradient(w, h, (120, 125, 130), (80, 85, 90)), 3)
    draw = ImageDraw.Draw(image)
    cx, cy, r = w / 2, h / 2, 200
    _disc(draw, (cx, cy), r + 12, (50, 50, 55))
    _disc(draw, (cx, cy), r, (240, 240, 232))
    for k in range(41):
        angle = np.radians(225 - k * 270 / 40)
        inner = r - (24 if k % 5 == 0 else 12)
        draw.line([cx + inner * np.cos(angle), cy - inner * np.sin(angle), cx + (r - 4) * np.cos(angle), cy - (r - 4) * np.sin(angle)],
                  fill=(30, 30, 30), width=3 if k % 5 == 0 else 1)  # fmt: skip
    needle = np.radians(225 - rng.uniform(0.1, 0.9) * 270)
    draw.line([cx, cy, cx + 150 * np.cos(needle), cy - 150 * np.sin(needle)], fill=(200, 30, 30), width=5)
    _disc(draw, (cx, cy), 12, (40, 40, 40))
    draw.text((cx, cy - 70), lines[0], fill=(40, 40, 40), font=font(22), anchor="mm")
    draw.rectangle([cx - 95, cy + 45, cx + 95, cy + 105], fill=(25, 35, 30), outline=(10, 10, 10), width=3)
    draw.text((cx, cy + 75), lines[1], fill=(120, 255, 140), font=font(34), anchor="mm")
    return image


def _hard_picture(rng: np.random.Generator, kind: str, lines: list[str]) -> tuple[Image.Image, dict]:
    """The picture of one hard kind, and what makes it hard (meta)."""
    if kind == "gauge":
        return _gauge(rng, lines), {}
    dark = (20, 20, 20)
    if kind == "small":
        size = int(rng.integers(11, 14))
        return _draw_sign(rng, _Sign(lines, [size] * len(lines), [dark] * len(lines), (245, 245, 238), None, None, [], {}))[0], {"size": size}
    if kind == "low_contrast":
        plate, ink = int(rng.integers(150, 175)), int(rng.integers(110, 125))
        sign = _Sign(lines, [30] * len(lines), [(ink, ink, ink)] * len(lines), (plate, plate, plate - 4), None, None, [], {})
        return _draw_sign(rng, sign)[0], {"plate": plate, "ink": ink}
    sizes = [26] * len(lines) if kind == "multiline" else [34] * len(lines)
    image = _draw_sign(rng, _Sign(lines, sizes, [dark] * len(lines), (245, 245, 238), None, None, [], {}))[0]
    if kind == "rotated":
        angle = float(rng.choice([-1, 1]) * rng.uniform(3, 6))
        return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(75, 88, 102)), {"angle": round(angle, 2)}
    if kind == "noisy_blur":
        radius, sigma = float(rng.uniform(1.2, 1.8)), float(rng.uniform(14, 20))
        blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=float)
        noisy = np.clip(blurred + rng.normal(0, sigma, blurred.shape), 0, 255).astype(np.uint8)
        return Image.fromarray(noisy), {"blur_radius": round(radius, 2), "noise_sigma": round(sigma, 1)}
    return image, {}


def _text_hard(ctx: _Ctx) -> list[dict]:
    """One reading case per hard kind, all in the case's language (alternating by index)."""
    cases = []
    for kind in HARD_KINDS:
        lines = _hard_lines(ctx.rng, kind, ctx.lang)
        image, trouble = _hard_picture(ctx.rng, kind, lines)
        name = f"{ctx.stem}-{kind}.png"
        image.save(ctx.media_dir / name)
        meta = {"kind": kind, "lines": lines, **trouble}
        cases.append(ctx.case([f"{ctx.media_dir.name}/{name}"], "read", "anls", [" ".join(lines)], suffix=f"-{kind}", meta=meta))
    return cases


# ---------------------------------------------------------------------------------------------
# Measurement: a pencil above a ruler

TABLE = (150, 110, 75)
RULER_CM = 20
PENCIL_PARTS = ((0.6, (235, 140, 150)), (0.5, (195, 195, 200)))  # eraser, ferrule (cm, colour)
PENCIL_TIP_CM, PENCIL_LEAD_CM = 1.6, 0.35


def _ruler(draw: ImageDraw.ImageDraw, zero: float, top: float, per_cm: float) -> None:
    draw.rectangle([zero - 18, top, zero + RULER_CM * per_cm + 18, top + 62], fill=(245, 235, 200), outline=(90, 80, 60))
    for mm in range(RULER_CM * 10 + 1):
        x = zero + mm * per_cm / 10
        length, width = (22, 2) if mm % 10 == 0 else (15, 1) if mm % 5 == 0 else (9, 1)
        draw.line([x, top, x, top + length], fill=(20, 20, 20), width=width)
        if mm % 10 == 0:
            draw.text((x, top + 27), str(mm // 10), fill=(20, 20, 20), font=font(15), anchor="mt")


def _pencil(draw: ImageDraw.ImageDraw, x0: float, y: float, length_cm: float, per_cm: float, tip_right: bool) -> None:
    """Eraser, ferrule, yellow body, sharpened wood and lead, `length_cm` from end to point,
    starting at x0 (its left end) and pointing right or left."""
    half = 0.35 * per_cm

    def x(cm: float) -> float:  # cm from the eraser end
        return x0 + cm * per_cm if tip_right else x0 + (length_cm - cm) * per_cm

    def band(from_cm: float, to_cm: float, top: float, bottom: float, colour: Colour) -> None:
        draw.rectangle([min(x(from_cm), x(to_cm)), top, max(x(from_cm), x(to_cm)), bottom], fill=colour)

    at = 0.0
    for cm, colour in PENCIL_PARTS:
        band(at, at + cm, y - half, y + half, colour)
        at += cm
    body_end = length_cm - PENCIL_TIP_CM
    for stripe, colour in enumerate(((250, 215, 70), (240, 190, 30), (215, 160, 20))):
        top = y - half + stripe * 2 * half / 3
        band(at, body_end, top, top + 2 * half / 3, colour)
    point = (x(length_cm), y)
    draw.polygon([(x(body_end), y - half), point, (x(body_end), y + half)], fill=(225, 185, 135))
    lead = PENCIL_LEAD_CM / PENCIL_TIP_CM
    lead_start = x(length_cm - PENCIL_LEAD_CM)
    draw.polygon([(lead_start, y - half * lead), point, (lead_start, y + half * lead)], fill=(60, 60, 65))


def _measurement(ctx: _Ctx) -> list[dict]:
    """The first case is the report's 14.7 cm pencil; the pencil does not start at the ruler's 0."""
    rng, (w, h) = ctx.rng, (960, 320)
    length_cm = 14.7 if ctx.index == 0 else round(float(rng.uniform(6.0, 18.5)), 1)
    per_cm = float(rng.uniform(38, 44))
    zero, ruler_top, pencil_y = 60.0, 190.0, 120.0
    grain = 6 * np.sin(np.linspace(0, 40, h))[:, None, None] * np.ones((1, w, 1))
    image = _noisy(rng, np.array(TABLE) + grain, 2)
    draw = ImageDraw.Draw(image)
    _ruler(draw, zero, ruler_top, per_cm)
    start_cm = float(rng.uniform(0, RULER_CM - length_cm))
    _pencil(draw, zero + start_cm * per_cm, pencil_y, length_cm, per_cm, bool(rng.random() < 0.5))
    subject = {"zh": "铅笔", "en": "pencil"}[ctx.lang]
    meta = {"px_per_cm": round(per_cm, 4), "ruler_zero_x": zero, "ruler_top": ruler_top, "pencil_y": pencil_y,
            "pencil_start_cm": round(start_cm, 3), "table": list(TABLE)}
    return [ctx.case([ctx.save(image)], "measure", "number", length_cm, subject=subject, unit="cm",
                     tolerance={"rel": 0.1}, meta=meta)]


# ---------------------------------------------------------------------------------------------
# Video: a red dot crossing the frame

DOT = (220, 30, 30)
VIDEO_SIZE, VIDEO_FPS, VIDEO_FRAMES = (320, 240), 8, 28  # 3.5 s


def _video_codec() -> str:
    import av

    return next(name for name in ("libx264", "mpeg4") if name in av.codecs_available)


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    """MP4 with no timestamps or version strings in it (bitexact), one encoder thread: repeatable."""
    import av
    from av.codec.context import Flags

    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(_video_codec(), rate=VIDEO_FPS, options={"threads": "1"})
        stream.width, stream.height, stream.pix_fmt = *VIDEO_SIZE, "yuv420p"
        stream.codec_context.flags |= Flags.bitexact
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _video(ctx: _Ctx) -> list[dict]:
    rng, (w, h) = ctx.rng, VIDEO_SIZE
    side = SIDES[int(rng.integers(len(SIDES)))]
    background = _noisy(rng, _gradient(w, h, (230, 230, 225), (200, 200, 195)), 2)
    draw = ImageDraw.Draw(background)
    for _ in range(3):
        x, y = rng.uniform(0, w - 40), rng.uniform(0, h - 30)
        draw.rectangle([x, y, x + 40, y + 30], fill=(150, 150, 155))
    fixed = rng.uniform(0.3, 0.7)
    travel = np.linspace(0.1, 0.9, VIDEO_FRAMES)
    if side in ("left", "top"):
        travel = travel[::-1]
    path = [(t * w, fixed * h) if side in ("left", "right") else (fixed * w, t * h) for t in travel]
    frames = []
    for centre in path:
        frame = background.copy()
        _disc(ImageDraw.Draw(frame), centre, 14, DOT)
        frames.append(np.asarray(frame))
    name = f"{ctx.media_dir.name}/{ctx.stem}.mp4"
    _write_video(ctx.media_dir.parent / name, frames)
    prompt = {"zh": "视频中的红色圆点朝哪个方向移动？用一句话回答。",
              "en": "In which direction does the red dot move in the video? Answer in one sentence."}[ctx.lang]
    return [ctx.case(name, "trend", "trend", f"moves_{side}", prompt=prompt,
                     meta={"fps": VIDEO_FPS, "frames": VIDEO_FRAMES, "start": _ints(path[0]), "end": _ints(path[-1])})]


# ---------------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[_Ctx], list[dict]]] = {
    "scenery": _scenery,
    "accident": _accident,
    "simulation": _simulation,
    "counting": _counting,
    "text": _text,
    "measurement": _measurement,
}


EXTRA_SCENARIOS: dict[str, Callable[[_Ctx], list[dict]]] = {"text_hard": _text_hard}  # drawn only when named
DRAWINGS = {**SCENARIOS, "video": _video, **EXTRA_SCENARIOS}  # in random-stream order: a new one changes no other
DEFAULT_SCENARIOS = (*SCENARIOS, "video")


def write_synthetic_suite(out_dir: str | Path, seed: int = 0, per_scenario: int = 3, scenarios: Iterable[str] | None = None) -> Path:
    """Draw `per_scenario` pictures per scenario (text makes a reading and a question case of
    each, text_hard a reading case of each of its `HARD_KINDS`) plus one video under
    `out_dir/media`, write `out_dir/suite.yaml`, return its path. `scenarios` (default: the six
    and the video) may name `text_hard`, the harder reading set for OCR."""
    if per_scenario < 1:
        raise SmolsightError("per_scenario must be at least 1")
    chosen = list(scenarios or DEFAULT_SCENARIOS)
    unknown = sorted(set(chosen) - set(DRAWINGS))
    if unknown:
        raise SmolsightError(f"no scenario {', '.join(unknown)} to draw; choose from {', '.join(DRAWINGS)}")
    out = Path(out_dir)
    media_dir = out / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    cases: list[dict] = []
    jobs = [(name, i) for name in DRAWINGS if name in chosen for i in range(1 if name == "video" else per_scenario)]
    for name, index in jobs:
        rng = np.random.default_rng([seed, list(DRAWINGS).index(name), index])  # one stream per case
        cases += DRAWINGS[name](_Ctx(name, index, per_scenario, rng, media_dir))
    suite = {
        "name": "synthetic",
        "description": "Drawn stand-ins for the field report's six scenarios, ground truth known by construction.",
        "meta": {"generator": "smolsight.evals.synth", "seed": seed, "per_scenario": per_scenario},
        "cases": cases,
    }
    path = out / "suite.yaml"
    text = yaml.safe_dump(suite, allow_unicode=True, sort_keys=False, width=120, default_flow_style=None)
    path.write_text(text, encoding="utf-8")
    return path
