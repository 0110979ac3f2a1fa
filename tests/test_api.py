"""The public Python API (`import codec`): what it accepts, returns and raises.

Runs on the shipped default bundle at small sizes, so no torch is needed.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import zero_image_stream
from PIL import Image

import igpt_codec
from igpt_codec import api
from igpt_codec.runtime.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"
SIZE = 4


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None)


def tokens_of(image, bundle, size: int = SIZE) -> np.ndarray:
    return api.tokenize([image], bundle, size)[0].tokens


def decoded_tokens(data) -> list[np.ndarray]:
    return [item.tokens for item in igpt_codec.decompress(data)]


# --- issue 11, bug 2: one image of any kind, or a list of them --------------------------


@pytest.mark.parametrize("kind", ["str", "path"])
def test_compress_a_single_path(kind: str, bundle) -> None:
    """Before: a str was iterated character by character ("s: no such file")."""
    source = str(SAMPLE) if kind == "str" else SAMPLE
    data = igpt_codec.compress(source, size=SIZE)
    (tokens,) = decoded_tokens(data)
    assert np.array_equal(tokens, tokens_of(SAMPLE, bundle))


def test_compress_a_single_pil_image_array_bytes_and_file(bundle) -> None:
    with Image.open(SAMPLE) as image:
        image.load()
        rgb = image.convert("RGB")
    expected = tokens_of(SAMPLE, bundle)
    array = np.asarray(rgb)
    for single in (rgb, array, SAMPLE.read_bytes(), io.BytesIO(SAMPLE.read_bytes())):
        (tokens,) = decoded_tokens(igpt_codec.compress(single, size=SIZE))
        assert np.array_equal(tokens, expected), type(single)


def test_compress_a_list_of_mixed_inputs(bundle) -> None:
    grey = np.full((5, 7), 200, dtype=np.uint8)
    rgba = np.zeros((6, 3, 4), dtype=np.uint8)
    inputs = [str(SAMPLE), grey, rgba, Image.new("RGB", (9, 2), "red")]
    data = igpt_codec.compress(inputs, size=SIZE)
    decoded = igpt_codec.decompress(data)
    assert [item.original_size for item in decoded] == [(321, 481), (7, 5), (3, 6), (9, 2)]
    assert [item.original_mode for item in decoded] == ["RGB", "L", "RGBA", "RGB"]
    assert np.array_equal(decoded[0].tokens, tokens_of(SAMPLE, bundle))
    assert np.array_equal(decoded[1].tokens, tokens_of(Image.new("L", (7, 5), 200), bundle))


def test_compress_a_generator() -> None:
    data = igpt_codec.compress((SAMPLE for _ in range(2)), size=SIZE)
    assert len(igpt_codec.decompress(data)) == 2


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4, 2), dtype=np.uint8),
        np.zeros((4,), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
    ],
)
def test_bad_arrays_are_input_errors(array: np.ndarray) -> None:
    with pytest.raises(igpt_codec.InputImageError, match="uint8"):
        igpt_codec.compress(array, size=SIZE)


def test_compress_refuses_other_types_and_nothing() -> None:
    with pytest.raises(TypeError, match="iterable"):
        igpt_codec.compress(3.5, size=SIZE)
    with pytest.raises(ValueError, match="no images"):
        igpt_codec.compress([], size=SIZE)


# --- issue 11, bug 3: decompress a path, bytes or a file object ----------------------------


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "two.igpt"
    path.write_bytes(igpt_codec.compress([SAMPLE, SAMPLE], size=SIZE))
    return path


def test_decompress_a_path_bytes_or_file(stream: Path) -> None:
    """Before: a str path raised AttributeError: 'str' object has no attribute 'read'."""
    expected = decoded_tokens(stream.read_bytes())
    assert len(expected) == 2
    with open(stream, "rb") as handle:
        inputs = [str(stream), stream, bytearray(stream.read_bytes()), handle]
        for data in inputs:
            got = decoded_tokens(data)
            assert all(map(np.array_equal, got, expected)), type(data)
    lazy = [item.tokens for item in igpt_codec.iter_decompress(str(stream))]
    assert all(map(np.array_equal, lazy, expected))


@pytest.mark.parametrize("data", [3, None, ["x.igpt"], io.StringIO("text")])
def test_decompress_refuses_other_types(data: object) -> None:
    with pytest.raises(TypeError):
        igpt_codec.decompress(data)  # type: ignore[arg-type]


def test_missing_paths_follow_one_rule(tmp_path: Path) -> None:
    """Issue 25: decompress('missing') raised FileNotFoundError while compress raised
    InputImageError. Now both are CodecErrors naming the path (the stream's is also an
    OSError with its errno, as before)."""
    missing = tmp_path / "missing.igpt"
    with pytest.raises(igpt_codec.CodecError, match=r"missing\.igpt: no such file") as caught:
        igpt_codec.decompress(missing)
    assert isinstance(caught.value, OSError) and caught.value.errno == 2
    with pytest.raises(igpt_codec.CodecError, match=r"missing\.png: no such file"):
        igpt_codec.compress(tmp_path / "missing.png", size=SIZE)


def test_decoded_images_compare_and_hash_by_value(stream: Path) -> None:
    """Issue 25 bug 6. Before: == raised "truth value of an array ... is ambiguous" and
    hash() raised TypeError."""
    first, second = igpt_codec.decompress(stream), igpt_codec.decompress(stream)
    assert first == second and first[0] == second[0]
    assert hash(first[0]) == hash(second[0]) and len({first[0], second[0]}) == 1
    assert first[0] != "not an image"
    other = igpt_codec.decompress(igpt_codec.compress(SAMPLE, size=SIZE - 1))[0]
    assert first[0] != other
    assert first[0].grid.shape == (SIZE, SIZE)


def test_size_with_full_is_refused_and_progress_is_reported() -> None:
    """Issue 25: compress(size=99, full=True) ignored the size; compress had no progress."""
    picture = Image.effect_noise((9, 7), 30).convert("RGB")
    with pytest.raises(ValueError, match="full=True codes each photo at its own size"):
        igpt_codec.compress(picture, size=SIZE, full=True)
    calls: list[tuple[int, int | None]] = []
    data = igpt_codec.compress(picture, full=True, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (63, 63)
    (decoded,) = igpt_codec.decompress(data)
    assert decoded.full and decoded.grid.shape == (7, 9)


def test_zero_image_stream_decodes_to_no_images() -> None:
    """A stream of only skippable records is valid: the API returns no images."""
    data = zero_image_stream()
    assert igpt_codec.decompress(data) == []
    assert list(igpt_codec.iter_decompress(io.BytesIO(data))) == []


def test_compress_each_gives_one_stream_per_input(bundle) -> None:
    pairs = list(api.compress_each([SAMPLE, np.zeros((3, 3, 3), np.uint8)], size=SIZE))
    assert len(pairs) == 2
    for data, summary in pairs:
        assert summary.images == 1 and summary.stream_bytes == len(data)
        assert summary.bits_per_token == 8 * len(data) / SIZE**2
        assert len(igpt_codec.decompress(data)) == 1


# --- names, errors, version --------------------------------------------------------------


def test_errors_and_version_are_importable_from_codec() -> None:
    import igpt_codec.core.errors
    import igpt_codec.format.errors

    for module in (igpt_codec.format.errors, igpt_codec.core.errors):
        for name in module.__all__:
            assert getattr(igpt_codec, name) is getattr(module, name)
    assert issubclass(igpt_codec.ModelNotFoundError, igpt_codec.BundleError)
    assert issubclass(igpt_codec.ModelNotFoundError, igpt_codec.ModelMismatchError)
    assert igpt_codec.__version__ == "0.1.0"
    assert set(igpt_codec.__all__) <= set(dir(igpt_codec))


def test_public_functions_document_inputs_and_errors() -> None:
    for name in ("compress", "decompress", "compress_to", "iter_decompress"):
        doc = getattr(igpt_codec, name).__doc__ or ""
        assert "Raises" in doc or "Raise" in doc or "raises" in doc, name
    assert "numpy" in (igpt_codec.compress.__doc__ or "")
    assert "path" in (igpt_codec.decompress.__doc__ or "")


def test_import_codec_does_not_load_onnxruntime() -> None:
    code = "import sys, igpt_codec; igpt_codec.CodecError; print('onnxruntime' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, check=True, timeout=120
    )
    assert result.stdout.strip() == b"False"


def test_decode_limits_are_the_callers() -> None:
    data = igpt_codec.compress([SAMPLE] * 3, size=1)
    assert len(igpt_codec.decompress(data, limits=igpt_codec.DecodeLimits(max_images=3))) == 3
    for call in (igpt_codec.decompress, lambda d, **k: list(igpt_codec.iter_decompress(d, **k))):
        with pytest.raises(igpt_codec.DecodeLimitError):
            call(data, limits=igpt_codec.DecodeLimits(max_images=2))
        with pytest.raises(igpt_codec.DecodeLimitError):
            call(data, limits=igpt_codec.DecodeLimits(max_tokens=2))


def test_concatenated_streams_of_two_models_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: `cat a.igpt b.igpt` is one input. The golden concatenation holds a stream
    of the tiny model and one of another: each is decoded with its own bundle."""
    import json

    golden = REPO / "tests" / "golden"
    monkeypatch.setenv("IGPT_CODEC_MODELS", str(golden / "models"))
    items = igpt_codec.decompress(golden / "concatenated" / "two_streams.igpt", golden / "model")
    expected = json.loads((golden / "expected.json").read_text())
    want = [
        record["tokens"]
        for name in ("tiny_one_24.igpt", "default_one_32.igpt")
        for record in expected[name]["records"]
    ]
    assert [item.tokens.ravel().tolist() for item in items] == want
