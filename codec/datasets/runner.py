"""The Ray Data runner: an actor pool codes batches into shards, the driver assembles the index.

Design, in the order a job runs:

1. Inputs become rows of (key, bytes or path). A directory tree is listed on the driver
   (sorted, image suffixes only) and each worker reads its files itself, so a file that
   cannot be read is one reported key, not a failed read task; a Parquet table is read
   by Ray Data (`read_parquet`, an id column and a bytes column), materialized before
   the actor pool starts (its listing task needs a CPU the pool would otherwise hold).
2. `map_batches` with a fixed actor pool (`ActorPoolStrategy(size=actors)`, 1 CPU
   each): every actor loads the bundle once and holds one onnxruntime session (1
   intra-op thread by default: Ray gives each actor one core). One batch of up to
   `shard_images` rows becomes one shard, coded in batch order (the exact profile makes
   the bytes independent of how work is cut) and named by a hash of its keys, side and
   model (`igpt_codec.datasets.shards.shard_name`), written through a temporary file and a rename.
3. Retries: actors run with `max_restarts` and `max_task_retries`, so a killed actor is
   restarted and the batch it held is given again. The retry rewrites the same shard
   name with the same bytes; nothing is appended anywhere. The index is built by the
   driver from the rows the workers return, keyed by image key (a second identical row
   is dropped, a conflicting one is an error), never by listing shard files; files no
   entry references and temporary files of killed workers are removed at the end.
4. Everything is written into a hidden staging directory beside OUT_DIR, renamed into
   place only when the index is complete: a failed or interrupted job leaves no
   half-written dataset behind.

Ray is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from igpt_codec.datasets.shards import (
    DATASET_FORMAT,
    INDEX_JSONL,
    INDEX_PARQUET,
    MANIFEST,
    SHARDS_DIR,
    IndexEntry,
    encode_shard,
    load_index,
    write_atomic,
    write_index_jsonl,
    write_shard,
)
from igpt_codec.format.errors import CodecError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
"""Files a directory source takes as images (case-insensitive); others are not listed."""
ON_ERROR = ("skip", "fail")
OUTPUTS = ("png", "npy")
DEFAULT_SHARD_IMAGES = 256
"""Images per shard: ~0.4 MB at 32x32 and ~70 s of one core, so a retried shard costs
little and a million images make ~4,000 files."""
ENTRY_FIELDS = tuple(IndexEntry.__dataclass_fields__)
_INT_FIELDS = frozenset({"record", "offset", "length", "prev_crc", "side", "width", "height"})


class DatasetError(CodecError):
    """A dataset job that cannot run or finish: bad arguments, an input error in fail
    mode, a conflicting key, or Ray's own failure (one line)."""


@dataclass
class CompressReport:
    """What a compression job wrote; `skipped` lists (key, reason) of unreadable inputs."""

    out_dir: Path
    images: int
    tokens: int
    shards: int
    stream_bytes: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bits_per_token(self) -> float:
        return 8 * self.stream_bytes / self.tokens if self.tokens else 0.0


@dataclass
class DecompressReport:
    """What a decompression job wrote: one file per image under `out_dir`."""

    out_dir: Path
    images: int
    tokens: int
    shards: int
    seconds: float


# --- workers (run inside Ray actors) ----------------------------------------------------------


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

        try:
            if value is None:
                raise CodecError("no image bytes (null)")
            if isinstance(value, str):  # a path listed by the driver
                with open(value, "rb") as handle:
                    value = handle.read()
            loaded = load_image(bytes(value), name=key)
            tokens = image_to_tokens(loaded.rgb, self.bundle.palette, self.size)
        except (CodecError, OSError) as exc:
            reason = str(exc) if isinstance(exc, CodecError) else f"{exc.strerror or exc}"
            if reason.startswith(f"{key}: "):
                reason = reason[len(key) + 2 :]
            return None, " ".join(reason.split())
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

        keys, outputs, tokens = [], [], []
        for text in batch["entries"]:
            entries = [IndexEntry.from_dict(json.loads(line)) for line in str(text).split("\n")]
            bundle = self._bundle(entries[0].fingerprint)
            for entry, image in decode_shard(self.source, entries, bundle, threads=self.threads):
                relative = output_name(entry.key, self.output)
                buffer = io.BytesIO()
                if self.output == "png":
                    tokens_to_image(image.tokens, bundle.palette, image.side).save(buffer, "PNG")
                else:
                    np.save(buffer, image.tokens.astype(np.uint16).reshape(image.side, image.side))
                target = self.staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, buffer.getvalue())
                keys.append(entry.key)
                outputs.append(relative)
                tokens.append(int(image.side) ** 2)
        return {"key": keys, "output": outputs, "tokens": tokens}


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
            columns[name].append(key if name == "key" else -1 if name in _INT_FIELDS else "")
        columns["error"].append(reason or "unreadable")
    return columns


# --- driver ------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, quiet: bool) -> Iterator[Any]:
    """Ray as the caller wants it: the running one (already initialised in this process),
    an existing cluster (`address`, e.g. "auto" or "ray://head:10001"), or a local one
    started here with `num_cpus` CPUs and shut down at the end."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise DatasetError(
            "dataset commands need the scale extra: pip install 'igpt-codec[scale]'"
        ) from exc
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if quiet:
            kwargs.update(log_to_driver=False, logging_level="ERROR")
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                # "local": always a new local instance, never one a stale
                # /tmp/ray/ray_current_cluster (left by `ray start`) points at.
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from Ray
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise DatasetError(f"cannot start {where}: {_first_line(exc)}") from exc
        started = True
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    if quiet:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = not quiet
    try:
        with warnings.catch_warnings():
            if quiet:  # Ray Data's advice (pool larger than its input, ...) is progress talk
                warnings.filterwarnings("ignore", module=r"ray\..*")
            yield ray
    finally:
        context.enable_progress_bars = bars
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if started:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _ray_failure(exc: BaseException) -> DatasetError:
    """Ray's exception (a wrapped worker traceback) as one line: its innermost cause.

    Ray wraps a worker's exception in RayTaskError / UserCodeException and chains the
    original through `__cause__` (and `.cause`); a CodecError found there keeps its own
    message, anything else gives its last line."""
    cause: BaseException = exc
    seen = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = cause.__cause__ or getattr(cause, "cause", None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    if isinstance(cause, CodecError) and not isinstance(cause, DatasetError):
        return DatasetError(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return DatasetError(f"the Ray job failed: {lines[-1][:300] if lines else type(cause).__name__}")


class _Staging:
    """A hidden directory beside the target, renamed onto it at the end, removed on failure."""

    def __init__(self, target: Path, force: bool) -> None:
        self.target = target
        self.force = force
        if target.exists() or target.is_symlink():
            if not target.is_dir():
                raise DatasetError(f"{target} exists and is not a directory")
            if any(target.iterdir()) and not force:
                raise DatasetError(f"{target} exists and is not empty (use -f to replace it)")
        if not target.parent.is_dir():
            raise DatasetError(f"{target}: directory {target.parent} does not exist")
        self.path = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"

    def __enter__(self) -> Path:
        self.path.mkdir()
        return self.path

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(self.target, old)
        try:
            os.rename(self.path, self.target)
        except BaseException:
            if old is not None:
                os.rename(old, self.target)
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _remote_args(function: Any, num_cpus: float) -> dict[str, Any]:
    """num_cpus for a Ray Data read, as a named argument where this Ray takes one (2.5x)
    and through ray_remote_args before that."""
    if "num_cpus" in inspect.signature(function).parameters:
        return {"num_cpus": num_cpus}
    return {"ray_remote_args": {"num_cpus": num_cpus}}


def _retry_args(retries: int | None) -> dict[str, Any]:
    """Actor restarts and task retries. None keeps Ray Data's own default for actor pools
    (unlimited restarts and retries: a killed actor is replaced and its batch given
    again); a number bounds both, so a crash-looping actor fails the job. Ray 2.60
    deprecates passing them as bare keywords, hence the filter."""
    if retries is None:
        return {}
    if retries < 0:
        raise DatasetError(f"retries must be >= 0, got {retries}")
    return {"max_restarts": retries, "max_task_retries": retries}


def _actor_map(dataset: Any, worker: type, actors: int, retries: int | None, **kwargs: Any) -> Any:
    """`map_batches` over a fixed pool of `actors` actors, 1 CPU each, numpy batches."""
    import ray.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return dataset.map_batches(
            worker,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            **kwargs,
            **_retry_args(retries),
        )


def compress_dataset(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    size: int = 32,
    shard_images: int = DEFAULT_SHARD_IMAGES,
    actors: int = 2,
    threads: int = 1,
    model: str | os.PathLike[str] | None = None,
    on_error: str = "skip",
    address: str | None = None,
    num_cpus: int | None = None,
    id_column: str | None = None,
    bytes_column: str = "image",
    retries: int | None = None,
    force: bool = False,
    quiet: bool = False,
) -> CompressReport:
    """Compress a directory tree of images, or a Parquet table, into OUT_DIR (shards + index).

    `source`: a directory (every image file below it; key = its path relative to the
    directory), or with `id_column` a Parquet file or directory read by Ray Data (key =
    the id column as text, image file bytes in `bytes_column`). `on_error`: "skip"
    reports each unreadable input with its key (CompressReport.skipped, dataset.json)
    and goes on; "fail" stops the job at the first one, naming it, and writes nothing.
    `retries`: see `_retry_args`. `address`: an existing Ray cluster; otherwise a local
    Ray with `num_cpus` CPUs (default: `actors`) is started and stopped here, unless this
    process already runs Ray. Raises DatasetError (and CodecError subclasses such as BundleError).
    """
    if on_error not in ON_ERROR:
        raise DatasetError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    for name, value in (("actors", actors), ("threads", threads), ("shard_images", shard_images)):
        if not isinstance(value, int) or value < 1:
            raise DatasetError(f"{name} must be a positive integer, got {value!r}")
    from igpt_codec.api import resolve_bundle
    from igpt_codec.pipelines.stream import check_side

    model_arg = None if model is None else str(Path(model).absolute())
    bundle = resolve_bundle(model_arg)  # a bad model fails here, before Ray starts
    try:
        check_side(size, bundle)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    source = Path(source)
    target = Path(out_dir).absolute()
    if id_column is None:
        if not source.is_dir():
            raise DatasetError(f"{source}: not a directory (give --id-column for a Parquet table)")
        items = list_images(source)
        if not items:
            raise DatasetError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif not source.exists():
        raise DatasetError(f"{source}: no such file or directory")
    start = time.perf_counter()
    with _Staging(target, force) as staging, ray_session(address, num_cpus or actors, quiet) as ray:
        if id_column is None:
            # Blocks of about one shard each: a batch never spans blocks, so smaller blocks
            # would cut shards short.
            dataset = ray.data.from_items(
                [{"key": key, "path": path} for key, path in items],
                override_num_blocks=max(1, -(-len(items) // shard_images)),
            )
            key_column, data_column = "key", "path"
        else:
            read = ray.data.read_parquet
            # Read whole before the pool starts: the read's file listing needs a CPU,
            # and a fixed pool that holds every CPU would wait on it forever. The
            # object store keeps (or spills to disk) the encoded images meanwhile.
            dataset = read(
                str(source.absolute()),
                columns=[id_column, bytes_column],
                **_remote_args(read, 0),
            ).materialize()
            key_column, data_column = id_column, bytes_column
        coded = _actor_map(
            dataset,
            CompressWorker,
            actors,
            retries,
            fn_constructor_kwargs={
                "staging": str(staging),
                "model": model_arg,
                "size": size,
                "threads": threads,
                "on_error": on_error,
                "key_column": key_column,
                "data_column": data_column,
            },
            batch_size=shard_images,
        )
        entries, skipped = _collect(coded, on_error)
        report = _finish_compress(staging, target, entries, skipped, size, bundle.fingerprint)
    report.seconds = time.perf_counter() - start
    return report


def _collect(coded: Any, on_error: str) -> tuple[dict[str, IndexEntry], list[tuple[str, str]]]:
    """The index from the workers' rows, as they stream in; duplicates from retried
    batches dropped, conflicting rows refused, the first error fatal in fail mode."""
    entries: dict[str, IndexEntry] = {}
    skipped: dict[str, str] = {}
    try:
        for batch in coded.iter_batches(batch_size=None, batch_format="numpy"):
            columns = {name: batch[name].tolist() for name in (*ENTRY_FIELDS, "error")}
            for i, key in enumerate(columns["key"]):
                error = columns["error"][i]
                if error:
                    if on_error == "fail":
                        raise DatasetError(f"{key}: {error} (--on-error fail)")
                    skipped[key] = error
                    continue
                entry = IndexEntry(**{name: columns[name][i] for name in ENTRY_FIELDS})
                seen = entries.get(key)
                if seen is not None and seen != entry:
                    raise DatasetError(f"key {key!r} appears twice in the input")
                entries[key] = entry
    except CodecError:
        raise
    except Exception as exc:  # Ray's wrapped worker failures
        raise _ray_failure(exc) from exc
    return entries, sorted(skipped.items())


def _finish_compress(
    staging: Path,
    target: Path,
    entries: dict[str, IndexEntry],
    skipped: list[tuple[str, str]],
    size: int,
    fingerprint: bytes,
) -> CompressReport:
    """Index (JSON Lines and Parquet), manifest, and removal of unreferenced files."""
    if not entries:
        raise DatasetError("no image could be read: nothing to write")
    ordered = [entries[key] for key in sorted(entries)]
    shard_dir = staging / SHARDS_DIR
    referenced = {entry.shard for entry in ordered}
    for path in shard_dir.iterdir():
        if path.name not in referenced:  # a killed worker's temporary file, a lost batch
            path.unlink()
    missing = [name for name in sorted(referenced) if not (shard_dir / name).is_file()]
    if missing:
        raise DatasetError(f"shard {missing[0]} is in the index but was not written")
    write_index_jsonl(staging / INDEX_JSONL, ordered)
    _write_parquet(staging / INDEX_PARQUET, ordered)
    stream_bytes = sum((shard_dir / name).stat().st_size for name in referenced)
    tokens = sum(entry.side**2 for entry in ordered)
    manifest = {
        "format": DATASET_FORMAT,
        "images": len(ordered),
        "tokens": tokens,
        "shards": len(referenced),
        "stream_bytes": stream_bytes,
        "size": size,
        "fingerprint": fingerprint.hex(),
        "index": [INDEX_JSONL, INDEX_PARQUET],
        "skipped": [{"key": key, "error": error} for key, error in skipped],
    }
    write_atomic(staging / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return CompressReport(
        out_dir=target,
        images=len(ordered),
        tokens=tokens,
        shards=len(referenced),
        stream_bytes=stream_bytes,
        seconds=0.0,
        skipped=skipped,
    )


def _write_parquet(path: Path, entries: list[IndexEntry]) -> None:
    """The same index as a Parquet table (what Ray Data and Arrow read without parsing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            name: pa.array(
                [getattr(entry, name) for entry in entries],
                pa.int64() if name in _INT_FIELDS else pa.string(),
            )
            for name in ENTRY_FIELDS
        }
    )
    temp = path.with_name(f".{path.name}.partial")
    pq.write_table(table, temp)
    os.replace(temp, path)


def decompress_dataset(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    output: str = "png",
    actors: int = 2,
    threads: int = 1,
    model: str | os.PathLike[str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    retries: int | None = None,
    force: bool = False,
    quiet: bool = False,
) -> DecompressReport:
    """Decode every image of a dataset directory into OUT_DIR, one file per key.

    `output` "png": the coded thumbnail (KEY with its suffix replaced by .png); "npy":
    its tokens as a uint16 side x side array (KEY as .npy). Each shard is one task:
    read whole, checked like any stream, records decoded in batches. Keys whose output
    names collide (a.jpg and a.png) are refused before any work.
    """
    if output not in OUTPUTS:
        raise DatasetError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    for name, value in (("actors", actors), ("threads", threads)):
        if not isinstance(value, int) or value < 1:
            raise DatasetError(f"{name} must be a positive integer, got {value!r}")
    source = Path(source).absolute()
    if not (source / INDEX_JSONL).is_file() and not (source / INDEX_PARQUET).is_file():
        raise DatasetError(f"{source}: no {INDEX_JSONL} (not a dataset directory?)")
    index = load_index(source)
    names: dict[str, str] = {}
    for key in sorted(index):
        name = output_name(key, output)
        if name in names:
            raise DatasetError(f"keys {names[name]!r} and {key!r} both decode to {name}")
        names[name] = key
    by_shard: dict[str, list[IndexEntry]] = {}
    for entry in index.values():
        by_shard.setdefault(entry.shard, []).append(entry)
    rows = [
        {"shard": shard, "entries": "\n".join(entry.to_json() for entry in members)}
        for shard, members in sorted(by_shard.items())
    ]
    model_arg = None if model is None else str(Path(model).absolute())
    target = Path(out_dir).absolute()
    start = time.perf_counter()
    with _Staging(target, force) as staging, ray_session(address, num_cpus or actors, quiet) as ray:
        decoded = _actor_map(
            ray.data.from_items(rows, override_num_blocks=len(rows)),  # a block per shard
            DecompressWorker,
            actors,
            retries,
            fn_constructor_kwargs={
                "source": str(source),
                "staging": str(staging),
                "model": model_arg,
                "threads": threads,
                "output": output,
            },
            batch_size=1,
        )
        done: dict[str, int] = {}
        try:
            for batch in decoded.iter_batches(batch_size=None, batch_format="numpy"):
                done.update(zip(batch["key"].tolist(), batch["tokens"].tolist(), strict=True))
        except CodecError:
            raise
        except Exception as exc:
            raise _ray_failure(exc) from exc
        if set(done) != set(index):
            lost = sorted(set(index) - set(done))
            raise DatasetError(f"{len(lost)} images were not decoded (first: {lost[0]!r})")
        _remove_partials(staging)
    return DecompressReport(
        out_dir=target,
        images=len(done),
        tokens=sum(done.values()),
        shards=len(rows),
        seconds=time.perf_counter() - start,
    )


def _remove_partials(root: Path) -> None:
    """Temporary files a killed worker left behind (its retry wrote the real file)."""
    for path in root.rglob(".*.partial"):
        path.unlink()
