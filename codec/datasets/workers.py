"""The Ray actors' work, and the driver's listing: no Ray here (it calls into these).

`CompressWorker` turns one batch of inputs into one shard and returns one row per input:
its index entry, or its key and why it was skipped. An input is read as a regular file
of at most MAX_INPUT_BYTES (a link to /dev/zero, a FIFO or a device is skipped with its
reason, never read), and every failure an input can cause (a file error, an image the
codec refuses, a key the index cannot hold, memory) is a skipped row, never an exception:
an exception would fail the actor's task, and Ray would retry the batch or stop the job
with its own advice instead of the input's cause.

`DecompressWorker` decodes whole shards; a shard that does not match its index (a file
that is not a shard, another dataset's shard) is an error row naming the cause, which
the driver reports as the job's one-line error.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from igpt_codec.datasets.files import make_dirs_under, read_regular, write_atomic
from igpt_codec.datasets.index import MAX_KEY_BYTES, IndexEntry
from igpt_codec.datasets.shards import encode_shard, write_shard
from igpt_codec.format.errors import CodecError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
"""Files a directory source takes as images (case-insensitive); others are not listed."""
MAX_INPUT_BYTES = 1 << 28
"""An input image file's byte limit (256 MiB): far above any photo, and what one actor
may hold in memory for one input before Pillow's own pixel limit applies."""
ENTRY_FIELDS = tuple(IndexEntry.__dataclass_fields__)
INT_FIELDS = frozenset({"record", "offset", "length", "prev_crc", "side", "width", "height"})


class DatasetError(CodecError):
    """A dataset job that cannot run or finish: bad arguments, an input error in fail
    mode, a conflicting key, or Ray's own failure (one line)."""


def _key_problem(key: str) -> str:
    """Why the index cannot hold `key` ("" if it can)."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 (the index is UTF-8 JSON)"
    return (
        f"its key is {size} bytes, over the limit {MAX_KEY_BYTES}" if size > MAX_KEY_BYTES else ""
    )


def read_input(key: str, value: Any) -> bytes:
    """An input's encoded bytes: a path listed by the driver (a regular file, links
    followed, at most MAX_INPUT_BYTES) or bytes from a Parquet column."""
    if value is None:
        raise CodecError("no image bytes (null)")
    if isinstance(value, str):
        return read_regular(value, "image", MAX_INPUT_BYTES, follow_links=True)
    data = bytes(value)
    if len(data) > MAX_INPUT_BYTES:
        raise CodecError(f"{len(data)} bytes exceed the input limit {MAX_INPUT_BYTES}")
    return data


class CompressWorker:
    """One actor: one bundle, one onnxruntime session, one shard per batch."""

    def __init__(
        self,
        staging: str,
        model: str | None,
        size: int,
        threads: int,
        on_error: str,
        key_column: str,
        data_column: str,
    ) -> None:
        from igpt_codec.api import resolve_bundle
        from igpt_codec.pipelines.stream import check_side
        from igpt_codec.runtime.exact_runner import ExactTokenModel
        from igpt_codec.runtime.float_runner import TokenModel

        self.staging = staging
        self.bundle = resolve_bundle(model)
        check_side(size, self.bundle)
        self.size = size
        self.threads = threads
        self.on_error = on_error
        self.key_column = key_column
        self.data_column = data_column
        # Open the session now (cached per graph and thread count for every later batch),
        # so a model that cannot load fails the actor before any input is consumed.
        (ExactTokenModel if self.bundle.exact else TokenModel)(self.bundle, threads=threads)

    def _load(self, key: str, value: Any) -> tuple[Any, str]:
        """(TokenImage, "") or (None, one-line reason)."""
        from igpt_codec.core.images import load_image
        from igpt_codec.core.palette import image_to_tokens
        from igpt_codec.pipelines.stream import TokenImage

        problem = _key_problem(key)
        if problem:
            return None, problem
        try:
            loaded = load_image(read_input(key, value), name=key)
            tokens = image_to_tokens(loaded.rgb, self.bundle.palette, self.size)
        except (CodecError, OSError, MemoryError) as exc:
            if isinstance(exc, MemoryError):
                reason = "out of memory decoding it"
            elif isinstance(exc, CodecError):
                reason = str(exc)
            else:
                reason = f"{exc.strerror or exc}"
            for prefix in (f"{key}: ", f"{value}: " if isinstance(value, str) else None):
                if prefix and reason.startswith(prefix):
                    reason = reason[len(prefix) :]
            return None, " ".join(reason.split())[:500]
        image = TokenImage(tokens, self.size, loaded.width, loaded.height, loaded.mode)
        return image, ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        keys = [str(key) for key in batch[self.key_column]]
        good, errors = [], []
        for key, value in zip(keys, batch[self.data_column], strict=True):
            image, reason = self._load(key, value)
            if image is None:
                errors.append((key, reason))
            else:
                good.append((key, image))
        entries: list[IndexEntry] = []
        if good and not (errors and self.on_error == "fail"):
            shard = encode_shard(good, self.bundle, threads=self.threads)
            write_shard(self.staging, shard)
            entries = shard.entries
        return _rows(entries, errors)


class DecompressWorker:
    """One actor: decodes whole shards (batched records) into one file per image."""

    def __init__(
        self, source: str, staging: str, model: str | None, threads: int, output: str
    ) -> None:
        self.source = source
        self.staging = Path(staging)
        self.model = model
        self.threads = threads
        self.output = output
        self._bundles: dict[str, Any] = {}

    def _bundle(self, fingerprint: str) -> Any:
        from igpt_codec.runtime.search import find_bundle

        if fingerprint not in self._bundles:
            self._bundles[fingerprint] = find_bundle(bytes.fromhex(fingerprint), self.model)
        return self._bundles[fingerprint]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from igpt_codec.core.palette import tokens_to_image
        from igpt_codec.datasets.shards import decode_shard

        keys, outputs, tokens, errors = [], [], [], []
        for shard, text in zip(batch["shard"], batch["entries"], strict=True):
            entries = [IndexEntry.from_dict(json.loads(line)) for line in str(text).split("\n")]
            try:
                bundle = self._bundle(entries[0].fingerprint)
                pairs = decode_shard(self.source, entries, bundle, threads=self.threads)
            except (CodecError, MemoryError) as exc:  # the cause, not Ray's retry advice
                reason = str(exc) if isinstance(exc, CodecError) else "out of memory"
                keys.append(str(shard))
                outputs.append("")
                tokens.append(0)
                errors.append(" ".join(reason.split())[:500] or type(exc).__name__)
                continue
            for entry, image in pairs:
                relative = output_name(entry.key, self.output)
                buffer = io.BytesIO()
                if self.output == "png":
                    tokens_to_image(image.tokens, bundle.palette, image.side).save(buffer, "PNG")
                else:
                    np.save(buffer, image.tokens.astype(np.uint16).reshape(image.side, image.side))
                target = self.staging / relative
                make_dirs_under(self.staging, Path(relative).parent)
                write_atomic(target, buffer.getvalue())
                keys.append(entry.key)
                outputs.append(relative)
                tokens.append(int(image.side) ** 2)
                errors.append("")
        return {"key": keys, "output": outputs, "tokens": tokens, "error": errors}


def _rows(entries: list[IndexEntry], errors: list[tuple[str, str]]) -> dict[str, list]:
    """Columns with one row per input image; error rows carry -1 and "" in entry fields,
    so every batch has the same Arrow schema."""
    columns: dict[str, list] = {name: [] for name in (*ENTRY_FIELDS, "error")}
    for entry in entries:
        for name in ENTRY_FIELDS:
            columns[name].append(getattr(entry, name))
        columns["error"].append("")
    for key, reason in errors:
        for name in ENTRY_FIELDS:
            columns[name].append(key if name == "key" else -1 if name in INT_FIELDS else "")
        columns["error"].append(reason or "unreadable")
    return columns


def output_name(key: str, output: str) -> str:
    """The relative output path of a key: its directories kept, its suffix replaced.

    Refuses keys that would leave the output directory (absolute, '..', empty parts).
    """
    parts = key.replace("\\", "/").split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise DatasetError(f"key {key!r} cannot name an output file (absolute or '..')")
    path = Path(*parts)
    return path.with_suffix(f".{output}").as_posix()


def list_images(root: Path) -> list[tuple[str, str]]:
    """(key, path) of every image file under root, sorted by key; hidden entries skipped.

    The key is the path relative to root with '/' separators, the same on every OS.
    """
    found = []
    visited: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in visited:  # a symlinked directory cycle
            subdirs[:] = []
            continue
        visited.add((status.st_dev, status.st_ino))
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(directory) / name
            found.append((path.relative_to(root).as_posix(), str(path.absolute())))
    found.sort()
    return found
