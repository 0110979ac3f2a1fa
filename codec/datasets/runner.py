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
   model (`igpt_codec.datasets.shards.shard_name`), written through a temporary file and
   a rename. The workers (`datasets.workers`) turn every input's failure into a row (a
   skipped key and its reason; a shard that does not match its index), never an
   exception, so Ray neither retries a bad input nor reports its own advice for it.
3. Retries: actors run with `max_restarts` and `max_task_retries` (DEFAULT_RETRIES), so
   a killed actor is restarted and the batch it held is given again, a bounded number
   of times. The retry rewrites the same shard name with the same bytes; nothing is
   appended anywhere. The index is built by the
   driver from the rows the workers return, keyed by image key (a second identical row
   is dropped, a conflicting one is an error), never by listing shard files; files no
   entry references and temporary files of killed workers are removed at the end.
4. Everything is written into a hidden staging directory beside OUT_DIR, renamed into
   place only when the index is complete, with a rename that never replaces another
   job's output (`datasets.staging`): a failed or interrupted job leaves no
   half-written dataset behind, and two jobs racing for one OUT_DIR cannot silently
   overwrite each other.

Ray is imported inside the functions only, and only here (tests/test_architecture.py);
the Ray-free parts are `workers`, `staging` and `manifest`. Every function that
touches Ray stays here, which is why the module runs a little over 400 lines.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from igpt_codec.datasets.index import (
    INDEX_JSONL,
    INDEX_PARQUET,
    IndexEntry,
    load_index,
)
from igpt_codec.datasets.manifest import (
    CompressReport,
    DecompressReport,
    finish_compress,
    remove_partials,
)
from igpt_codec.datasets.quiet import stderr_without
from igpt_codec.datasets.staging import Staging
from igpt_codec.datasets.workers import (
    ENTRY_FIELDS,
    IMAGE_SUFFIXES,
    CompressWorker,
    DatasetError,
    DecompressWorker,
    list_images,
    output_name,
)
from igpt_codec.format.errors import CodecError

__all__ = [
    "IMAGE_SUFFIXES",
    "CompressReport",
    "CompressWorker",
    "DatasetError",
    "DecompressReport",
    "DecompressWorker",
    "compress_dataset",
    "decompress_dataset",
    "list_images",
    "output_name",
]

ON_ERROR = ("skip", "fail")
OUTPUTS = ("png", "npy")
DEFAULT_SHARD_IMAGES = 256
"""Images per shard: ~0.4 MB at 32x32 and ~70 s of one core, so a retried shard costs
little and a million images make ~4,000 files."""
DEFAULT_RETRIES = 3
"""Actor restarts and task retries: a killed actor (node lost, OOM killer) is replaced
and its batch given again, up to this many times; an input that kills every actor that
takes it fails the job instead of looping for ever (Ray Data's own default: unlimited)."""


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, quiet: bool) -> Iterator[Any]:
    """Ray as the caller wants it: the running one (already initialised in this process),
    an existing cluster (`address`, e.g. "auto" or "ray://head:10001"), or a local one
    started here with `num_cpus` CPUs and shut down at the end. `quiet`: no progress, and
    Ray's own stderr noise filtered (`datasets.quiet`)."""
    with stderr_without() if quiet else contextlib.nullcontext():
        yield from _ray_session(address, num_cpus, quiet)


def _ray_session(address: str | None, num_cpus: int | None, quiet: bool) -> Iterator[Any]:
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
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
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
        if callable(handler):
            # ray.init replaces SIGTERM's handler with its own; keep the caller's (the
            # CLI's unwinds like Ctrl-C, which removes the staging directory).
            signal.signal(signal.SIGTERM, handler)
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


def _remote_args(function: Any, num_cpus: float) -> dict[str, Any]:
    """num_cpus for a Ray Data read, as a named argument where this Ray takes one (2.5x)
    and through ray_remote_args before that."""
    if "num_cpus" in inspect.signature(function).parameters:
        return {"num_cpus": num_cpus}
    return {"ray_remote_args": {"num_cpus": num_cpus}}


def _retry_args(retries: int | None) -> dict[str, Any]:
    """Actor restarts and task retries, both bounded (None: DEFAULT_RETRIES), so a
    crash-looping actor fails the job. An exception a worker raises is not retried at
    all (Ray retries actor tasks only when the actor dies), and the workers turn every
    input's failure into a row rather than an exception. Ray 2.60 deprecates passing them
    as bare keywords, hence the filter."""
    if retries is None:
        retries = DEFAULT_RETRIES
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
    with (
        Staging(target, force, DatasetError) as staging,
        ray_session(address, num_cpus or actors, quiet) as ray,
    ):
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
        report = finish_compress(staging, target, entries, skipped, size, bundle.fingerprint)
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
    with (
        Staging(target, force, DatasetError) as staging,
        ray_session(address, num_cpus or actors, quiet) as ray,
    ):
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
                columns = (batch[name].tolist() for name in ("key", "tokens", "error"))
                for key, tokens, error in zip(*columns, strict=True):
                    if error:  # a shard that does not match its index: its cause, one line
                        raise DatasetError(error)
                    done[key] = tokens
        except CodecError:
            raise
        except Exception as exc:
            raise _ray_failure(exc) from exc
        if set(done) != set(index):
            lost = sorted(set(index) - set(done))
            raise DatasetError(f"{len(lost)} images were not decoded (first: {lost[0]!r})")
        remove_partials(staging)
    return DecompressReport(
        out_dir=target,
        images=len(done),
        tokens=sum(done.values()),
        shards=len(rows),
        seconds=time.perf_counter() - start,
    )
