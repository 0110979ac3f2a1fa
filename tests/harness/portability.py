"""Portability suite: files written here must decode to the same tokens everywhere.

    python -m tests.harness.portability              # encode, then decode in every column
    python -m tests.harness.portability --help       # columns, subsets, where things go

Encode (here, natively, the .venv's onnxruntime, 1 thread): the 105 held-out photos
(`bench.data.validation_images()`), 32x32, **one stream per photo** (`igpt_codec.api.compress_each`,
as `igpt-codec compress a.jpg b.jpg ...` writes them), for each profile: the shipped exact
default bundle (copied into the work directory) and the float32 bundle exported from its float
parent (tests/data/default-float) into the work directory. The encoder's tokens are saved
beside the files.

Decode: each column runs `python -m tests.harness.portability worker` in another interpreter or
setting; the worker reads every file, decodes its records with `igpt_codec.pipelines.stream.decode`
(the bundle given explicitly) and compares the decoded tokens with the saved ones. A file
counts as identical only when its decode returned tokens equal to the encoder's. Files of
a column are decoded together in batches of `batch` records (all 32x32, so consecutive
runs); when a batch raises (e.g. "decoded tokens fail the record's token check"), every
file of that batch counts as failed (the decoder names only the first bad row) and
decoding resumes with the next batch.

Columns (setup: scripts/portability.sh): native 1 thread batch 16 (the default decode),
native 2 threads, native batch 1, onnxruntime 1.20.x and the newest onnxruntime in their
own virtual environments, `qemu-x86_64 -cpu Nehalem` (SSE-only kernels) and aarch64
emulation (../shared/tools/aarch64, qemu-aarch64 neoverse-n1). Emulated columns can take a
fixed, evenly spaced subset (--emulated-limit).

Writes bench_out/portability.json and bench_out/portability.md. The worker needs only
numpy, Pillow, onnxruntime and click plus the repository on PYTHONPATH.

Why one module of ~900 lines: the same file runs as the encoder here, as the worker
under every other interpreter (onnxruntime 1.20, the newest, qemu, aarch64; copied into a
snapshot, imported with `-m`, no install) and as the report writer; one module keeps the
worker's protocol (arguments, result JSON) in one place on both sides of that boundary.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROFILES = ("exact", "float", "full", "synthetic")
"""exact and float: 32x32 thumbnails under each profile's bundle; full: a full-resolution
crop of each photo (FULL_CROP, coding 2: adaptive context mixing) under the exact bundle;
synthetic: bench/synthetic.py's images at full resolution (most kept as PNG/WebP files,
record kinds 5 and 6, decoded by Pillow), the photos ignored."""
SIDE = 32
FULL_CROP = (96, 64)
"""Width and height of the full-resolution crops (the photo's centre): 6 windows, so
emulated columns decode them in about a minute each."""
ORT_OLDEST = "1.20.1"
"""The newest 1.20.x release: pyproject allows onnxruntime>=1.20."""
RUNTIME_PACKAGES = ("numpy", "pillow", "click")
"""What a decode-only environment needs besides onnxruntime (no torch)."""
VENV_OLDEST = REPO / ".venv-ort120"
VENV_NEWEST = REPO / ".venv-ortnew"
AARCH64_TOOLS = REPO.parent / "shared" / "tools" / "aarch64"
DEFAULT_WORK = REPO / "bench_out" / "portability-work"
DEFAULT_OUT = REPO / "bench_out"
CODE_LAYOUT = {
    "codec": "igpt_codec",
    "format": "igpt_codec/format",
    "export": "igpt_codec/export",
    "bench": "bench",
    "tests/harness": "tests/harness",
}
"""Checkout folder -> where it lies in a code snapshot: the installed package's layout (one
import name, igpt_codec), so another interpreter imports it from PYTHONPATH, no install."""
"""What a run snapshots into WORK/code: the encoder and every worker import this one copy,
so work going on in the checkout during a long run cannot mix two versions of the code."""
READY = "portability-ready.json"
"""Marker written into a virtual environment once its packages are installed."""


# --------------------------------------------------------------------------------------
# Virtual environments for other onnxruntime releases (also used by tests/test_portability)
# --------------------------------------------------------------------------------------


class IndexUnreachableError(RuntimeError):
    """pip could not reach the package index (offline): callers may skip, not fail."""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def base_python() -> str:
    """The interpreter new environments are made from: this one's base (same version)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(
    venv: Path,
    onnxruntime: str,
    *,
    upgrade: bool = False,
    timeout: int = 900,
    log: Any = None,
) -> dict[str, str]:
    """A virtual environment at `venv` with onnxruntime`onnxruntime` (a pip specifier such
    as "==1.20.1", or "" for the newest) plus numpy, Pillow and click, made once.

    It is built beside its target and renamed into place, so a half-made one is never
    used; a ready one is reused (with upgrade=True pip is asked again for the newest).
    Returns the installed versions. Raises IndexUnreachableError when pip fails and
    cannot reach the index, RuntimeError for any other failure.
    """
    ready = venv / READY
    if ready.is_file() and not upgrade:
        return json.loads(ready.read_text())
    if ready.is_file():
        target = venv
    else:
        if venv.exists():
            shutil.rmtree(venv)
        target = venv.with_name(f"{venv.name}.partial-{os.getpid()}")
        if target.exists():
            shutil.rmtree(target)
        subprocess.run([base_python(), "-m", "venv", str(target)], check=True, timeout=300)
    python = str(venv_python(target))
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        "30",
        *(["--upgrade"] if upgrade else []),
        f"onnxruntime{onnxruntime}",
        *RUNTIME_PACKAGES,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        message = (done.stdout + done.stderr).strip()
        if target != venv:
            shutil.rmtree(target, ignore_errors=True)
        if not index_reachable(onnxruntime):
            last = message.splitlines()[-1] if message else "no output"
            raise IndexUnreachableError(
                f"pip cannot reach the package index for onnxruntime{onnxruntime}: {last}"
            )
        raise RuntimeError(f"pip install into {venv} failed:\n{message}")
    versions = json.loads(
        subprocess.run(
            [python, "-c", _VERSIONS_SNIPPET],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
    )
    (target / READY).write_text(json.dumps(versions, indent=1) + "\n")
    if target != venv:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(venv)
        target.rename(venv)  # python -m works from the renamed place (pip's scripts do not)
    if log is not None:
        log(f"{venv.name}: {versions}")
    return versions


_VERSIONS_SNIPPET = (
    "import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
    "('onnxruntime', 'numpy', 'pillow', 'click')}))"
)


def index_reachable(onnxruntime: str) -> bool:
    """Whether pip lists onnxruntime releases from an index beyond this machine's disk."""
    wanted = onnxruntime.lstrip("=") if onnxruntime.startswith("==") else None
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "index",
                "versions",
                "onnxruntime",
                "--retries",
                "1",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        return False
    listed = done.stdout.replace(",", " ").split()
    return wanted in listed if wanted else len(listed) > 4


# --------------------------------------------------------------------------------------
# Encode (native, needs the dev environment; torch only for the float export)
# --------------------------------------------------------------------------------------


FLOAT_PARENT = REPO / "tests" / "data" / "default-float"


def export_float_bundle(target: Path, parent: Path = FLOAT_PARENT) -> None:
    """The float32 bundle of the default model's float parent (needs torch, ~20 s)."""
    from igpt_codec.export.onnx_export import export_bundle

    export_bundle(str(parent), target, profile="float", force=True)


def prepare_bundles(
    work: Path, profiles: Sequence[str], log: Any, float_parent: Path = FLOAT_PARENT
) -> dict[str, str]:
    """Each profile's bundle under work/bundles; returns their fingerprints."""
    from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle

    fingerprints = {}
    for profile in profiles:
        target = work / "bundles" / profile
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if profile in ("exact", "full", "synthetic"):
            shutil.copytree(DEFAULT_BUNDLE_DIR, target)  # the snapshot has no codec/
        else:
            export_float_bundle(target, float_parent)
        bundle = load_bundle(target)
        fingerprints[profile] = bundle.fingerprint.hex()
        log(
            f"bundle {profile}: {bundle.profile} {bundle.fingerprint.hex()} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return fingerprints


def encode_profile(work: Path, profile: str, photos: Sequence[Path], log: Any) -> dict[str, Any]:
    """One stream per photo under work/streams/PROFILE, the encoder's tokens beside them."""
    import numpy as np
    import onnxruntime

    from bench.data import label
    from igpt_codec.api import compress_each, tokenize
    from igpt_codec.core.images import load_image
    from igpt_codec.runtime.bundle import load_bundle

    bundle = load_bundle(work / "bundles" / profile)
    out = work / "streams" / profile
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    full = profile in ("full", "synthetic")
    if profile == "synthetic":
        from PIL import Image

        from bench.synthetic import synthetic_images

        pictures = synthetic_images()
        photos = [Path("synthetic") / name for name, _ in pictures]
        loaded = [load_image(Image.fromarray(rgb)) for _, rgb in pictures]
    else:
        loaded = [load_image(path) for path in photos]
    if profile == "full":
        loaded = [load_image(centre_crop(item.rgb, FULL_CROP)) for item in loaded]
    tokens = [
        item.tokens.astype(np.uint16).reshape(-1)
        for item in tokenize(loaded, bundle, SIDE, full=full)
    ]
    started = time.perf_counter()
    names, sizes = [], []
    for index, (data, _summary) in enumerate(
        compress_each(loaded, model=bundle, size=None if full else SIDE, threads=1, full=full)
    ):
        name = f"{index:03d}.igpt"
        (out / name).write_bytes(data)
        names.append(name)
        sizes.append(len(data))
    seconds = time.perf_counter() - started
    save_tokens(out, dict(zip(names, tokens, strict=True)))
    index = {
        "profile": profile,
        "bundle_profile": bundle.profile,
        "fingerprint": bundle.fingerprint.hex(),
        "side": None if full else SIDE,
        "full_crop": FULL_CROP if profile == "full" else None,
        "files": names,
        "photos": [label(path) for path in photos],
        "bytes": sizes,
        "encode_seconds": round(seconds, 2),
        "threads": 1,
        "onnxruntime": onnxruntime.__version__,
        "bits_per_token": round(8 * sum(sizes) / sum(t.size for t in tokens), 4),
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    log(
        f"encoded {profile}: {len(names)} files, {index['bits_per_token']} bits/token, "
        f"{seconds:.1f} s"
    )
    return index


def centre_crop(picture: Any, size: tuple[int, int]) -> Any:
    """The centre of a PIL image, at most `size` (width, height)."""
    width, height = min(size[0], picture.width), min(size[1], picture.height)
    left, top = (picture.width - width) // 2, (picture.height - height) // 2
    return picture.crop((left, top, left + width, top + height))


# --------------------------------------------------------------------------------------
# Decode worker (runs in any environment: numpy, Pillow, onnxruntime, click, the repo)
# --------------------------------------------------------------------------------------


def save_tokens(streams: Path, tokens: dict[str, Any]) -> None:
    """The encoder's tokens of each file (all its records, concatenated) as tokens.npz."""
    import numpy as np

    np.savez(
        streams / "tokens.npz", **{name: np.asarray(t, np.uint16) for name, t in tokens.items()}
    )


def decode_files(
    streams: Path, bundle_dir: Path, subset: Sequence[int], threads: int, batch: int
) -> dict[str, Any]:
    """Decode the files `subset` of `streams` and compare with the saved tokens.

    streams/index.json names the files ("files") and photos ("photos"); tokens.npz holds
    each file's tokens. All records of the subset are decoded as one sequence with
    `igpt_codec.pipelines.stream.decode(..., max_batch=batch)`; when it raises, the batch it was on
    fails (every remaining record if the records have several sizes) and decoding
    resumes after it.
    """
    import numpy as np
    import onnxruntime

    from igpt_codec.format import CodecError, iter_records
    from igpt_codec.pipelines.stream import decode
    from igpt_codec.runtime.bundle import load_bundle

    index = json.loads((streams / "index.json").read_text())
    with np.load(streams / "tokens.npz") as saved:
        expected = {i: saved[index["files"][i]].astype(np.int64) for i in subset}
    started = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    records, owners = [], []
    errors: dict[int, str] = {}
    for i in subset:
        path = streams / index["files"][i]
        try:
            with open(path, "rb") as handle:
                found = list(iter_records(handle, length=path.stat().st_size))
        except CodecError as error:  # the container itself is refused: no model work
            errors[i] = f"{type(error).__name__}: {error}"
            continue
        records += found
        owners += [i] * len(found)
    decoded: dict[int, list[Any]] = {i: [] for i in subset}
    decoded_tokens = 0
    start = 0
    while start < len(records):
        done = 0
        try:
            for item in decode(records[start:], bundle, threads=threads, max_batch=batch):
                decoded[owners[start + done]].append(item.tokens.astype(np.int64).reshape(-1))
                decoded_tokens += item.tokens.size
                done += 1
            start = len(records)
        except CodecError as error:
            first = start + done  # the batch that raised starts here when all sizes agree
            sides = {getattr(r.header, "side", None) for r in records[first:]}
            if getattr(records[first].header, "side", None) is None:
                stop = first + 1  # a full-resolution image is decoded alone
            elif len(sides) == 1:
                stop = min(first + batch, len(records))
            else:
                stop = len(records)
            for r in range(first, stop):
                errors.setdefault(owners[r], f"{type(error).__name__}: {error}")
            start = stop
    seconds = time.perf_counter() - started
    outcome = {}
    for i in subset:
        if i in errors:
            outcome[i] = errors[i]
        elif decoded[i] and np.array_equal(np.concatenate(decoded[i]), expected[i]):
            outcome[i] = "identical"
        else:
            outcome[i] = "decoded, but the tokens differ from the encoder's"
    failures = [
        {"index": i, "photo": index["photos"][i], "error": outcome[i]}
        for i in subset
        if outcome[i] != "identical"
    ]
    return {
        "tried": len(subset),
        "identical": sum(outcome[i] == "identical" for i in subset),
        "subset": list(subset),
        "threads": threads,
        "batch": batch,
        "decode_seconds": round(seconds, 2),
        "tokens_per_s": round(decoded_tokens / seconds, 1) if seconds else None,
        "failures": failures,
        "env": environment(onnxruntime.__version__, np.__version__),
    }


def environment(ort_version: str, numpy_version: str) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort_version,
        "numpy": numpy_version,
        "executable": sys.executable,
        "codec": str(Path(sys.modules["igpt_codec"].__file__).parent),
    }


def worker_main(args: argparse.Namespace) -> int:
    subset = [int(i) for i in args.subset.split(",")] if args.subset else []
    result = decode_files(Path(args.streams), Path(args.bundle), subset, args.threads, args.batch)
    Path(args.result).write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{result['identical']}/{result['tried']} identical in {result['decode_seconds']} s "
        f"({result['env']['machine']}, onnxruntime {result['env']['onnxruntime']})"
    )
    return 0


# --------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    exercises: str
    threads: int = 1
    batch: int = 16
    emulated: bool = False
    needs: tuple[str, ...] = field(default_factory=tuple)

    def interpreter(self, code: Path | None = None) -> list[str]:
        """The command that runs the worker's python (cwd = the code it imports)."""
        code = code or checkout_code()
        native = str(REPO / ".venv" / "bin" / "python")
        if self.key == "ort-1.20":
            return [str(venv_python(VENV_OLDEST))]
        if self.key == "ort-newest":
            return [str(venv_python(VENV_NEWEST))]
        if self.key == "qemu-nehalem":
            return ["qemu-x86_64", "-cpu", "Nehalem", native]
        if self.key == "aarch64":
            return [str(AARCH64_TOOLS / "run-arm64.sh"), str(code)]
        return [native]

    def missing(self) -> str | None:
        """Why this column cannot run here, or None."""
        if self.key == "ort-1.20" and not (VENV_OLDEST / READY).is_file():
            return f"{VENV_OLDEST.name} not set up (scripts/portability.sh)"
        if self.key == "ort-newest" and not (VENV_NEWEST / READY).is_file():
            return f"{VENV_NEWEST.name} not set up (scripts/portability.sh)"
        if self.key == "qemu-nehalem" and not shutil.which("qemu-x86_64"):
            return "qemu-x86_64 not installed (apt-get install qemu-user)"
        if self.key == "aarch64":
            if not shutil.which("qemu-aarch64"):
                return "qemu-aarch64 not installed (apt-get install qemu-user)"
            root = Path(
                os.environ.get("ARM64_ROOT")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arm64-root"
            )
            if not (root / "usr" / "bin" / "python3.11").exists():
                return f"no arm64 root at {root} (build-arm64-root.sh)"
        return None


COLUMNS = (
    Column("native-1t-b16", "native, 1 thread, batch 16", "the default decode"),
    Column("native-2t", "native, 2 threads", "intra-op thread split", threads=2),
    Column("native-b1", "native, batch 1", "one row per step instead of 16", batch=1),
    Column("ort-1.20", f"onnxruntime {ORT_OLDEST}", "oldest allowed release, own venv"),
    Column("ort-newest", "onnxruntime newest", "newest release on PyPI, own venv"),
    Column("qemu-nehalem", "qemu-x86_64 Nehalem", "SSE-only x86 kernels", emulated=True),
    Column("aarch64", "aarch64 (qemu neoverse-n1)", "ARM64 NEON kernels", emulated=True),
)


def spread(n: int, k: int | None) -> list[int]:
    """k evenly spaced indices of range(n), first and last included (all when k is None)."""
    if k is None or k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def python_env(code: Path) -> dict[str, str]:
    """This environment with `code` first on the path and no trace of the calling venv."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")
    }
    env["PYTHONPATH"] = str(code)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("PYTHONPYCACHEPREFIX", "/tmp/pycache-portability")
    return env


def snapshot_code(work: Path) -> Path:
    """Copy the checkout's code to WORK/code, laid out as installed (CODE_LAYOUT)."""
    code = work / "code"
    if code.exists():
        shutil.rmtree(code)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt", "models")
    for source, target in CODE_LAYOUT.items():
        shutil.copytree(REPO / source, code / target, ignore=ignore)
    # The shipped model, where the default bundle path names it (igpt_codec/models).
    shutil.copytree(REPO / "codec" / "models", code / "igpt_codec" / "models", ignore=ignore)
    return code


@functools.cache
def checkout_code() -> Path:
    """This checkout's code laid out for import without an install (one per process)."""
    return snapshot_code(Path(tempfile.mkdtemp(prefix="igpt-portability-")))


def run_worker(
    interpreter: Sequence[str],
    streams: Path,
    bundle: Path,
    subset: Sequence[int],
    result_path: Path,
    *,
    threads: int = 1,
    batch: int = 16,
    timeout: float = 3600,
    code: Path | None = None,
) -> tuple[dict[str, Any], float]:
    """Run the worker under `interpreter` (a python command) with `code` (a snapshot of the
    checkout, laid out as installed; default: this checkout's) as cwd and PYTHONPATH;
    returns its result and the wall seconds. A worker that fails or times out gives a
    result with every file failed and worker_failed set."""
    code = code or checkout_code()
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    command = [
        *interpreter,
        "-m",
        "tests.harness.portability",
        "worker",
        "--streams",
        str(streams),
        "--bundle",
        str(bundle),
        "--subset",
        ",".join(map(str, subset)),
        "--threads",
        str(threads),
        "--batch",
        str(batch),
        "--result",
        str(result_path),
    ]
    env = python_env(code)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=code, env=env, capture_output=True, text=True, timeout=timeout
        )
        status, tail = done.returncode, (done.stdout + done.stderr).strip()
    except subprocess.TimeoutExpired:
        status, tail = None, f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - started
    if status == 0 and result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        result = {
            "tried": len(subset),
            "identical": 0,
            "subset": list(subset),
            "failures": [{"index": None, "photo": None, "error": tail[-2000:]}],
            "worker_failed": True,
        }
    result["wall_seconds"] = round(wall, 1)
    result["command"] = " ".join(command)
    return result, wall


def run_column(
    column: Column, work: Path, profile: str, subset: list[int], timeout: float, log: Any
) -> dict[str, Any]:
    code = work / "code"
    result, wall = run_worker(
        column.interpreter(code),
        work / "streams" / profile,
        work / "bundles" / profile,
        subset,
        work / "results" / f"{column.key}.{profile}.json",
        threads=column.threads,
        batch=column.batch,
        timeout=timeout,
        code=code,
    )
    failed = result.get("worker_failed")
    log(
        f"{column.key:13s} {profile:5s} {result['identical']}/{result['tried']} identical, "
        f"{wall:.1f} s"
        + (f"  WORKER FAILED: {result['failures'][0]['error'][-300:]}" if failed else "")
    )
    return result


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    columns = [c for c in report["columns"] if c["runs"]]
    head = "| profile | " + " | ".join(c["title"] for c in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [head, rule]
    for profile in report["profiles"]:
        cells = []
        for c in columns:
            run = c["runs"].get(profile)
            cells.append("—" if run is None else f"{run['identical']}/{run['tried']}")
        bundle = report["encode"][profile]["bundle_profile"]
        lines.append(f"| {profile} ({bundle}) | " + " | ".join(cells) + " |")
    for profile in report["profiles"]:
        cells = []
        for c in columns:
            run = c["runs"].get(profile)
            cells.append("—" if run is None else f"{run['wall_seconds']:.0f} s")
        lines.append(f"| wall time, {profile} | " + " | ".join(cells) + " |")
    totals = [f"{sum(run['wall_seconds'] for run in c['runs'].values()):.0f} s" for c in columns]
    lines.append("| wall time, column | " + " | ".join(totals) + " |")
    versions = []
    for c in columns:
        env = next((run.get("env") for run in c["runs"].values() if run.get("env")), None)
        versions.append(
            "—" if env is None else f"{env['machine']}, ort {env['onnxruntime']}, np {env['numpy']}"
        )
    lines.append("| environment | " + " | ".join(versions) + " |")
    enc = "; ".join(
        f"{p}: {e['fingerprint']} ({e['bundle_profile']}), {len(e['files'])} files, "
        f"{e['bits_per_token']} bits/token, encoded in {e['encode_seconds']} s"
        for p, e in report["encode"].items()
    )
    lines += [
        "",
        f"Cells: files decoded to the encoder's tokens / files tried. Encoded {report['created']}"
        f" with onnxruntime {report['encode_onnxruntime']} on {report['host']}; {enc}.",
        f"Code: {_describe_code(report)}.",
    ]
    failures = [
        (c["key"], p, f)
        for c in columns
        for p, run in c["runs"].items()
        for f in run["failures"][:3]
    ]
    if failures:
        lines += ["", "First failures per cell (at most 3):", ""]
        for key, profile, f in failures:
            error = " ".join(str(f["error"]).split())[:200]
            lines.append(f"- {key} / {profile}: file {f['index']} ({f['photo']}): {error}")
    return "\n".join(lines) + "\n"


def _describe_code(report: dict[str, Any]) -> str:
    state = report.get("code")
    if not state:
        return "unknown"
    dirty = state["uncommitted"]
    changes = f", with uncommitted changes to {', '.join(dirty)}" if dirty else ""
    return f"a snapshot of the checkout at {state['head']}{changes}"


def code_state() -> dict[str, Any]:
    """The commit the decoders import, and any uncommitted change to codec/ or format/."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60
            ).stdout.strip()
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "codec", "format").splitlines()
    return {"head": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


def host_cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return platform.processor() or platform.machine()


def main_run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", flush=True)

    work = Path(args.work).resolve()
    out = Path(args.out).resolve()
    profiles = args.profiles.split(",")
    keys = args.columns.split(",") if args.columns else [c.key for c in COLUMNS]
    unknown = set(keys) - {c.key for c in COLUMNS}
    if unknown or set(profiles) - set(PROFILES):
        raise SystemExit(f"unknown column or profile: {sorted(unknown) or profiles}")

    import onnxruntime

    from bench.data import shared_data_dir

    encode_path = work / "encode.json"
    state_path = work / "code-state.json"
    if args.reuse_streams and encode_path.is_file() and (work / "code").is_dir():
        log(f"reusing the streams under {work / 'streams'} and the code under {work / 'code'}")
    else:
        work.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(code_state(), indent=1) + "\n")
        code = snapshot_code(work)
        log(f"code snapshot: {code}")
        env = python_env(code)
        env["IGPT_SHARED_DATA"] = str(shared_data_dir())
        command = [
            sys.executable,
            "-m",
            "tests.harness.portability",
            "encode",
            "--work",
            str(work),
            "--profiles",
            ",".join(profiles),
            "--float-parent",
            str(FLOAT_PARENT),
            *(["--limit", str(args.limit)] if args.limit else []),
        ]
        subprocess.run(command, cwd=code, env=env, check=True)
    encode = json.loads(encode_path.read_text())
    n = len(next(iter(encode.values()))["files"])

    report_path = out / "portability.json"
    previous = json.loads(report_path.read_text()) if args.merge and report_path.is_file() else {}
    kept = {c["key"]: c for c in previous.get("columns", [])}
    report: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": host_cpu(),
        "encode_onnxruntime": onnxruntime.__version__,
        "code": json.loads(state_path.read_text()) if state_path.is_file() else None,
        "layout": f"one stream per photo, {SIDE}x{SIDE} (profile full: the photo's centre "
        f"{FULL_CROP[0]}x{FULL_CROP[1]} at full resolution), {n} photos per profile"
        " (synthetic: its own images)",
        "profiles": profiles,
        "encode": encode,
        "columns": [],
    }
    for column in COLUMNS:
        entry = {
            "key": column.key,
            "title": column.title,
            "exercises": column.exercises,
            "threads": column.threads,
            "batch": column.batch,
            "runs": {},
        }
        if column.key not in keys:
            if column.key in kept:
                entry["runs"] = kept[column.key]["runs"]
            report["columns"].append(entry)
            continue
        why = column.missing()
        if why:
            log(f"{column.key}: skipped, {why}")
            entry["skipped"] = why
            report["columns"].append(entry)
            continue
        for profile in profiles:
            # Profiles hold different numbers of files (the synthetic set has its own size).
            count = len(encode[profile]["files"])
            subset = spread(count, args.emulated_limit if column.emulated else None)
            entry["runs"][profile] = run_column(column, work, profile, subset, args.timeout, log)
        report["columns"].append(entry)
        out.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1) + "\n")  # after every column
    out.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (out / "portability.md").write_text(table)
    print(table)
    cells = [run for c in report["columns"] for p, run in c["runs"].items() if p != "float"]
    return 0 if all(run["identical"] == run["tried"] for run in cells) else 1


def main_encode(args: argparse.Namespace) -> int:
    """Bundles and streams under --work, with the code this process imports."""

    def log(message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", flush=True)

    from bench.data import validation_images

    work = Path(args.work)
    profiles = args.profiles.split(",")
    photos = validation_images()[: args.limit or None]
    prepare_bundles(work, profiles, log, Path(args.float_parent))
    encode = {p: encode_profile(work, p, photos, log) for p in profiles}
    (work / "encode.json").write_text(json.dumps(encode, indent=1) + "\n")
    return 0


def main_setup(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(message, flush=True)

    ensure_venv(VENV_OLDEST, f"=={ORT_OLDEST}", log=log)
    ensure_venv(VENV_NEWEST, "", upgrade=args.upgrade, log=log)
    for venv in (VENV_OLDEST, VENV_NEWEST):
        print(f"{venv.name}: {(venv / READY).read_text().strip()}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.portability",
        description="Encode the held-out photos here, decode them in every column, compare tokens.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="encode and decode (the default)")
    for p in (parser, run):
        p.add_argument("--work", default=str(DEFAULT_WORK), help="streams, bundles, results")
        p.add_argument("--out", default=str(DEFAULT_OUT), help="portability.json and .md")
        p.add_argument("--profiles", default=",".join(PROFILES))
        p.add_argument(
            "--columns", help="comma-separated keys: " + ",".join(c.key for c in COLUMNS)
        )
        p.add_argument("--limit", type=int, help="encode only the first N photos")
        p.add_argument(
            "--emulated-limit",
            type=int,
            metavar="K",
            help="emulated columns decode K evenly spaced files (default: all)",
        )
        p.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
        p.add_argument(
            "--reuse-streams", action="store_true", help="decode the streams already encoded"
        )
        p.add_argument(
            "--merge",
            action="store_true",
            help="keep the previous report's results for columns not run now",
        )
    setup = sub.add_parser("setup", help="make the .venv-ort120 and .venv-ortnew environments")
    setup.add_argument("--upgrade", action="store_true", help="ask pip for the newest again")
    encode = sub.add_parser("encode", help="bundles and streams only (run by `run`)")
    encode.add_argument("--work", required=True)
    encode.add_argument("--profiles", default=",".join(PROFILES))
    encode.add_argument("--limit", type=int)
    encode.add_argument("--float-parent", default=str(FLOAT_PARENT))
    worker = sub.add_parser("worker", help="decode and compare (run by the columns)")
    worker.add_argument("--streams", required=True)
    worker.add_argument("--bundle", required=True)
    worker.add_argument("--subset", required=True)
    worker.add_argument("--threads", type=int, default=1)
    worker.add_argument("--batch", type=int, default=16)
    worker.add_argument("--result", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        return worker_main(args)
    if args.command == "setup":
        return main_setup(args)
    if args.command == "encode":
        return main_encode(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
