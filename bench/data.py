"""Which photos the benchmark codes, and their palette-token thumbnails.

The default set is the held-out validation split the default model is never
trained on: BSDS500 val (100 JPEGs) plus wikipedia-photos 045..049. Measuring
on training photos would flatter the model against codecs that learned nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from igpt_codec.api import tokenize
from igpt_codec.core.images import LoadedImage, load_image
from igpt_codec.pipelines.stream import TokenImage
from igpt_codec.runtime.bundle import Bundle

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
HELD_OUT_WIKIPEDIA = tuple(f"{i:03d}.png" for i in range(45, 50))


@dataclass(frozen=True)
class Thumbnail:
    """One benchmark image: its label and file, the decoded input, and its palette tokens."""

    name: str
    path: Path
    loaded: LoadedImage
    tokens: TokenImage


def shared_data_dir() -> Path:
    """The project's shared data folder; $IGPT_SHARED_DATA overrides it (as in the tests)."""
    override = os.environ.get("IGPT_SHARED_DATA")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def validation_images(data_dir: Path | None = None) -> list[Path]:
    """The held-out validation photos, BSDS500 val first, each group sorted by name."""
    train = (data_dir or shared_data_dir()) / "train"
    bsds = sorted((train / "bsds500" / "val").glob("*.jpg"))
    wiki = [train / "wikipedia-photos" / name for name in HELD_OUT_WIKIPEDIA]
    paths = bsds + [p for p in wiki if p.is_file()]
    if not paths:
        raise FileNotFoundError(f"no validation photos under {train}")
    return paths


def images_in(directory: Path) -> list[Path]:
    """Image files directly inside `directory`, sorted by name."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    paths = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise FileNotFoundError(f"no images in {directory}")
    return paths


def select_images(directory: Path | None, limit: int | None) -> list[Path]:
    """The images a run uses: a directory's or the validation set, the first `limit`."""
    paths = validation_images() if directory is None else images_in(directory)
    return paths if limit is None else paths[:limit]


def label(path: Path) -> str:
    """parent/name, enough to tell bsds500 val/101085.jpg from a wikipedia photo."""
    return f"{path.parent.name}/{path.name}"


def load_thumbnails(paths: list[Path], bundle: Bundle, size: int) -> list[Thumbnail]:
    """Decode and tokenize every image once; every codec then sees the same tokens."""
    loaded = [load_image(path) for path in paths]
    tokens = tokenize(loaded, bundle, size)
    return [
        Thumbnail(label(path), path, image, token_image)
        for path, image, token_image in zip(paths, loaded, tokens, strict=True)
    ]
