"""Image classification tasks devec renders itself (embedded scale): digits, glyphs, shapes, signs, textures, scenes.

Tasks overlap as the paper's do (MNIST vs SVHN: the same digits in other styles; GTSRB vs shapes/colours; DTD vs
EuroSAT textures) and differ in style. Material: scikit-learn's bundled handwritten digits, matplotlib's fonts,
and procedural drawing with PIL/NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CANVAS = 64  # drawn at 64 x 64, then resized to the configured image size (antialiased)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (40, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "orange": (250, 140, 20), "purple": (140, 40, 180), "pink": (250, 130, 190), "brown": (130, 80, 30),
    "gray": (128, 128, 128), "cyan": (40, 210, 220),
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task: class names, how to draw an example, caption and zero-shot templates."""

    name: str
    classnames: tuple[str, ...]
    draw: Callable[[np.random.Generator, int, str], Image.Image]
    templates: tuple[str, ...]           # zero-shot head templates (evaluation)
    captions: tuple[str, ...]            # pre-training caption templates ({c}: class name, {colour}: a colour)


# ---------------------------------------------------------------- material

@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
             "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf", "cmr10.ttf", "cmss10.ttf", "DejaVuSerif-Italic.ttf"]
    found = tuple(str(ttf / n) for n in names if (ttf / n).exists())
    if not found:
        raise RuntimeError(f"no TrueType fonts found under {ttf}: matplotlib's font files are needed")
    return found


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _digit_pool(split: str) -> dict[int, np.ndarray]:
    """Handwritten digits by class; test uses its own writers' samples (a fixed 30 % of the 1797)."""
    images, labels = _sklearn_digits()
    held_out = np.random.default_rng(1234).random(len(labels)) < 0.3
    keep = held_out if split == "test" else ~held_out
    return {c: images[keep & (labels == c)] for c in range(10)}


def _rand_colour(rng: np.random.Generator, avoid: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    while True:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if avoid is None or sum(abs(a - b) for a, b in zip(c, avoid, strict=True)) > 200:
            return c  # type: ignore[return-value]


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in colour)  # type: ignore


def _text(img: Image.Image, rng: np.random.Generator, text: str, colour, size: tuple[int, int],
          centre: tuple[float, float] | None = None, rotate: float = 0.0) -> None:
    font = _font(_fonts()[int(rng.integers(len(_fonts())))], int(rng.integers(*size)))
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    d = ImageDraw.Draw(layer)
    cx, cy = centre or (CANVAS / 2 + rng.normal(0, 3), CANVAS / 2 + rng.normal(0, 3))
    d.text((cx, cy), text, fill=255, font=font, anchor="mm")
    if rotate:
        layer = layer.rotate(rotate, resample=Image.BILINEAR, center=(cx, cy))
    img.paste(Image.new("RGB", img.size, colour), (0, 0), layer)


def _noise_background(rng: np.random.Generator, base, amount: float = 30.0, blur: float = 2.0) -> Image.Image:
    arr = np.clip(np.array(base, np.float32) + rng.normal(0, amount, (CANVAS, CANVAS, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(blur))


# ---------------------------------------------------------------- tasks

def draw_handwritten(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """MNIST-like: a scikit-learn handwritten digit, white on black, shifted and scaled."""
    pool = _digit_pool(split)[label]
    digit = pool[int(rng.integers(len(pool)))]
    size = int(rng.integers(34, 50))
    glyph = Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    glyph = glyph.rotate(float(rng.normal(0, 8)), resample=Image.BILINEAR)
    img = Image.new("L", (CANVAS, CANVAS), 0)
    off = (CANVAS - size) // 2
    img.paste(glyph, (off + int(rng.integers(-5, 6)), off + int(rng.integers(-5, 6))))
    return img.convert("RGB")


def draw_street_digit(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """SVHN-like: a printed digit on a coloured, noisy background with neighbouring digits cut at the edges."""
    bg = _rand_colour(rng)
    img = _noise_background(rng, bg, 25, 1.5)
    fg = _rand_colour(rng, avoid=bg)
    for dx in (-30, 30):
        if rng.random() < 0.6:
            _text(img, rng, str(int(rng.integers(10))), fg, (34, 44), centre=(CANVAS / 2 + dx, CANVAS / 2))
    _text(img, rng, str(label), fg, (34, 46), rotate=float(rng.normal(0, 6)))
    return img


LETTERS = tuple("ABCDEFGHJK")


def draw_letter(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """Printed capital letters in various fonts and colours."""
    bg = _rand_colour(rng)
    img = Image.new("RGB", (CANVAS, CANVAS), bg)
    _text(img, rng, LETTERS[label], _rand_colour(rng, avoid=bg), (30, 48), rotate=float(rng.normal(0, 12)))
    return img


SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "pentagon", "hexagon", "ring", "heart")


def _polygon(n: int, cx: float, cy: float, r: float, phase: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(phase + 2 * math.pi * i / n), cy + r * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)]


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, outline_only: bool,
                phase: float = -math.pi / 2) -> None:
    kw = {"outline": fill, "width": max(2, int(r / 5))} if outline_only else {"fill": fill}
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
    elif shape == "square":
        d.polygon(_polygon(4, cx, cy, r * 1.2, phase + math.pi / 4), **kw)
    elif shape == "triangle":
        d.polygon(_polygon(3, cx, cy, r * 1.2, phase), **kw)
    elif shape == "star":
        pts = []
        for i in range(10):
            rr = r * 1.2 if i % 2 == 0 else r * 0.5
            a = phase + math.pi * i / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, **kw)
    elif shape == "cross":
        w = r * 0.4
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, cy - r * 1.2), (cx + r * 0.75, cy), (cx, cy + r * 1.2), (cx - r * 0.75, cy)], **kw)
    elif shape == "pentagon":
        d.polygon(_polygon(5, cx, cy, r * 1.1, phase), **kw)
    elif shape == "hexagon":
        d.polygon(_polygon(6, cx, cy, r * 1.1, phase), **kw)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(3, int(r / 3)))
    elif shape == "heart":
        rr = r * 0.55
        d.ellipse([cx - 2 * rr, cy - 1.5 * rr, cx, cy + 0.5 * rr], fill=fill)
        d.ellipse([cx, cy - 1.5 * rr, cx + 2 * rr, cy + 0.5 * rr], fill=fill)
        d.polygon([(cx - 1.9 * rr, cy), (cx + 1.9 * rr, cy), (cx, cy + 2 * rr)], fill=fill)


def draw_shape(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """Geometric shapes, large and centred, in any pair of contrasting colours."""
    bg = _rand_colour(rng)
    img = Image.new("RGB", (CANVAS, CANVAS), bg)
    r = float(rng.uniform(20, 25))
    cx, cy = CANVAS / 2 + rng.normal(0, 2), CANVAS / 2 + rng.normal(0, 2)
    _draw_shape(ImageDraw.Draw(img), SHAPES[label], cx, cy, r, _rand_colour(rng, avoid=bg),
                outline_only=False, phase=-math.pi / 2 + float(rng.normal(0, 0.1)))
    return img


SIGNS = ("stop", "yield", "speed limit 30", "speed limit 50", "speed limit 80", "no entry", "keep right",
         "danger", "parking", "priority road")


def draw_sign(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """GTSRB-like traffic signs: shape, colour and glyph together identify the sign."""
    img = _noise_background(rng, _jitter((110, 140, 110), rng, 60), 30, 2.5)
    d = ImageDraw.Draw(img)
    r = float(rng.uniform(20, 27))
    cx, cy = CANVAS / 2 + rng.normal(0, 2), CANVAS / 2 + rng.normal(0, 2)
    red, white, blue, yellow = (_jitter(c, rng) for c in ((210, 20, 30), (240, 240, 240), (20, 60, 200),
                                                            (240, 200, 20)))
    sign = SIGNS[label]
    if sign == "stop":
        d.polygon(_polygon(8, cx, cy, r, math.pi / 8), fill=red)
        _text(img, rng, "STOP", white, (11, 14), centre=(cx, cy))
    elif sign == "yield":
        d.polygon(_polygon(3, cx, cy, r, math.pi / 2), fill=red)
        d.polygon(_polygon(3, cx, cy, r * 0.55, math.pi / 2), fill=white)
    elif sign.startswith("speed"):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=red)
        d.ellipse([cx - r * 0.75, cy - r * 0.75, cx + r * 0.75, cy + r * 0.75], fill=white)
        _text(img, rng, sign.split()[-1], (20, 20, 20), (18, 24), centre=(cx, cy))
    elif sign == "no entry":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=red)
        d.rectangle([cx - r * 0.7, cy - r * 0.18, cx + r * 0.7, cy + r * 0.18], fill=white)
    elif sign == "keep right":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=blue)
        d.line([(cx - r * 0.4, cy - r * 0.4), (cx + r * 0.35, cy + r * 0.35)], fill=white, width=5)
        d.polygon([(cx + r * 0.5, cy + r * 0.5), (cx + r * 0.5, cy), (cx, cy + r * 0.5)], fill=white)
    elif sign == "danger":
        d.polygon(_polygon(3, cx, cy + 3, r, -math.pi / 2), fill=red)
        d.polygon(_polygon(3, cx, cy + 3, r * 0.6, -math.pi / 2), fill=white)
        _text(img, rng, "!", (20, 20, 20), (16, 20), centre=(cx, cy + 5))
    elif sign == "parking":
        d.rectangle([cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8], fill=blue)
        _text(img, rng, "P", white, (26, 32), centre=(cx, cy))
    elif sign == "priority road":
        d.polygon(_polygon(4, cx, cy, r, 0), fill=white)
        d.polygon(_polygon(4, cx, cy, r * 0.65, 0), fill=yellow)
    return img.rotate(float(rng.normal(0, 5)), resample=Image.BILINEAR, fillcolor=_jitter((110, 140, 110), rng))


TEXTURES = ("striped", "banded", "zigzagged", "chequered", "dotted", "grid", "wavy", "speckled", "swirly", "veined")


def _texture(rng: np.random.Generator, kind: str, c1, c2) -> Image.Image:
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    a = float(rng.uniform(0, math.pi))
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    f = float(rng.uniform(0.25, 0.5))
    ph = float(rng.uniform(0, 6.3))
    if kind == "striped":
        m = np.sin(f * u + ph) > 0
    elif kind == "banded":
        m = np.sin(0.35 * f * u + ph) > 0.3
    elif kind == "zigzagged":
        m = np.sin(f * (u + 4 * np.abs(((v * f / 2) % 2) - 1) * 3) + ph) > 0
    elif kind == "chequered":
        m = (np.sin(f * u + ph) > 0) ^ (np.sin(f * v + ph) > 0)
    elif kind == "dotted":
        m = np.sin(f * u + ph) * np.sin(f * v + ph) > 0.5
    elif kind == "grid":
        m = (np.abs(np.sin(f * u / 2 + ph)) > 0.93) | (np.abs(np.sin(f * v / 2 + ph)) > 0.93)
    elif kind == "wavy":
        m = np.sin(f * u + 3 * np.sin(0.25 * v + ph)) > 0
    elif kind == "speckled":
        m = rng.random((CANVAS, CANVAS)) < 0.15
    elif kind == "swirly":
        cx, cy = rng.uniform(16, 48, 2)
        r = np.hypot(xx - cx, yy - cy)
        m = np.sin(f * r + 2 * np.arctan2(yy - cy, xx - cx) + ph) > 0
    else:  # veined
        n = rng.normal(0, 1, (8, 8))
        big = np.array(Image.fromarray(n.astype(np.float32)).resize((CANVAS, CANVAS), Image.BICUBIC))
        m = np.abs(np.sin(3 * big)) < 0.15
    arr = np.where(m[..., None], np.array(c1, np.float32), np.array(c2, np.float32))
    arr = arr + rng.normal(0, 8, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def draw_texture(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """DTD-like describable textures in random colours, orientations and scales."""
    c1 = _rand_colour(rng)
    return _texture(rng, TEXTURES[label], c1, _rand_colour(rng, avoid=c1))


COLOUR_NAMES = tuple(COLOURS)


def draw_colour(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """The dominant colour of a picture: a large blob of one colour over a textured background."""
    c = _jitter(COLOURS[COLOUR_NAMES[label]], rng, 20)
    img = _texture(rng, TEXTURES[int(rng.integers(len(TEXTURES)))], _jitter((128, 128, 128), rng, 90),
                   _jitter((128, 128, 128), rng, 90))
    img = Image.blend(img, Image.new("RGB", img.size, (128, 128, 128)), 0.5)
    d = ImageDraw.Draw(img)
    r = float(rng.uniform(18, 26))
    cx, cy = rng.uniform(r - 4, CANVAS - r + 4, 2)
    _draw_shape(d, SHAPES[int(rng.integers(len(SHAPES) - 1))], float(cx), float(cy), r, c, outline_only=False)
    return img


SCENES = ("forest", "sea", "desert", "city", "farmland", "river", "highway", "snow", "lake", "industrial area")


def draw_scene(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """EuroSAT-like aerial land cover, drawn from noise fields, blobs and lines."""
    scene = SCENES[label]
    green, blue, sand, grey = (_jitter(c, rng, 25) for c in ((50, 110, 40), (30, 70, 150), (210, 180, 120),
                                                             (120, 120, 125)))
    base = {"forest": green, "sea": blue, "desert": sand, "snow": (235, 235, 240), "city": grey,
            "industrial area": _jitter((150, 140, 130), rng, 20)}.get(scene, _jitter((90, 140, 60), rng, 20))
    img = _noise_background(rng, base, 35 if scene in ("forest", "desert") else 20, 1.2)
    d = ImageDraw.Draw(img)
    if scene == "sea":
        for _ in range(6):
            y = float(rng.uniform(0, CANVAS))
            d.line([(0, y), (CANVAS, y + rng.normal(0, 4))], fill=_jitter((80, 120, 200), rng), width=1)
    elif scene == "city":
        for _ in range(14):
            x, y = rng.uniform(0, CANVAS - 8, 2)
            w, h = rng.uniform(5, 12, 2)
            d.rectangle([x, y, x + w, y + h], fill=_jitter((190, 180, 170), rng, 40))
    elif scene == "industrial area":
        for _ in range(4):
            x, y = rng.uniform(0, CANVAS - 20, 2)
            d.rectangle([x, y, x + rng.uniform(14, 24), y + rng.uniform(10, 20)], fill=_jitter((200, 200, 205), rng))
    elif scene == "farmland":
        a = float(rng.uniform(0, 180))
        stripes = Image.new("RGB", (2 * CANVAS, 2 * CANVAS))
        sd = ImageDraw.Draw(stripes)
        for i in range(0, 2 * CANVAS, 8):
            sd.rectangle([i, 0, i + 8, 2 * CANVAS], fill=_jitter(((180, 170, 60), (70, 140, 50))[i // 8 % 2], rng))
        img = stripes.rotate(a).crop((CANVAS // 2, CANVAS // 2, 3 * CANVAS // 2, 3 * CANVAS // 2))
    elif scene in ("river", "highway"):
        y0, y1 = rng.uniform(0, CANVAS, 2)
        pts = [(x, y0 + (y1 - y0) * x / CANVAS + (6 * math.sin(x / 8) if scene == "river" else 0))
               for x in range(0, CANVAS + 4, 4)]
        d.line(pts, fill=(_jitter((40, 80, 160), rng) if scene == "river" else _jitter((70, 70, 75), rng)),
               width=int(rng.integers(5, 9)))
    elif scene == "lake":
        cx, cy = rng.uniform(20, 44, 2)
        rx, ry = rng.uniform(10, 18, 2)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_jitter((30, 70, 150), rng))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def draw_counting(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """CLEVR-count-like: how many objects (one to ten) are in the picture."""
    bg = _rand_colour(rng)
    img = Image.new("RGB", (CANVAS, CANVAS), bg)
    d = ImageDraw.Draw(img)
    placed: list[tuple[float, float]] = []
    r = 4.5
    while len(placed) < label + 1:
        x, y = rng.uniform(r + 1, CANVAS - r - 1, 2)
        if all((x - a) ** 2 + (y - b) ** 2 > (2.3 * r) ** 2 for a, b in placed):
            placed.append((float(x), float(y)))
    shape = SHAPES[int(rng.integers(3))]
    colour = _rand_colour(rng, avoid=bg)
    for x, y in placed:
        _draw_shape(d, shape, x, y, r, colour, outline_only=False)
    return img


ARROWS = ("up", "down", "left", "right", "up left", "up right", "down left", "down right")


def draw_arrow(rng: np.random.Generator, label: int, split: str) -> Image.Image:
    """Which way an arrow points (eight directions)."""
    bg = _rand_colour(rng)
    img = Image.new("RGB", (CANVAS, CANVAS), bg)
    d = ImageDraw.Draw(img)
    dx = {"left": -1, "right": 1}
    dy = {"up": -1, "down": 1}
    words = ARROWS[label].split()
    vx = sum(dx.get(w, 0) for w in words)
    vy = sum(dy.get(w, 0) for w in words)
    n = math.hypot(vx, vy)
    vx, vy = vx / n, vy / n
    L = float(rng.uniform(16, 26))
    cx, cy = CANVAS / 2 + rng.normal(0, 4), CANVAS / 2 + rng.normal(0, 4)
    colour = _rand_colour(rng, avoid=bg)
    tip = (cx + vx * L, cy + vy * L)
    d.line([(cx - vx * L, cy - vy * L), tip], fill=colour, width=int(rng.integers(3, 6)))
    px, py = -vy, vx
    d.polygon([(tip[0] + vx * 6, tip[1] + vy * 6), (tip[0] + px * 8 - vx * 4, tip[1] + py * 8 - vy * 4),
               (tip[0] - px * 8 - vx * 4, tip[1] - py * 8 - vy * 4)], fill=colour)
    return img


TASKS: dict[str, TaskSpec] = {
    "handwritten": TaskSpec(
        "handwritten", tuple(NUMBER_WORDS), draw_handwritten,
        ('a photo of the number: "{c}".', "a handwritten digit {c}."),
        ("a handwritten digit {c}.", "the number {c}, written by hand.", 'a photo of the number: "{c}".',
         "white handwriting of the digit {c} on black.", "a scanned digit {c}.")),
    "street_digits": TaskSpec(
        "street_digits", tuple(NUMBER_WORDS), draw_street_digit,
        ('a photo of the number: "{c}".', "a street sign of the number {c}."),
        ('a photo of the number: "{c}".', "a house number {c}.", "a printed digit {c} on a {colour} wall.",
         "a street sign of the number {c}.", "the digit {c} between other digits.")),
    "letters": TaskSpec(
        "letters", LETTERS, draw_letter,
        ('a photo of the letter "{c}".', "the capital letter {c}."),
        ('a photo of the letter "{c}".', "the capital letter {c}.", "a printed letter {c} in {colour}.",
         "the character {c} in some font.")),
    "shapes": TaskSpec(
        "shapes", SHAPES, draw_shape,
        ("a photo of a {c}.", "a {c} shape."),
        ("a {colour} {c}.", "a photo of a {c}.", "a {c} shape.", "a drawing of a {c}.", "a simple {c}.")),
    "signs": TaskSpec(
        "signs", SIGNS, draw_sign,
        ('a zoomed in photo of a "{c}" traffic sign.', "a traffic sign: {c}."),
        ('a zoomed in photo of a "{c}" traffic sign.', "a traffic sign: {c}.", "a road sign meaning {c}.",
         "the {c} sign.")),
    "textures": TaskSpec(
        "textures", TEXTURES, draw_texture,
        ("a photo of a {c} texture.", "a {c} pattern."),
        ("a photo of a {c} texture.", "a {c} pattern.", "a {c} surface in {colour}.", "something {c}.")),
    "colours": TaskSpec(
        "colours", COLOUR_NAMES, draw_colour,
        ("a photo of something {c}.", "the colour {c}."),
        ("a photo of something {c}.", "the colour {c}.", "a {c} object.", "mostly {c}.")),
    "scenes": TaskSpec(
        "scenes", SCENES, draw_scene,
        ("a satellite photo of {c}.", "an aerial view of {c}."),
        ("a satellite photo of {c}.", "an aerial view of {c}.", "{c} seen from above.", "a centered satellite "
         "photo of {c}.")),
    "counting": TaskSpec(
        "counting", tuple(NUMBER_WORDS[1:] + ["ten"]), draw_counting,
        ("a photo of {c} objects.", "there are {c} shapes."),
        ("a photo of {c} objects.", "there are {c} shapes.", "{c} {colour} things.", "a group of {c} objects.")),
    "arrows": TaskSpec(
        "arrows", ARROWS, draw_arrow,
        ("an arrow pointing {c}.", "a photo of an arrow that points {c}."),
        ("an arrow pointing {c}.", "a {colour} arrow pointing {c}.", "the direction {c}.", "go {c}.")),
}


def render(task: str, n: int, seed: int, split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of ``task`` (balanced labels): uint8 images (n, 3, S, S) and int64 labels."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}: use some of {', '.join(TASKS)}")
    draw = TASKS[task].draw
    return _render(task, n, seed, image_size, lambda rng, y: draw(rng, y, split))


def render_in_context(task: str, n: int, seed: int, image_size: int, scale: tuple[float, float],
                      backgrounds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pre-training examples of ``task`` seen in context: each drawing shrunk to a random ``scale`` of the
    canvas and pasted at a random place on a blurred drawing of a random task in ``backgrounds``, the way a web photo
    shows a concept among other things. No such image is in any task's train or test split (full-frame drawings)."""
    draw = TASKS[task].draw

    def in_context(rng: np.random.Generator, y: int) -> Image.Image:
        back_spec = TASKS[backgrounds[int(rng.integers(len(backgrounds)))]]
        back = back_spec.draw(rng, int(rng.integers(len(back_spec.classnames))), "pretrain").convert("RGB")
        back = back.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))
        size = int(CANVAS * rng.uniform(*scale))
        fg = draw(rng, y, "pretrain").convert("RGB").resize((size, size), Image.LANCZOS)
        back.paste(fg, (int(rng.integers(0, CANVAS - size + 1)), int(rng.integers(0, CANVAS - size + 1))))
        return back

    return _render(task, n, seed, image_size, in_context)


def _render(task: str, n: int, seed: int, image_size: int,
            draw: Callable[[np.random.Generator, int], Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """Balanced, shuffled labels of ``task`` and one ``draw(rng, label)`` each, resized to ``image_size``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(TASKS[task].classnames)
    rng.shuffle(labels)
    out = np.empty((n, 3, image_size, image_size), np.uint8)
    for i, y in enumerate(labels):
        img = draw(rng, int(y)).convert("RGB").resize((image_size, image_size), Image.LANCZOS)
        out[i] = np.asarray(img).transpose(2, 0, 1)
    return out, labels.astype(np.int64)


def caption(task: str, label: int, rng: np.random.Generator) -> str:
    """A pre-training caption of an example (Sec. 4.1's pre-trained CLIP stands in for web captions)."""
    spec = TASKS[task]
    template = spec.captions[int(rng.integers(len(spec.captions)))]
    return template.format(c=spec.classnames[label], colour=COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))])
