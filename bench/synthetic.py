"""The project's own synthetic test set: images that are not photos (issue 28).

Rendered text at several sizes and fonts, matplotlib charts, UI-like screenshots drawn
with Pillow, gradients, line art, pixel art and dithered images: what people compress
besides photos, and where a model trained on photos is weakest. Every image is drawn
by this script from fixed seeds (nothing downloaded, nothing committed), at most
256 x 256 so a test can code the whole set with the model in CI time.

Fonts: Pillow's built-in font always; DejaVu/Liberation TTFs when present under
/usr/share/fonts (else Pillow's scalable default stands in, and `font_notes` says so).
Charts need matplotlib (the bench extra); without it they are left out. So the set is
reproducible on one machine, and the same up to font files across machines.

    python -m bench.synthetic --out /tmp/synthetic   # writes the PNGs to look at
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDE = 256
FONT_DIRS = (Path("/usr/share/fonts"),)
WORDS = tuple(
    [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "codecs",
        "compress",
        "pixels",
        "into",
        "bits",
        "lossless",
        "image",
        "model",
        "token",
        "palette",
        "window",
        "entropy",
        "range",
        "coder",
        "stream",
        "record",
        "header",
        "segment",
        "chain",
        "band",
        "context",
        "mixer",
        "weight",
        "count",
        "table",
        "byte",
    ]
)


def find_font(*names: str) -> Path | None:
    """The first TTF called one of `names` under FONT_DIRS, or None."""
    for root in FONT_DIRS:
        for name in names:
            hits = sorted(root.rglob(name)) if root.is_dir() else []
            if hits:
                return hits[0]
    return None


def _font(size: int, *names: str) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    path = find_font(*names) if names else None
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size) if names else ImageFont.load_default()


def font_notes() -> list[str]:
    """Which font files the text images used here (for the benchmark's JSON)."""
    notes = []
    for names in (("DejaVuSans.ttf",), ("LiberationSerif-Regular.ttf", "DejaVuSerif.ttf")):
        path = find_font(*names)
        notes.append(str(path) if path else f"{names[0]}: absent, Pillow's default font used")
    return notes


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def text_page(seed: int, size: int, names: tuple[str, ...], dark: bool = False) -> np.ndarray:
    """A page of wrapped text: black on white (or light on dark, like a terminal)."""
    rng = np.random.default_rng(seed)
    background, ink = ((30, 30, 36), (220, 220, 200)) if dark else ((255, 255, 255), (0, 0, 0))
    image = Image.new("RGB", (SIDE, SIDE), background)
    draw = ImageDraw.Draw(image)
    font = _font(size, *names)
    y = 4
    while y < SIDE - size:
        draw.text((4, y), _sentence(rng, 12), fill=ink, font=font)
        y += int(size * 1.35) + 1
    return np.asarray(image)


def chart(seed: int, bars: bool) -> np.ndarray | None:
    """A matplotlib line or bar chart; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(figsize=(2.56, 2.56), dpi=100)
    if bars:
        axes.bar(list("ABCDEF"), rng.integers(2, 20, 6), color=["#1f77b4", "#ff7f0e"] * 3)
        axes.set_title("Sales by region", fontsize=9)
    else:
        x = np.linspace(0, 10, 200)
        for k in range(3):
            axes.plot(x, np.sin(x * (k + 1) / 3) + rng.normal(0, 0.05, x.size), label=f"s{k}")
        axes.legend(fontsize=7)
        axes.grid(True)
    axes.tick_params(labelsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    with Image.open(buffer) as opened:
        return np.asarray(opened.convert("RGB").resize((SIDE, SIDE), Image.Resampling.NEAREST))


def ui_screenshot(seed: int) -> np.ndarray:
    """A window: title bar, toolbar buttons, a list with a selection, a text field."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (SIDE, SIDE), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle((0, 0, SIDE, 22), fill=(45, 90, 160))
    draw.text((8, 5), "Settings - igpt", fill=(255, 255, 255), font=font)
    for i, colour in enumerate(((230, 80, 70), (240, 190, 60), (90, 190, 90))):
        draw.ellipse((SIDE - 60 + 18 * i, 6, SIDE - 48 + 18 * i, 18), fill=colour)
    for i in range(5):
        x = 6 + 48 * i
        draw.rounded_rectangle((x, 28, x + 42, 46), 4, fill=(250, 250, 250), outline=(160,) * 3)
        draw.text((x + 6, 32), WORDS[int(rng.integers(len(WORDS)))][:6], fill=0, font=font)
    draw.rectangle((6, 54, 150, 250), fill=(255, 255, 255), outline=(170,) * 3)
    for row in range(15):
        y = 58 + 13 * row
        if row == 4:
            draw.rectangle((7, y - 1, 149, y + 11), fill=(51, 122, 230))
        ink = (255, 255, 255) if row == 4 else (20, 20, 20)
        draw.text((12, y), _sentence(rng, 2)[:20], fill=ink, font=font)
    draw.rectangle((158, 54, 250, 72), fill=(255, 255, 255), outline=(120,) * 3)
    draw.text((162, 58), "search...", fill=(140,) * 3, font=font)
    for i in range(6):
        y = 82 + 26 * i
        on = bool(rng.integers(2))
        draw.rounded_rectangle((158, y, 184, y + 14), 7, fill=(80, 180, 90) if on else (190,) * 3)
        draw.ellipse((172 if on else 160, y + 2, 182 if on else 170, y + 12), fill=(255,) * 3)
        draw.text((190, y + 2), WORDS[i][:8], fill=(40,) * 3, font=font)
    return np.asarray(image)


def gradient(seed: int) -> np.ndarray:
    """A smooth two-way colour slope (the 'smooth slope' of issue 28)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) / (SIDE - 1)
    shift = np.random.default_rng(seed).uniform(0, 0.2)
    rgb = np.stack([x, y, 1 - (x + y) / 2 + shift], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def line_art(seed: int) -> np.ndarray:
    """Black strokes on white: lines, circles, polygons."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        kind = int(rng.integers(3))
        a, b = rng.integers(0, SIDE, 2), rng.integers(0, SIDE, 2)
        box = (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
        width = int(rng.integers(1, 4))
        if kind == 0:
            draw.line((*a, *b), fill=(0, 0, 0), width=width)
        elif kind == 1:
            draw.ellipse(box, outline=(0, 0, 0), width=width)
        else:
            draw.polygon([tuple(rng.integers(0, SIDE, 2)) for _ in range(4)], outline=(0, 0, 0))
    return np.asarray(image)


def pixel_art(seed: int) -> np.ndarray:
    """A 16 x 16 sprite of 6 colours, mirrored, scaled x4 and tiled, on a plain sky."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (6, 3)).astype(np.uint8)
    half = rng.integers(0, 6, (16, 8))
    sprite = colours[np.concatenate([half, half[:, ::-1]], axis=1)]
    big = sprite.repeat(4, axis=0).repeat(4, axis=1)
    out = np.full((SIDE, SIDE, 3), (120, 180, 240), dtype=np.uint8)
    for y in range(0, SIDE - 72, 80):
        for x in range(0, SIDE - 72, 80):
            out[y + 8 : y + 72, x + 8 : x + 72] = big
    return out


def dithered(seed: int) -> np.ndarray:
    """A smooth random colour field, Floyd-Steinberg dithered to 16 colours."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
    smooth = Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    quantized = smooth.quantize(16, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(quantized.convert("RGB"))


def stripes_and_checks(seed: int) -> np.ndarray:
    """Stripes and checkerboards of a few colours (the 'crosses' and 'stripes' of issue
    28): exact repeats that LZ77 finds and a 32 x 32 window cannot see."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (4, 3)).astype(np.uint8)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    index = np.where(y < SIDE // 2, (y // 6) % 2, 2 + ((x // 10 + y // 10) % 2))
    return colours[index]


SyntheticImage = tuple[str, Callable[[], np.ndarray | None]]
MAKERS: tuple[SyntheticImage, ...] = (
    ("text_builtin", lambda: text_page(1, 11, ())),
    ("text_sans_12", lambda: text_page(2, 12, ("DejaVuSans.ttf",))),
    ("text_serif_20", lambda: text_page(3, 20, ("LiberationSerif-Regular.ttf", "DejaVuSerif.ttf"))),
    ("text_mono_dark", lambda: text_page(4, 10, ("DejaVuSansMono.ttf",), dark=True)),
    ("chart_lines", lambda: chart(5, bars=False)),
    ("chart_bars", lambda: chart(6, bars=True)),
    ("ui_screenshot", lambda: ui_screenshot(7)),
    ("gradient", lambda: gradient(8)),
    ("line_art", lambda: line_art(9)),
    ("pixel_art", lambda: pixel_art(10)),
    ("dithered", lambda: dithered(11)),
    ("stripes_checks", lambda: stripes_and_checks(12)),
)


def synthetic_images(names: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB [H, W, 3]) of the set, in a fixed order; charts only with
    matplotlib. `names` picks a subset."""
    out = []
    for name, make in MAKERS:
        if names is not None and name not in names:
            continue
        rgb = make()
        if rgb is not None:
            out.append((name, np.ascontiguousarray(rgb, dtype=np.uint8)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic test set as PNG files.")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rgb in synthetic_images():
        Image.fromarray(rgb).save(args.out / f"{name}.png")
        print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
