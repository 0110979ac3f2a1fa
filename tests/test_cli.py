"""cli.py as a user runs it: subprocesses, exit codes, one-line errors, no partial files.

Long: one test per command behaviour users rely on.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igpt_codec import api
from igpt_codec.core.palette import tokens_to_image
from igpt_codec.format.container import pack_stream, unpack_stream
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from igpt_codec.runtime.contract import MANIFEST_FILE

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli.py"
SIZE = "8"


def run_cli(*args: object, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *map(str, args)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, photo_paths: list[Path]) -> Path:
    """Two photos (a JPEG and a PNG when the set has both) in a scratch directory."""
    root = tmp_path_factory.mktemp("cli")
    jpeg = next(p for p in photo_paths if p.suffix.lower() in (".jpg", ".jpeg"))
    other = next((p for p in photo_paths if p.suffix.lower() == ".png"), photo_paths[-1])
    shutil.copy(jpeg, root / f"a{jpeg.suffix.lower()}")
    shutil.copy(other, root / f"b{other.suffix.lower()}")
    return root


def photo(work: Path, name: str) -> Path:
    """The photo copied as NAME.<ext>, not the streams or PNGs made from it."""
    return next(p for p in sorted(work.iterdir()) if p.stem == name and len(p.suffixes) == 1)


@pytest.fixture(scope="module")
def coded(work: Path, tiny_bundle: Path) -> Path:
    """a.<ext>.igpt, made once by the CLI for the tests that only read it."""
    source = photo(work, "a")
    result = run_cli("compress", source.name, "--model", tiny_bundle, "--size", SIZE, cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    summary = result.stderr.decode()
    assert "bits/token" in summary and "model ideal" in summary and "24-bit RGB" in summary
    return work / f"{source.name}.igpt"


def expected_png(source: Path, tiny_bundle: Path, size: int = 8) -> np.ndarray:
    bundle = load_bundle(tiny_bundle)
    tokens = api.tokenize([source], bundle, size)[0].tokens
    return np.asarray(tokens_to_image(tokens, bundle.palette, size))


def test_round_trip(work: Path, coded: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "decoded.png"
    result = run_cli("decompress", coded, "-o", out, "--model", tiny_bundle, cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    with Image.open(out) as image:
        assert image.size == (8, 8)
        assert np.array_equal(np.asarray(image), expected_png(photo(work, "a"), tiny_bundle))


def test_default_decompress_name_and_original_size(
    coded: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    copy = shutil.copy(coded, tmp_path / coded.name)
    result = run_cli("decompress", copy, "--original-size", "--model", tiny_bundle, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    record = unpack_stream(coded.read_bytes())[0]
    with Image.open(tmp_path / f"{coded.name}.png") as image:  # a.jpg.igpt -> a.jpg.igpt.png
        assert image.size == (record.header.width, record.header.height)


def test_stdin_and_stdout(work: Path, coded: Path, tiny_bundle: Path) -> None:
    source = photo(work, "a")
    result = run_cli(
        "compress", "-", "-c", "--model", tiny_bundle, "--size", SIZE, cwd=work,
        stdin=source.read_bytes(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # A stream stores no file name, so stdin gives the very bytes the file run gave.
    assert result.stdout == coded.read_bytes()
    decoded = run_cli("decompress", "-", "--model", tiny_bundle, cwd=work, stdin=result.stdout)
    assert decoded.returncode == 0, decoded.stderr.decode()
    with Image.open(io.BytesIO(decoded.stdout)) as image:
        assert np.array_equal(np.asarray(image), expected_png(source, tiny_bundle))


def test_refuses_to_overwrite(work: Path, coded: Path, tiny_bundle: Path) -> None:
    before = coded.read_bytes()
    source = photo(work, "a").name
    result = run_cli("compress", source, "--model", tiny_bundle, "--size", "4", cwd=work)
    assert_one_line_error(result, "already exists", "-f")
    assert coded.read_bytes() == before
    forced = run_cli("compress", source, "--model", tiny_bundle, "--size", SIZE, "-f", cwd=work)
    assert forced.returncode == 0 and coded.read_bytes() == before


def test_info_json(coded: Path) -> None:
    result = run_cli("info", coded, "--json", cwd=coded.parent)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    size = coded.stat().st_size
    assert report["format_version"] >= 1 and report["stream_bytes"] == size
    assert report["images"] == 1 and report["tokens"] == 64
    assert report["bits_per_token"] == pytest.approx(8 * size / 64)
    (row,) = report["records"]
    assert row["side"] == 8 and row["tokens"] == 64 and row["mode"] == "RGB"
    assert row["payload_bytes"] > 0
    assert row["payload_bits_per_token"] == pytest.approx(8 * row["payload_bytes"] / 64)
    assert "bits_per_token" not in row  # one definition: the file's
    assert len(row["fingerprint"]) == 16
    text = run_cli("info", coded, cwd=coded.parent)
    assert text.returncode == 0 and b"1 image" in text.stdout


def test_several_images(work: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    a, b = (Path(shutil.copy(photo(work, name), tmp_path)) for name in ("a", "b"))
    each = run_cli("compress", a, b, "--model", tiny_bundle, "--size", "4", cwd=tmp_path)
    assert each.returncode == 0, each.stderr.decode()
    assert (tmp_path / f"{a.name}.igpt").is_file() and (tmp_path / f"{b.name}.igpt").is_file()
    assert len(each.stderr.decode().strip().splitlines()) == 2  # a summary line per output
    stream = tmp_path / "ab.igpt"
    made = run_cli("compress", a, b, "-o", stream, "--model", tiny_bundle, "--size", "4", cwd=work)
    assert made.returncode == 0, made.stderr.decode()
    result = run_cli("decompress", stream, "-o", tmp_path / "out", "--model", tiny_bundle, cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["ab_000.igpt.png", "ab_001.igpt.png"]
    to_stdout = run_cli("decompress", stream, "-c", "--model", tiny_bundle, cwd=work)
    assert to_stdout.returncode == 2


def test_export_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = run_cli("export", tmp_path / "no_such_checkpoint", tmp_path / "bundle", cwd=tmp_path)
    assert_one_line_error(result)
    assert not (tmp_path / "bundle").exists()


# --- failures: exit 1, one line, nothing left behind ---------------------------------------


def _listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.fixture
def scratch(coded: Path, tiny_bundle: Path, tmp_path: Path) -> Path:
    """A directory with one good stream and a set of bad inputs."""
    data = coded.read_bytes()
    (tmp_path / "good.igpt").write_bytes(data)
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x40
    (tmp_path / "corrupted.igpt").write_bytes(bytes(corrupted))
    (tmp_path / "truncated.igpt").write_bytes(data[: len(data) - 7])
    (tmp_path / "empty.igpt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image, not a stream\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("corrupted.igpt", "CRC"),
        ("truncated.igpt", "truncated"),
        ("empty.igpt", "truncated"),
        ("notes.txt", "magic"),
        ("missing.igpt", "missing.igpt"),
        ("folder", "folder"),
    ],
)
def test_decompress_failures(name: str, fragment: str, scratch: Path, tiny_bundle: Path) -> None:
    before = _listing(scratch)
    result = run_cli("decompress", name, "-o", "out.png", "--model", tiny_bundle, cwd=scratch)
    assert_one_line_error(result, fragment)
    assert _listing(scratch) == before


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("notes.txt", "not an image"),
        ("missing.jpg", "no such file"),
        ("folder", "is a directory"),
        ("empty.png", "empty file"),
    ],
)
def test_compress_failures(name: str, fragment: str, scratch: Path, tiny_bundle: Path) -> None:
    before = _listing(scratch)
    result = run_cli("compress", name, "-o", "out.igpt", "--model", tiny_bundle, cwd=scratch)
    assert_one_line_error(result, fragment, name)
    assert _listing(scratch) == before


def test_other_model(scratch: Path, other_bundle: Path, tiny_bundle: Path) -> None:
    bundle = load_bundle(other_bundle)
    result = run_cli("decompress", "good.igpt", "-o", "x.png", "--model", other_bundle, cwd=scratch)
    assert_one_line_error(
        result, bundle.fingerprint.hex(), load_bundle(tiny_bundle).fingerprint.hex()
    )
    assert not (scratch / "x.png").exists()


def test_failure_in_a_later_record_writes_no_image(scratch: Path, tiny_bundle: Path) -> None:
    """All decoding happens before any PNG is written, so the good first record leaves nothing."""
    record = unpack_stream((scratch / "good.igpt").read_bytes())[0]
    check = "token_check" if hasattr(record, "token_check") else "token_crc"  # format 2 / 1
    bad = dataclasses.replace(record, **{check: getattr(record, check) ^ 1})
    (scratch / "two.igpt").write_bytes(pack_stream([record, bad]))
    before = _listing(scratch)
    result = run_cli("decompress", "two.igpt", "-o", "out", "--model", tiny_bundle, cwd=scratch)
    assert_one_line_error(result, "record 1")
    assert _listing(scratch) == before


def test_missing_bundle(scratch: Path) -> None:
    result = run_cli("decompress", "good.igpt", "--model", scratch / "nope", cwd=scratch)
    assert_one_line_error(result, "bundle")


def test_progress_bar_draws_only_when_enabled() -> None:
    sys.path.insert(0, str(REPO))
    import cli

    stream = io.StringIO()
    bar = cli.ProgressBar("coding", enabled=True, stream=stream, delay=0)
    bar(50, 100)
    bar(100, 100)
    bar.close()
    assert "coding [" in stream.getvalue() and "100/100 tokens" in stream.getvalue()
    silent = io.StringIO()
    off = cli.ProgressBar("coding", enabled=False, stream=silent, delay=0)
    off(1, 2)
    off.close()
    assert silent.getvalue() == ""


def test_default_bundle_round_trip(work: Path, tmp_path: Path) -> None:
    assert (DEFAULT_BUNDLE_DIR / MANIFEST_FILE).exists(), "the default bundle must ship"
    source = photo(work, "a")
    stream = tmp_path / "a.igpt"
    made = run_cli("compress", source, "-o", stream, "--size", "4", cwd=tmp_path)
    assert made.returncode == 0, made.stderr.decode()
    result = run_cli("decompress", stream, "-o", tmp_path / "a.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    bundle = load_bundle(None)
    tokens = api.tokenize([source], bundle, 4)[0].tokens
    with Image.open(tmp_path / "a.png") as image:
        assert np.array_equal(
            np.asarray(image), np.asarray(tokens_to_image(tokens, bundle.palette, 4))
        )


# --- issue 11: bugs and friction, on the shipped default model (no torch needed) -----------


def default_run(*args: object, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, **kwargs)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    shutil.copy(SAMPLE, tmp_path / "p.jpg")
    return tmp_path


SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"


def one_stream(directory: Path, name: str = "p.igpt", count: int = 1) -> Path:
    """A stream of `count` images of the sample, coded at 4x4 by the default model."""
    inputs = [directory / "p.jpg"] * count
    result = run_cli("compress", *inputs, "-o", directory / name, "--size", "4", cwd=directory)
    assert result.returncode == 0, result.stderr.decode()
    return directory / name


def test_trailing_slash_is_always_a_directory(photo_dir: Path) -> None:
    """Bug 1. Before: `-o newdir/` with one image wrote a regular file named newdir."""
    stream = one_stream(photo_dir)
    result = run_cli("decompress", stream, "-o", "newdir/", cwd=photo_dir)
    assert result.returncode == 0, result.stderr.decode()
    assert (photo_dir / "newdir").is_dir()
    assert [p.name for p in (photo_dir / "newdir").iterdir()] == ["p.igpt.png"]
    nested = run_cli("decompress", stream, "-o", "a/b/", cwd=photo_dir)
    assert nested.returncode == 0 and (photo_dir / "a" / "b" / "p.igpt.png").is_file()
    # Without the slash, one image is one file, as before.
    plain = run_cli("decompress", stream, "-o", "single", cwd=photo_dir)
    assert plain.returncode == 0 and (photo_dir / "single").is_file()


@pytest.mark.parametrize("how", ["same", "hardlink", "symlink", "dotted"])
def test_output_equal_to_an_input_is_refused_even_with_force(how: str, photo_dir: Path) -> None:
    """Bug 4. Before: `compress a.jpg -o a.jpg -f` replaced the photo with its stream."""
    source = photo_dir / "p.jpg"
    target = {"same": "p.jpg", "dotted": "./sub/../p.jpg", "hardlink": "h.jpg", "symlink": "s.jpg"}
    (photo_dir / "sub").mkdir()
    if how == "hardlink":
        (photo_dir / "h.jpg").hardlink_to(source)
    if how == "symlink":
        (photo_dir / "s.jpg").symlink_to(source)
    before = source.read_bytes()
    result = run_cli("compress", "p.jpg", "-o", target[how], "-f", "--size", "4", cwd=photo_dir)
    assert_one_line_error(result, "input", "p.jpg")
    assert source.read_bytes() == before
    # The same for decompress: the stream itself is never the output.
    stream = one_stream(photo_dir)
    data = stream.read_bytes()
    again = run_cli("decompress", stream, "-o", stream, "-f", cwd=photo_dir)
    assert_one_line_error(again, "input")
    assert stream.read_bytes() == data


def test_several_inputs_without_o_give_one_output_each(photo_dir: Path) -> None:
    """Before: exit 2 "name it with -o OUT"; now gzip-style INPUT.igpt beside each input."""
    shutil.copy(photo_dir / "p.jpg", photo_dir / "q.jpg")
    (photo_dir / "sub").mkdir()
    shutil.copy(photo_dir / "p.jpg", photo_dir / "sub" / "r.jpg")
    result = run_cli("compress", "p.jpg", "q.jpg", "sub/r.jpg", "--size", "4", cwd=photo_dir)
    assert result.returncode == 0, result.stderr.decode()
    for name in ("p.jpg.igpt", "q.jpg.igpt", "sub/r.jpg.igpt"):
        assert len(unpack_stream((photo_dir / name).read_bytes())) == 1
    assert (photo_dir / "p.jpg").exists()  # inputs are kept
    # One existing output refuses the whole run before any work, and nothing is written.
    (photo_dir / "q.jpg.igpt").unlink()
    (photo_dir / "p.jpg.igpt").unlink()
    refused = run_cli("compress", "p.jpg", "q.jpg", "sub/r.jpg", "--size", "4", cwd=photo_dir)
    assert_one_line_error(refused, "sub/r.jpg.igpt", "already exists")
    assert not (photo_dir / "p.jpg.igpt").exists() and not (photo_dir / "q.jpg.igpt").exists()


def test_bits_per_token_has_one_meaning(photo_dir: Path) -> None:
    """Before: compress said 4.273 and info 3.912 bits/token for the same file."""
    made = run_cli("compress", "p.jpg", "--size", "8", cwd=photo_dir)
    assert made.returncode == 0, made.stderr.decode()
    size = (photo_dir / "p.jpg.igpt").stat().st_size
    expected = f"{8 * size / 64:.3f} bits/token (file)"
    assert expected in made.stderr.decode()
    shown = run_cli("info", "p.jpg.igpt", cwd=photo_dir)
    assert expected in shown.stdout.decode()
    assert "payload bits/token" in shown.stdout.decode()
    assert "8x8 palette thumbnail" in made.stderr.decode()


def test_version_and_python_dash_m(photo_dir: Path) -> None:
    result = run_cli("--version", cwd=photo_dir)
    assert result.returncode == 0
    text = result.stdout.decode()
    fingerprint = json.loads((DEFAULT_BUNDLE_DIR / MANIFEST_FILE).read_text())["fingerprint"]
    assert "igpt-codec 0.1.0" in text and "onnxruntime" in text and fingerprint in text
    module = subprocess.run(
        [sys.executable, "-m", "codec", "compress", "p.jpg", "-c", "--size", "4"],
        capture_output=True, cwd=photo_dir, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300, check=False,
    )  # fmt: skip
    assert module.returncode == 0, module.stderr.decode()
    assert module.stdout == codec_compress(photo_dir / "p.jpg")
    helped = subprocess.run(
        [sys.executable, "-m", "codec", "--help"], capture_output=True, cwd=REPO, check=False
    )
    assert helped.returncode == 0 and b"python -m codec" in helped.stdout


def codec_compress(path: Path) -> bytes:
    return api.compress(path, size=4)


def test_help_and_summary_say_what_is_kept(photo_dir: Path) -> None:
    def help_text(*args: str) -> str:
        return " ".join(run_cli(*args, "--help", cwd=photo_dir).stdout.decode().split())

    assert "palette thumbnail" in help_text("compress") and "not kept" in help_text("compress")
    assert "thumbnail" in help_text("decompress") and "approximation" in help_text("decompress")
    assert "thumbnail" in help_text()


def test_errors_name_the_input(photo_dir: Path) -> None:
    stream = one_stream(photo_dir)
    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 0x40
    (photo_dir / "bad.igpt").write_bytes(bytes(data))
    for command in (("decompress", "bad.igpt", "-o", "x.png"), ("info", "bad.igpt")):
        result = run_cli(*command, cwd=photo_dir)
        line = assert_one_line_error(result, "CRC")
        assert line.startswith("error: bad.igpt: "), line
    piped = run_cli("info", "-", cwd=photo_dir, stdin=bytes(data))
    assert assert_one_line_error(piped).startswith("error: <stdin>: ")


def test_info_into_a_closed_pipe_is_quiet(photo_dir: Path) -> None:
    """Before: "error: stdout was closed ..." and exit 1 for `info big.igpt | head -1`."""
    stream = one_stream(photo_dir)
    record = unpack_stream(stream.read_bytes())[0]
    (photo_dir / "big.igpt").write_bytes(pack_stream([record] * 3000))
    reader = subprocess.Popen(
        [sys.executable, str(CLI), "info", "big.igpt"],
        cwd=photo_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()  # what `head -1` does
    status = reader.wait(timeout=120)
    stderr = reader.stderr.read()
    assert first.startswith(b"big.igpt: ")
    assert status == 0 and stderr == b"", stderr


def test_names_are_stored_only_when_asked(work: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """--names stores base names (never directories); several images decode after them,
    duplicates numbered; without it the stream holds no name and outputs are numbered."""
    sub = tmp_path / "deep" / "dir"
    sub.mkdir(parents=True)
    a = Path(shutil.copy(photo(work, "a"), sub / "holiday.jpg"))
    b = Path(shutil.copy(photo(work, "b"), tmp_path / "holiday.png"))
    stream = tmp_path / "named.igpt"
    args = ("--model", tiny_bundle, "--size", "4")
    made = run_cli("compress", a, b, a, "-o", stream, "--names", *args, cwd=tmp_path)
    assert made.returncode == 0, made.stderr.decode()
    data = stream.read_bytes()
    assert b"holiday.jpg" in data and b"deep" not in data
    assert [r.name for r in unpack_stream(data)] == ["holiday.jpg", "holiday.png", "holiday.jpg"]
    out = run_cli("decompress", stream, "-o", "out/", "--model", tiny_bundle, cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "holiday.igpt.png",
        "holiday_1.igpt.png",
        "holiday_2.igpt.png",
    ]
    plain = tmp_path / "plain.igpt"
    assert run_cli("compress", a, b, "-o", plain, *args, cwd=tmp_path).returncode == 0
    assert b"holiday" not in plain.read_bytes()
    assert len(data) > len(plain.read_bytes())
    (decoded,) = api.decompress(api.compress(a, tiny_bundle, size=4, names=True), tiny_bundle)
    assert decoded.name == "holiday.jpg"
