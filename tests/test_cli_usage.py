"""Issue 25: the command line as gzip/zstd users use it. Each bug's test failed before.

Streams are coded with the default model at tiny sides (1..4), so every run is short.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igpt_codec import api
from igpt_codec.format.container import StreamWriter, unpack_stream

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli.py"
SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"


def run_cli(*args: object, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *map(str, args)],
        capture_output=True, cwd=cwd, timeout=300, check=False, **kwargs,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    return stderr


def one_error_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    text = result.stderr.decode()
    assert result.returncode == status, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def stream_of(*records: object) -> bytes:
    buffer = io.BytesIO()
    with StreamWriter(buffer) as writer:
        for record in records:
            writer.write_record(record)
    return buffer.getvalue()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """p.png (100x20, the photo) and p.png.igpt (its 4x4 thumbnail), as a user has them."""
    Image.effect_noise((100, 20), 40).convert("RGB").save(tmp_path / "p.png")
    ok(run_cli("compress", "p.png", "--size", "4", cwd=tmp_path))
    return tmp_path


# --- bug 1: -o onto a FIFO or a device --------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_decompress_into_a_fifo_writes_through_it(work: Path, force: bool) -> None:
    """Before: without -f "p.fifo already exists"; with -f the FIFO became a regular file
    and its reader got 0 bytes."""
    fifo = work / "p.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli("decompress", "p.png.igpt", "-o", fifo, *(["-f"] if force else []), cwd=work)
    reader.join(timeout=60)
    ok(result)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with Image.open(io.BytesIO(got[0])) as image:
        assert image.size == (4, 4)


def test_compress_into_a_fifo_writes_through_it(work: Path) -> None:
    fifo = work / "s.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    ok(run_cli("compress", "p.png", "--size", "4", "-o", fifo, cwd=work))
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got[0] == (work / "p.png.igpt").read_bytes()


@pytest.mark.parametrize("command", ["decompress", "compress"])
def test_dev_null_needs_no_force_and_stays_a_device(work: Path, command: str) -> None:
    """Before: "/dev/null already exists" (and, as root with -f, /dev/null was replaced by a
    regular file; that is not tried here, so a regression cannot break the machine)."""
    args = ("p.png.igpt",) if command == "decompress" else ("p.png", "--size", "4")
    ok(run_cli(command, *args, "-o", "/dev/null", cwd=work))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- bug 2: the default name must never be the photo --------------------------------------------


def test_default_decompress_name_is_never_the_photo(work: Path) -> None:
    """Before: "p.png already exists (use -f to overwrite)", and -f replaced the 100x20 photo
    with its 4x4 thumbnail."""
    photo = (work / "p.png").read_bytes()
    for extra in ((), ("-f",)):
        stderr = ok(run_cli("decompress", "p.png.igpt", *extra, cwd=work))
        assert "p.png.igpt.png" in stderr
        assert (work / "p.png").read_bytes() == photo
    with Image.open(work / "p.png.igpt.png") as image:
        assert image.size == (4, 4)


def test_stored_names_into_the_photos_directory_keep_the_photo(work: Path) -> None:
    """Before: `--names` plus `-o ./ -f` replaced p.png with its thumbnail."""
    photo = (work / "p.png").read_bytes()
    ok(run_cli("compress", "p.png", "p.png", "--names", "--size", "2", "-o", "s.igpt", cwd=work))
    ok(run_cli("decompress", "s.igpt", "-o", "./", "-f", cwd=work))
    assert (work / "p.png").read_bytes() == photo
    assert (work / "p.igpt.png").is_file() and (work / "p_1.igpt.png").is_file()


# --- issue 26: commits that cannot race ---------------------------------------------------------


def test_a_name_that_appears_at_the_last_moment_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creates the target between the set's last check and its commit.
    Before: os.replace silently overwrote it; now the link fails and the set says so."""
    from igpt_codec.cli import outputs as module

    target = tmp_path / "x.png"
    real_link, real_replace = os.link, os.replace

    def other_process_first(real):
        def call(src, dst, *args, **kwargs):
            if Path(dst) == target and not target.exists():
                target.write_bytes(b"theirs")
            return real(src, dst, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "link", other_process_first(real_link))
    monkeypatch.setattr(os, "replace", other_process_first(real_replace))
    outputs = module.OutputSet()
    with pytest.raises(module.OutputError, match="appeared while working"), outputs:
        outputs.add(target, b"ours")
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left


def _race(target: str, data: bytes, barrier: multiprocessing.synchronize.Barrier, results) -> None:
    from igpt_codec.cli.outputs import OutputError, OutputSet

    outputs = OutputSet()
    try:
        outputs.add(Path(target), data)
        barrier.wait(timeout=30)
        outputs.commit()
        results.put("won")
    except OutputError as exc:
        outputs.abort()
        results.put(str(exc))


def test_two_processes_racing_for_one_name(tmp_path: Path) -> None:
    """Two writers commit the same new name at the same moment, 20 times: never do both
    report success, and the file always holds the winner's bytes whole."""
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        target = tmp_path / f"r{round_}.png"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_race, args=(str(target), bytes([i]) * 4096, barrier, results))
            for i in (1, 2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        outcomes = [results.get(timeout=5) for _ in workers]
        assert outcomes.count("won") == 1, outcomes
        assert any("appeared while working" in o or "already exists" in o for o in outcomes)
        assert len(set(target.read_bytes())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- bug 3: many inputs for decompress and info ---------------------------------------------------


def test_decompress_and_info_take_many_inputs(work: Path) -> None:
    """Before: "Got unexpected extra argument"."""
    Image.effect_noise((30, 30), 40).convert("RGB").save(work / "q.jpg")
    ok(run_cli("compress", "q.jpg", "--size", "2", cwd=work))
    stderr = ok(run_cli("decompress", "p.png.igpt", "q.jpg.igpt", cwd=work))
    assert len(stderr.strip().splitlines()) == 2
    assert (work / "p.png.igpt.png").is_file() and (work / "q.jpg.igpt.png").is_file()
    info = run_cli("info", "p.png.igpt", "q.jpg.igpt", cwd=work)
    assert info.returncode == 0 and info.stdout.count(b"IGP stream") == 2
    as_json = run_cli("info", "--json", "p.png.igpt", "q.jpg.igpt", cwd=work)
    import json

    assert [item["file"] for item in json.loads(as_json.stdout)] == ["p.png.igpt", "q.jpg.igpt"]
    into = ok(run_cli("decompress", "p.png.igpt", "q.jpg.igpt", "-o", "out/", cwd=work))
    assert "out" in into and sorted(p.name for p in (work / "out").iterdir()) == [
        "p.png.igpt.png",
        "q.jpg.igpt.png",
    ]
    assert (
        "-o must name a directory"
        in run_cli(
            "decompress", "p.png.igpt", "q.jpg.igpt", "-o", "x.png", cwd=work
        ).stderr.decode()
    )


def test_recursive_inputs(work: Path) -> None:
    (work / "sub" / ".hidden").mkdir(parents=True)
    shutil.copy(work / "p.png.igpt", work / "sub" / "a.igpt")
    shutil.copy(work / "p.png.igpt", work / "sub" / ".hidden" / "b.igpt")
    assert "use -r" in one_error_line(run_cli("info", "sub", cwd=work))
    info = run_cli("info", "-r", "sub", cwd=work)
    assert info.returncode == 0 and info.stdout.count(b"IGP stream") == 1
    ok(run_cli("decompress", "-r", "sub", cwd=work))
    assert (work / "sub" / "a.igpt.png").is_file()
    ok(run_cli("compress", "-r", "sub", "--size", "1", cwd=work))
    assert (work / "sub" / "a.igpt.png.igpt").is_file()  # images only, never a stream


# --- bug 4: the summary of mixed streams ------------------------------------------------------


def test_summary_of_mixed_sides_and_kinds(tmp_path: Path) -> None:
    """Before: "4 images (1x1 palette thumbnails)" and "3 images (full-resolution palette
    images)" for streams that mix sides and kinds."""
    thumbs = [unpack_stream(api.compress(SAMPLE, size=side))[0] for side in (2, 3, 4, 1)]
    (tmp_path / "sides.igpt").write_bytes(stream_of(*thumbs))
    stderr = ok(run_cli("decompress", "sides.igpt", "-o", "out/", cwd=tmp_path))
    assert "4 images (1 2x2 palette thumbnail, 1 3x3 palette thumbnail, 1 4x4" in stderr
    Image.effect_noise((6, 5), 40).convert("RGB").save(tmp_path / "n.png")
    (full,) = unpack_stream(api.compress(tmp_path / "n.png", full=True))
    (tmp_path / "mixed.igpt").write_bytes(stream_of(thumbs[0], full, thumbs[0]))
    stderr = ok(run_cli("decompress", "mixed.igpt", "-t", cwd=tmp_path))
    assert "3 images (2 2x2 palette thumbnails, 1 full-resolution palette image)" in stderr


# --- bug 5: a write error names its target ----------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", ["decompress", "compress"])
def test_full_stdout_names_the_target(work: Path, command: str) -> None:
    """Before: "error: [Errno 28] No space left on device"."""
    args = ("p.png.igpt",) if command == "decompress" else ("p.png", "--size", "4")
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, str(CLI), command, *args, "-c", "-q"],
            stdout=full, stderr=subprocess.PIPE, cwd=work, timeout=300, check=False,
        )  # fmt: skip
    assert one_error_line(result) == "error: <stdout>: No space left on device"


# --- bug 7: --threads --------------------------------------------------------------------------


def test_threads_default_is_the_usable_cpus_and_the_help_says_what_it_sets(work: Path) -> None:
    """Before: "onnxruntime intra-op threads", default os.cpu_count() whatever the affinity."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs sched_setaffinity")
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    result = run_cli(
        "compress", "--help", cwd=work, preexec_fn=lambda: os.sched_setaffinity(0, one_cpu)
    )
    text = " ".join(result.stdout.decode().split())
    assert "for --full images the worker threads" in text
    assert "the CPUs this process may use, 1 here" in text


# --- features -----------------------------------------------------------------------------------


def test_test_mode_writes_nothing(work: Path) -> None:
    before = sorted(p.name for p in work.iterdir())
    stderr = ok(run_cli("decompress", "-t", "p.png.igpt", cwd=work))
    assert "decoded and checked: OK" in stderr
    assert sorted(p.name for p in work.iterdir()) == before
    (work / "bad.igpt").write_bytes((work / "p.png.igpt").read_bytes()[:-1])
    assert "bad.igpt" in one_error_line(run_cli("decompress", "--test", "bad.igpt", cwd=work))
    assert run_cli("decompress", "-t", "p.png.igpt", "-o", "x.png", cwd=work).returncode == 2


def test_npy_gives_the_tokens(work: Path) -> None:
    ok(run_cli("decompress", "--npy", "p.png.igpt", cwd=work))
    tokens = np.load(work / "p.png.igpt.npy")
    (decoded,) = api.decompress(work / "p.png.igpt")
    assert tokens.dtype == np.uint16 and tokens.shape == (4, 4)
    assert np.array_equal(tokens.ravel(), decoded.tokens.ravel())


def test_gzip_aliases(work: Path) -> None:
    assert run_cli("-V", cwd=work).stdout.startswith(b"igpt-codec ")
    ok(run_cli("decompress", "-k", "-v", "-q", "p.png.igpt", "-o", "k.png", cwd=work))
    assert (work / "p.png.igpt").is_file() and (work / "k.png").is_file()


# --- concatenated streams --------------------------------------------------------------------


def test_concatenated_streams_in_info_and_decompress(work: Path) -> None:
    """Before: `cat a.igpt b.igpt | igpt-codec info -` failed with a CRC error."""
    Image.effect_noise((30, 30), 40).convert("RGB").save(work / "q.jpg")
    ok(run_cli("compress", "q.jpg", "--size", "2", cwd=work))
    both = (work / "p.png.igpt").read_bytes() + (work / "q.jpg.igpt").read_bytes()
    info = run_cli("info", "-", cwd=work, input=both)
    text = info.stdout.decode()
    assert info.returncode == 0, info.stderr.decode()
    first = (work / "p.png.igpt").stat().st_size  # the photo is random noise: sizes vary
    assert f"stream 2 (concatenated) from byte {first}" in text
    assert "2 images in 2 concatenated streams" in text
    (work / "both.igpt").write_bytes(both)
    stderr = ok(run_cli("decompress", "both.igpt", "-o", "out/", cwd=work))
    assert "2 images (1 4x4 palette thumbnail, 1 2x2 palette thumbnail)" in stderr
    assert sorted(p.name for p in (work / "out").iterdir()) == [
        "both_000.igpt.png",
        "both_001.igpt.png",
    ]


def test_bench_reports_ratio_speed_and_model_and_writes_nothing(work: Path) -> None:
    before = sorted(p.name for p in work.iterdir())
    result = run_cli("bench", "p.png", "--size", "4", "--threads", "1", cwd=work)
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "1 image (4x4 thumbnails), 16 tokens" in text and "round trip OK" in text
    assert "tokens/s" in text and " model " in text and "1 thread;" in text
    assert sorted(p.name for p in work.iterdir()) == before


def test_animated_gif_and_original_size_with_full_are_said(work: Path) -> None:
    """Before: only the first frame was coded, silently; --original-size was dropped."""
    frames = [Image.effect_noise((8, 8), 40).convert("P") for _ in range(3)]
    frames[0].save(work / "a.gif", save_all=True, append_images=frames[1:])
    stderr = ok(run_cli("compress", "a.gif", "--size", "2", cwd=work))
    assert "a.gif: 3 frames: only the first is coded" in stderr
    ok(run_cli("compress", "p.png", "--full", "-o", "f.igpt", cwd=work))
    stderr = ok(run_cli("decompress", "f.igpt", "--original-size", "-t", cwd=work))
    assert "--original-size ignored for full-resolution images" in stderr


def test_dev_stdout_redirected_to_a_file_is_written_through(work: Path) -> None:
    """/dev/stdout names a regular file when stdout is redirected to one. Before: "already
    exists" (and with -f, as root, the /dev/stdout link itself would have been replaced)."""
    with open(work / "out.png", "wb") as out:
        result = subprocess.run(
            [sys.executable, str(CLI), "decompress", "p.png.igpt", "-o", "/dev/stdout", "-q"],
            stdout=out, stderr=subprocess.PIPE, cwd=work, timeout=300, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert os.path.islink("/dev/stdout")
    with Image.open(work / "out.png") as image:
        assert image.size == (4, 4)


@pytest.mark.parametrize(
    "photo",
    ["p.png", "p", ".png", "a.b.c.jpg", "x.igpt.png", "x.igpt", "img_000.igpt.png", "ü.JPEG"],
)
def test_no_made_up_name_is_the_photo_or_a_stored_name(photo: str) -> None:
    """The naming rule, for any photo name: `photo.igpt` (compress's default) decodes to
    names that are never `photo`, numbered or not, and a stored name never comes back as
    itself."""
    from igpt_codec.cli.decompress import OutputNames

    for several in (False, True):
        for output in (None, "out/"):
            names = OutputNames.plan(f"{photo}.igpt", output, several)
            made = [names.target(i) for i in range(3)] + [names.target(3, photo)]
            assert all(p.name != photo and p.name.endswith(".igpt.png") for p in made), made


def test_progress_without_a_total_gives_the_rate() -> None:
    """Decompressing from a pipe, the total is unknown: the bar says the rate and the time
    (before: "decompressing 6144 tokens" alone). From a file the total is read first."""
    from igpt_codec.cli.common import ProgressBar
    from igpt_codec.cli.decompress import _stream_tokens

    stream = io.StringIO()
    bar = ProgressBar("decompressing", enabled=True, stream=stream, delay=0)
    bar(6144, None)
    assert "6144 tokens," in stream.getvalue() and "tokens/s" in stream.getvalue()
    golden = REPO / "tests" / "golden"
    assert _stream_tokens(str(golden / "tiny_one_24.igpt")) == 24 * 24
    assert _stream_tokens(str(golden / "concatenated" / "two_streams.igpt")) == 24 * 24 + 32 * 32


def test_the_entry_point_loads_no_numpy_before_a_command_runs() -> None:
    """OPENBLAS_NUM_THREADS counts only before numpy is loaded, so the package and the
    command line's module must not load it (format/__init__.py imports its numpy parts on
    use); a command then runs with BLAS on one thread unless the user chose a count."""
    import subprocess
    import sys

    code = (
        "import sys, os\n"
        "import igpt_codec, igpt_codec.cli\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
        "from igpt_codec.format import CodecError, pack_stream\n"
        "assert 'numpy' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("environ", "loaded", "expected"),
    [({}, False, "1"), ({"OPENBLAS_NUM_THREADS": "4"}, False, "4"), ({}, True, None)],
)
def test_blas_runs_on_one_thread_unless_the_user_chose(environ, loaded, expected) -> None:
    from igpt_codec.cli import one_blas_thread

    one_blas_thread(environ, loaded)
    assert environ.get("OPENBLAS_NUM_THREADS") == expected


def test_a_command_runs_with_one_blas_thread() -> None:
    """Through the real entry point (main, its group swapped for a probe): the command's
    process has OPENBLAS_NUM_THREADS=1 and numpy loaded after it was set."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys, click\n"
        "from igpt_codec import cli\n"
        "@click.command()\n"
        "def probe():\n"
        "    loaded_before = 'numpy' in sys.modules\n"
        "    import numpy\n"
        "    click.echo(f\"{os.environ.get('OPENBLAS_NUM_THREADS')} {loaded_before}\")\n"
        "cli.cli = probe\n"
        "sys.argv = ['igpt-codec']\n"
        "cli.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["1", "False"], (result.stdout, result.stderr)


EXIT_PROBE = """
import atexit, sys
from igpt_codec import cli
atexit.register(lambda: sys.stderr.write("TEARDOWN\\n"))
if sys.argv[1] == "profiled":
    sys.setprofile(lambda *args: None)
sys.argv = ["igpt-codec", "info", *sys.argv[2:]]
cli.main()
"""


@pytest.mark.parametrize(
    ("how", "teardown"), [("plain", False), ("full", True), ("profiled", True)]
)
@pytest.mark.parametrize(("stream", "status"), [("tiny_one_24.igpt", 0), ("missing.igpt", 1)])
def test_a_finished_command_skips_the_teardown_unless_something_needs_it(
    how: str, teardown: bool, stream: str, status: int
) -> None:
    """Through the real entry point: a command ends at once (os._exit, atexit handlers not
    run) with its exit code and its whole output flushed; with IGPT_CODEC_FULL_EXIT set,
    or under a profiler, Python's normal exit runs (atexit handlers included)."""
    from igpt_codec.cli import FULL_EXIT_VARIABLE

    env = {k: v for k, v in os.environ.items() if k != FULL_EXIT_VARIABLE}
    if how == "full":
        env[FULL_EXIT_VARIABLE] = "1"
    path = REPO / "tests" / "golden" / stream
    result = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, how, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == status, result.stderr
    assert ("TEARDOWN" in result.stderr) == teardown, result.stderr
    if status == 0:
        assert "24x24 palette thumbnail" in result.stdout, result.stdout
    else:
        assert result.stderr.startswith("error: ") and "missing.igpt" in result.stderr


RAY_TEARDOWN_PROBE = """
import atexit, logging, sys, types
from igpt_codec import cli
sys.modules["ray"] = types.ModuleType("ray")  # as after a dataset command
atexit.register(lambda: sys.stderr.write("TEARDOWN\\n"))
atexit.register(lambda: logging.getLogger("ray.data._internal.stats").warning("LATE WARNING"))
sys.argv = ["igpt-codec", "info", sys.argv[1]]
cli.main()
"""


def test_what_ray_logs_after_the_command_has_reported_is_not_printed() -> None:
    """CI, session 31: a dataset job stopped by SIGTERM printed its one line, then Ray
    Data's executor, garbage-collected after ray.shutdown, logged a 43-line warning
    with a traceback at teardown. After a command ends, Ray's logging is off."""
    path = REPO / "tests" / "golden" / "tiny_one_24.igpt"
    result = subprocess.run(
        [sys.executable, "-c", RAY_TEARDOWN_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["TEARDOWN"], result.stderr  # the teardown ran
    assert "24x24 palette thumbnail" in result.stdout
