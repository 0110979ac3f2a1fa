"""Find the model bundle a stream names by its fingerprint.

A stream stores only the fingerprint of the model that coded it, so a decoder
looks the bundle up, in this order:

1. the bundle the caller gives (`--model DIR`, `model=`), if any;
2. the bundle shipped with the package (`codec/models/default`), then the earlier
   defaults shipped beside it (the other subdirectories of `codec/models/`, by name), so
   files written by an earlier release keep decoding after the default changes;
3. every subdirectory of each directory listed in the environment variable
   `IGPT_CODEC_MODELS` (separated by `os.pathsep`, ':' on POSIX), in order;
4. every subdirectory of the user cache directory,
   `$XDG_CACHE_HOME/igpt-codec/models` (default `~/.cache/igpt-codec/models`).

A candidate matches when its `manifest.json` names the fingerprint; it is then
loaded with `load_bundle`, which recomputes the fingerprint from the files'
hashes, so a manifest that lies is caught there. Only a matching candidate is
hashed, so a long search path costs one small JSON read per bundle. When
nothing matches, `ModelNotFoundError` names the fingerprint and every place
searched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from igpt_codec.core.errors import BundleError
from igpt_codec.format.errors import ModelMismatchError
from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR, Bundle, load_bundle
from igpt_codec.runtime.contract import MANIFEST_FILE

ENV_VAR = "IGPT_CODEC_MODELS"
MAX_MANIFEST_BYTES = 1 << 20
"""A manifest larger than this is not a bundle's (they are a few KiB); skipped unread."""


class ModelNotFoundError(ModelMismatchError, BundleError):
    """No bundle on the search path has the fingerprint a stream was coded with.

    A ModelMismatchError (the bundle at hand, if any, is another model) and a
    BundleError (the bundle needed is missing)."""


def cache_dir() -> Path:
    """The per-user directory searched last: $XDG_CACHE_HOME/igpt-codec/models."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "igpt-codec" / "models"


def search_dirs() -> list[Path]:
    """Directories whose subdirectories are searched: $IGPT_CODEC_MODELS, then the cache."""
    listed = os.environ.get(ENV_VAR, "")
    dirs = [Path(entry).expanduser() for entry in listed.split(os.pathsep) if entry]
    return [*dirs, cache_dir()]


def manifest_fingerprint(bundle_dir: Path) -> str | None:
    """The fingerprint a bundle directory's manifest claims (unverified), or None."""
    path = Path(bundle_dir) / MANIFEST_FILE
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    value = manifest.get("fingerprint") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def shipped_earlier() -> list[Path]:
    """Earlier defaults shipped with the package: the subdirectories of codec/models/
    other than default/, by name."""
    try:
        children = DEFAULT_BUNDLE_DIR.parent.iterdir()
        return sorted(p for p in children if p.is_dir() and p.name != DEFAULT_BUNDLE_DIR.name)
    except OSError:
        return []


def candidates(model: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Bundle directories in search order (the given one, the default, the search dirs)."""
    if model is not None:
        yield Path(model)
    yield DEFAULT_BUNDLE_DIR
    yield from shipped_earlier()
    for directory in search_dirs():
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir())
        except OSError:
            continue
        yield from children


def describe_search(model: str | os.PathLike[str] | None = None) -> str:
    """The places searched, for an error message."""
    places = []
    if model is not None:
        claimed = manifest_fingerprint(Path(model))
        places.append(f"the given bundle {model} (model {claimed or 'unknown'})")
    places.append(f"the default bundle {DEFAULT_BUNDLE_DIR}")
    places.extend(f"the earlier default {p}" for p in shipped_earlier())
    listed = os.environ.get(ENV_VAR)
    places.append(f"${ENV_VAR}={listed}" if listed else f"${ENV_VAR} (not set)")
    places.append(str(cache_dir()))
    return "; ".join(places)


def find_bundle(
    fingerprint: bytes,
    model: str | os.PathLike[str] | Bundle | None = None,
) -> Bundle:
    """The verified bundle whose fingerprint is `fingerprint`.

    `model` (a directory or a loaded Bundle) is tried first; a directory that does
    not exist is a BundleError, not skipped. Raises ModelNotFoundError when no
    candidate matches, or the BundleError of a
    candidate whose manifest matched but whose files failed verification (when
    no other candidate matched).
    """
    wanted = bytes(fingerprint).hex()
    if isinstance(model, Bundle):
        if model.fingerprint.hex() == wanted:
            return model
        model = model.path
    elif model is not None and not Path(model).is_dir():
        raise BundleError(f"no model bundle at {model} (directory not found)")
    broken: BundleError | None = None
    seen: set[str] = set()
    for directory in candidates(model):
        key = os.path.realpath(directory)
        if key in seen:
            continue
        seen.add(key)
        if manifest_fingerprint(directory) != wanted:
            continue
        try:
            bundle = load_bundle(directory)
        except BundleError as exc:
            broken = broken or exc
            continue
        if bundle.fingerprint.hex() == wanted:
            return bundle
    if broken is not None:
        raise broken
    raise ModelNotFoundError(
        f"no model bundle with fingerprint {wanted} found; searched {describe_search(model)}. "
        f"Put the bundle in a subdirectory of one of them or pass --model DIR"
    )


def default_fingerprint() -> str | None:
    """The shipped bundle's fingerprint as its manifest states it (for --version)."""
    return manifest_fingerprint(DEFAULT_BUNDLE_DIR)
