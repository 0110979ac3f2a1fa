"""cli.py as a user runs it: subprocesses, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import api
from codec.bundle import DEFAULT_BUNDLE_DIR, MANIFEST_FILE, load_bundle
from codec.palette import tokens_to_image
from format.container import pack_stream, unpack_stream

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
    with Image.open(tmp_path / "a.png") as image:
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
    assert report["format_version"] == 1 and report["stream_bytes"] == coded.stat().st_size
    (row,) = report["records"]
    assert row["side"] == 8 and row["tokens"] == 64 and row["mode"] == "RGB"
    assert row["payload_bytes"] > 0 and row["bits_per_token"] > 0
    assert len(row["fingerprint"]) == 16
    text = run_cli("info", coded, cwd=coded.parent)
    assert text.returncode == 0 and b"1 record" in text.stdout


def test_several_images(work: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    a, b = photo(work, "a"), photo(work, "b")
    usage = run_cli("compress", a, b, "--model", tiny_bundle, cwd=tmp_path)
    assert usage.returncode == 2 and b"-o" in usage.stderr
    stream = tmp_path / "ab.igpt"
    made = run_cli("compress", a, b, "-o", stream, "--model", tiny_bundle, "--size", "4", cwd=work)
    assert made.returncode == 0, made.stderr.decode()
    result = run_cli("decompress", stream, "-o", tmp_path / "out", "--model", tiny_bundle, cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["ab_000.png", "ab_001.png"]
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
    bad = type(record)(record.header, record.payload, record.padding_bits, record.token_crc ^ 1)
    (scratch / "two.igpt").write_bytes(pack_stream([record, bad]))
    before = _listing(scratch)
    result = run_cli("decompress", "two.igpt", "-o", "out", "--model", tiny_bundle, cwd=scratch)
    assert_one_line_error(result, "do not match")
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
