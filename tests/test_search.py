"""The model search path: a stream names its model by fingerprint and the decoder finds it
(the given bundle, the shipped one, $IGPT_CODEC_MODELS, the user cache directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import igpt_codec
from igpt_codec.runtime import search
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, load_bundle
from igpt_codec.runtime.contract import MANIFEST_FILE

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli.py"
SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"
UNKNOWN = bytes.fromhex("0123456789abcdef")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No search directory from the machine running the tests."""
    monkeypatch.delenv(search.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_search_dirs_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(search.ENV_VAR, os.pathsep.join(["/a", "", "/b"]))
    assert search.search_dirs() == [
        Path("/a"),
        Path("/b"),
        tmp_path / "cache" / "igpt-codec" / "models",
    ]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert search.cache_dir() == tmp_path / "home" / ".cache" / "igpt-codec" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert search.cache_dir() == tmp_path / "home" / ".cache" / "igpt-codec" / "models"


def test_default_bundle_is_found_by_its_fingerprint() -> None:
    default = load_bundle(None)
    assert search.find_bundle(default.fingerprint).path == DEFAULT_BUNDLE_DIR
    assert search.default_fingerprint() == default.fingerprint.hex()


def test_missing_model_names_the_fingerprint_and_every_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(search.ENV_VAR, f"{tmp_path / 'one'}{os.pathsep}{tmp_path / 'two'}")
    (tmp_path / "given").mkdir()
    with pytest.raises(igpt_codec.ModelNotFoundError) as info:
        search.find_bundle(UNKNOWN, model=tmp_path / "given")
    message = str(info.value)
    assert "\n" not in message
    for fragment in (
        UNKNOWN.hex(),
        str(tmp_path / "given"),
        str(DEFAULT_BUNDLE_DIR),
        str(tmp_path / "one"),
        str(tmp_path / "two"),
        str(tmp_path / "cache" / "igpt-codec" / "models"),
    ):
        assert fragment in message


def test_a_manifest_that_lies_is_not_trusted(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A bundle is matched by its manifest, then verified from its files' hashes."""
    liar = tmp_path / "models" / "liar"
    shutil.copytree(DEFAULT_BUNDLE_DIR, liar)
    manifest = json.loads((liar / MANIFEST_FILE).read_text())
    manifest["fingerprint"] = UNKNOWN.hex()
    (liar / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "models" / "not-a-bundle").mkdir()
    (tmp_path / "models" / "junk").mkdir()
    (tmp_path / "models" / "junk" / MANIFEST_FILE).write_text("{not json")
    monkeypatch.setenv(search.ENV_VAR, str(tmp_path / "models"))
    with pytest.raises(igpt_codec.BundleError, match="fingerprint mismatch"):
        search.find_bundle(UNKNOWN)


def test_bundles_in_the_path_and_the_cache_are_found(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tiny = load_bundle(tiny_bundle)
    data = igpt_codec.compress(SAMPLE, model=tiny, size=4)
    with pytest.raises(igpt_codec.ModelNotFoundError, match=tiny.fingerprint.hex()):
        igpt_codec.decompress(data)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copytree(tiny_bundle, shelf / "tiny")
    monkeypatch.setenv(search.ENV_VAR, f"{tmp_path / 'nothing'}{os.pathsep}{shelf}")
    (decoded,) = igpt_codec.decompress(data)
    assert search.find_bundle(tiny.fingerprint).path == shelf / "tiny"
    monkeypatch.delenv(search.ENV_VAR)
    cache = tmp_path / "cache" / "igpt-codec" / "models"
    cache.mkdir(parents=True)
    shutil.copytree(tiny_bundle, cache / "tiny")
    (again,) = igpt_codec.decompress(data)
    assert (again.tokens == decoded.tokens).all()
    # A given bundle that is another model does not hide the right one on the path.
    (third,) = igpt_codec.decompress(data, model=DEFAULT_BUNDLE_DIR)
    assert (third.tokens == decoded.tokens).all()


def test_earlier_defaults_shipped_beside_the_default_are_found(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After the default changes, files of the earlier default keep decoding: the other
    subdirectories of codec/models/ come right after default/, before the search dirs."""
    tiny = load_bundle(tiny_bundle)
    data = igpt_codec.compress(SAMPLE, model=tiny, size=4)
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_BUNDLE_DIR, models / "default")
    monkeypatch.setattr(search, "DEFAULT_BUNDLE_DIR", models / "default")
    assert search.shipped_earlier() == []
    (models / "notes").mkdir()  # not a bundle: skipped, not an error
    with pytest.raises(igpt_codec.ModelNotFoundError, match=r"the earlier default .*notes"):
        igpt_codec.decompress(data)
    shutil.copytree(tiny_bundle, models / "v0-tiny")
    assert search.shipped_earlier() == [models / "notes", models / "v0-tiny"]
    assert search.find_bundle(tiny.fingerprint).path == models / "v0-tiny"
    (decoded,) = igpt_codec.decompress(data)
    assert decoded.tokens.size == 4 * 4
    assert f"the earlier default {models / 'v0-tiny'}" in search.describe_search()


def test_cli_finds_the_model_or_says_where_it_looked(tiny_bundle: Path, tmp_path: Path) -> None:
    tiny = load_bundle(tiny_bundle).fingerprint.hex()
    stream = tmp_path / "t.igpt"
    stream.write_bytes(igpt_codec.compress(SAMPLE, model=tiny_bundle, size=4))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop(search.ENV_VAR, None)

    def run(*args: object, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(CLI), *map(str, args)],
            capture_output=True, cwd=tmp_path, env={**env, **extra}, timeout=300, check=False,
        )  # fmt: skip

    missing = run("decompress", stream, "-o", "x.png")
    lines = missing.stderr.decode().strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1, lines
    assert tiny in lines[0] and search.ENV_VAR in lines[0] and "cache" in lines[0]
    assert not (tmp_path / "x.png").exists()
    found = run("decompress", stream, "-o", "x.png", **{search.ENV_VAR: str(tiny_bundle.parent)})
    assert found.returncode == 0, found.stderr.decode()
    assert (tmp_path / "x.png").is_file()


def test_a_given_directory_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """A mistyped --model is reported, not silently replaced by the default bundle."""
    default = load_bundle(None)
    with pytest.raises(igpt_codec.BundleError, match="no model bundle at"):
        search.find_bundle(default.fingerprint, model=tmp_path / "typo")
