"""The CLI under faults (issue 12, findings 1-5): every failure exits with one line and
leaves nothing on disk but complete outputs of a successful run.

Faults are emulated portably: a file system that fills up (os.fdopen handles whose
writes raise ENOSPC past a byte budget), a target that refuses files (mkstemp raising
EACCES; root ignores chmod), signals sent to a subprocess, a never-ending zero stream
(/dev/zero and a pipe), and RLIMIT_NOFILE in a subprocess. The default model codes
at tiny sizes, so no torch is needed.
"""

from __future__ import annotations

import errno
import io
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import zero_image_stream

import cli
from igpt_codec import api
from igpt_codec.format import StreamWriter, unpack_stream

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli.py"
SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"


def run_cli(*args: object, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *map(str, args)],
        capture_output=True, cwd=cwd, timeout=300, check=False, **kwargs,
    )  # fmt: skip


def one_error_line(stderr: str | bytes, status: int, expected_status: int = 1) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert status == expected_status, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def many_images(count: int, side: int = 1) -> bytes:
    """`count` copies of the sample's side x side record, as one stream."""
    (record,) = unpack_stream(api.compress([SAMPLE], size=side))
    buffer = io.BytesIO()
    with StreamWriter(buffer) as writer:
        for _ in range(count):
            writer.write_record(record)
    return buffer.getvalue()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copy(SAMPLE, tmp_path / "p.jpg")
    (tmp_path / "z.igpt").write_bytes(zero_image_stream())
    (tmp_path / "m3.igpt").write_bytes(many_images(3, side=2))
    return tmp_path


# --- finding 1: a valid stream with no image -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("-o", "z.png"),
        ("-o", "zdir/"),
        ("-c",),
        ("-q", "-o", "z.png"),
        ("-q", "-o", "zdir/"),
        (),
    ],
)
def test_zero_image_stream_is_one_line_for_every_output_form(args: tuple, work: Path) -> None:
    """Before: IndexError traceback (-o file, -o dir/, -c); with -q exit 0 and nothing."""
    before = listing(work)
    result = run_cli("decompress", "z.igpt", *args, cwd=work)
    line = one_error_line(result.stderr, result.returncode)
    assert "no image" in line and line.startswith("error: z.igpt: ")
    assert result.stdout == b""
    assert listing(work) == before


def test_info_on_zero_image_stream(work: Path) -> None:
    result = run_cli("info", "z.igpt", cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    assert "0 images" in result.stdout.decode()


# --- finding 2: a full disk leaves nothing behind ------------------------------------------


REAL_FDOPEN = os.fdopen


class FullDisk:
    """os.fdopen whose write handles fail with ENOSPC once `budget` bytes are written in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def __call__(self, fd: int, mode: str = "r", *args, **kwargs):
        handle = REAL_FDOPEN(fd, mode, *args, **kwargs)
        if "w" not in mode:
            return handle
        disk = self

        class Filling:
            def write(self, data) -> int:
                if len(data) > disk.budget:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.budget -= len(data)
                return handle.write(data)

            def flush(self) -> None:
                handle.flush()

            def close(self) -> None:
                handle.close()

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                handle.close()

        return Filling()


def invoke(args: list[str], cwd: Path) -> tuple[int, str]:
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli.cli, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stderr if hasattr(result, "stderr") else result.output


@pytest.mark.parametrize("files", [0.0, 0.01, 1.5, 2.5])
def test_full_disk_during_a_multi_image_decompress(
    files: float, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up after `files` of the three PNGs. Before: the directory the command
    made stayed (and, on a real 64 KiB tmpfs, m3_002.png too)."""
    png = io.BytesIO()
    api.decompress((work / "m3.igpt").read_bytes())[0].image.save(png, format="PNG")
    monkeypatch.setattr(os, "fdopen", FullDisk(int(files * len(png.getvalue()))))
    before = listing(work)
    status, stderr = invoke(["decompress", "m3.igpt", "-o", "m3dir/"], work)
    line = one_error_line(stderr, status)
    assert "No space left on device" in line and "m3dir/m3_00" in line
    assert ".partial" not in line  # the target is named, not the hidden temporary file
    assert listing(work) == before


def test_full_disk_during_compress(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = len(api.compress([SAMPLE], size=2))
    monkeypatch.setattr(os, "fdopen", FullDisk(one // 2))
    before = listing(work)
    status, stderr = invoke(["compress", "p.jpg", "-o", "out.igpt", "--size", "2"], work)
    assert "out.igpt: No space left" in one_error_line(stderr, status)
    assert listing(work) == before
    # Several inputs, one output each: the second fails, the first is not left either.
    shutil.copy(work / "p.jpg", work / "q.jpg")
    before = listing(work)
    monkeypatch.setattr(os, "fdopen", FullDisk(one + one // 2))
    status, stderr = invoke(["compress", "p.jpg", "q.jpg", "--size", "2"], work)
    assert "q.jpg.igpt: No space left" in one_error_line(stderr, status)
    assert listing(work) == before


def test_unwritable_target_names_the_target(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the message named the hidden .partial file (as root, chmod does not stop us,
    so the refusal is emulated where the temporary file is created)."""

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x/.out.png.abc.partial")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    before = listing(work)
    status, stderr = invoke(["decompress", "m3.igpt", "-o", "out.png"], work)
    line = one_error_line(stderr, status)
    assert "out_000.png: Permission denied" in line and "partial" not in line
    assert listing(work) == before


# --- finding 3: SIGTERM and SIGHUP clean up like SIGINT ------------------------------------


def signal_mid_compress(args: list[str], signum: int, work: Path, settle: float) -> str:
    """Run the CLI, send `signum` `settle` seconds after its first temporary output exists,
    and return its one error line (exit status 128 + signum checked).

    The CLI respects an ignored SIGHUP (nohup); a test run under nohup must not pass that
    on, so the child starts with the signal's default disposition."""
    process = subprocess.Popen(
        [sys.executable, str(CLI), *args], cwd=work, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".partial") for p in work.iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(settle)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return one_error_line(stderr, process.returncode, 128 + signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_compress_leaves_nothing(signum: int, work: Path) -> None:
    """Before: SIGTERM killed the process and left a hidden .partial file (4 of 4 runs)."""
    # 160 inputs: the exact encoder codes a thumbnail in ~0.15 s, so 24 (the first
    # version) could finish before the signal arrived on a quiet machine.
    for i in range(160):
        os.link(work / "p.jpg", work / f"c{i:03d}.jpg")
    before = listing(work)
    inputs = [f"c{i:03d}.jpg" for i in range(160)]
    args = ["compress", *inputs, "-o", "all.igpt", "--threads", "1"]
    line = signal_mid_compress(args, signum, work, settle=0.2)  # 0.2 s: into the model work
    assert signal.Signals(signum).name in line or "interrupted" in line
    assert listing(work) == before


# --- finding 4: bounded reads ------------------------------------------------------------


def _limit_memory() -> None:
    limit = 2 << 30  # address space: a full read of the input would need far more
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("command", [("info",), ("decompress", "-o", "x.png")])
def test_dev_zero_is_refused_at_once(command: tuple, work: Path) -> None:
    """Before: the whole input was read before the magic was checked (a 400 MB file of
    zeros peaked at 421 MB; /dev/zero grew until memory ran out)."""
    start = time.monotonic()
    result = run_cli(command[0], "/dev/zero", *command[1:], cwd=work, preexec_fn=_limit_memory)
    line = one_error_line(result.stderr, result.returncode)
    assert "bad magic" in line and line.startswith("error: /dev/zero: ")
    assert time.monotonic() - start < 60
    with open("/dev/zero", "rb") as zeros:
        piped = run_cli("info", "-", cwd=work, stdin=zeros, preexec_fn=_limit_memory)
    assert "bad magic" in one_error_line(piped.stderr, piped.returncode)


def test_a_pipe_is_read_incrementally(work: Path) -> None:
    """info prints a record as soon as it arrives, while the writer still holds the pipe."""
    data = many_images(2, side=2)
    first_end = len(data) - 3  # the first record whole, the second not yet
    process = subprocess.Popen(
        [sys.executable, str(CLI), "info", "-"],
        cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(data[:first_end])
    process.stdin.flush()
    ready, _, _ = select.select([process.stdout], [], [], 60)
    assert ready, "nothing printed before the pipe was closed"
    header = process.stdout.readline()
    assert header.startswith(b"<stdin>: IGP stream")
    process.stdin.write(data[first_end:])
    process.stdin.close()
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 0
    assert b"2 images" in rest


# --- finding 5: bounded open files --------------------------------------------------------


def _few_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_two_thousand_images_to_a_directory_under_ulimit_256(work: Path) -> None:
    """Before: every temporary file was held open at once: "Too many open files"."""
    (work / "many.igpt").write_bytes(many_images(2000))
    result = run_cli("decompress", "many.igpt", "-o", "out/", "-q", cwd=work, preexec_fn=_few_files)
    assert result.returncode == 0, result.stderr.decode()
    names = {p.name for p in (work / "out").iterdir()}
    assert names == {f"many_{i:03d}.igpt.png" for i in range(2000)}


# --- the output set itself -----------------------------------------------------------------


def test_output_set_is_all_or_nothing(tmp_path: Path) -> None:
    from igpt_codec.cli.outputs import OutputError, OutputSet

    outputs = OutputSet()
    outputs.add(tmp_path / "new" / "a.png", b"a", create_dirs=True)
    outputs.add(tmp_path / "new" / "b.png", b"b", create_dirs=True)
    (tmp_path / "new" / "b.png").mkdir()  # appears while the command works
    with pytest.raises(OutputError, match="is a directory"):
        outputs.commit()
    assert listing(tmp_path) == {"new", "new/b.png"}  # only what was not ours
    done = OutputSet()
    with done:
        done.add(tmp_path / "c.png", b"c")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".c.png")]
    assert (tmp_path / "c.png").read_bytes() == b"c"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(OutputError, match="twice"):
        again = OutputSet(force=True)
        again.add(tmp_path / "d.png", b"d")
        again.add(tmp_path / "d.png", b"d")


# --- the same faults with full-resolution images (record kinds 3 and 4) ----------------------


def test_full_resolution_faults_leave_nothing(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    Image.effect_noise((40, 30), 50).convert("RGB").save(work / "n.png")
    Image.effect_noise((20, 9), 50).convert("RGB").save(work / "m.png")
    data = api.compress([work / "n.png"], full=True)
    monkeypatch.setattr(os, "fdopen", FullDisk(len(data) // 2))
    before = listing(work)
    status, stderr = invoke(["compress", "--full", "n.png", "-o", "n.igpt"], work)
    assert "n.igpt: No space left" in one_error_line(stderr, status)
    assert listing(work) == before
    monkeypatch.undo()
    (work / "two.igpt").write_bytes(api.compress([work / "n.png", work / "m.png"], full=True))
    png = io.BytesIO()
    api.decompress(data)[0].image.save(png, format="PNG")
    monkeypatch.setattr(os, "fdopen", FullDisk(len(png.getvalue()) + 10))
    before = listing(work)
    status, stderr = invoke(["decompress", "two.igpt", "-o", "twodir/"], work)
    assert "No space left on device" in one_error_line(stderr, status)
    assert listing(work) == before


def test_signal_during_full_resolution_compress_leaves_nothing(work: Path) -> None:
    before = listing(work)
    args = ["compress", "--full", "p.jpg", "-o", "p.igpt", "--threads", "1"]
    # 0.5 s: into the model work (the whole photo takes tens of seconds)
    line = signal_mid_compress(args, signal.SIGTERM, work, settle=0.5)
    assert "SIGTERM" in line or "interrupted" in line
    assert listing(work) == before
