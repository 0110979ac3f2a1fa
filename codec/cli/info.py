"""`igpt-codec info`: describe a stream without loading any model."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import click

from igpt_codec.cli.common import (
    STDIO,
    SUFFIX,
    CountingReader,
    NamedErrors,
    expand_inputs,
    label,
    open_input,
    plural,
    reports_errors,
)


@click.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "-r", "--recursive", is_flag=True, help="An INPUT directory means every .igpt file under it."
)
@reports_errors
def info(inputs: tuple[str, ...], as_json: bool, recursive: bool) -> None:
    """Describe streams (INPUT..., '-' for stdin) without loading any model.

    Read front to back: a record is shown as soon as it is read. bits/token is
    the whole file's (bytes x 8 / tokens); each record's coder payload is shown
    as payload bits/token. --json gives one object for one INPUT, a list of them
    for several.
    """
    names = expand_inputs(inputs, recursive, lambda p: p.name.endswith(SUFFIX))
    if not names:
        raise click.UsageError("no input: the directories given hold no .igpt file")
    if names.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) may be given only once")
    out = click.get_text_stream("stdout")
    several = len(names) > 1
    if as_json and several:
        out.write("[\n")
    for index, input_name in enumerate(names):
        if as_json and index:
            out.write(",\n")
        _describe_one(input_name, as_json)
    if as_json and several:
        out.write("]\n")
        out.flush()


def _describe_one(input_name: str, as_json: bool) -> None:
    from igpt_codec.core.files import regular_file_size
    from igpt_codec.format import iter_records

    name = label(input_name)
    version = _format_version()
    with NamedErrors(name), open_input(input_name) as handle:
        reader = CountingReader(handle)
        starts: list[int] = []  # byte offset of each concatenated stream
        records = iter_records(
            reader,
            length=regular_file_size(handle),
            on_stream=lambda offset, header: starts.append(offset),
        )
        rows = (
            {**_record_info(index, record), "stream": len(starts) - 1}
            for index, record in enumerate(records)
        )
        reader.starts = starts
        if as_json:
            _info_json(name, version, rows, reader)
        else:
            _info_text(name, version, rows, reader)


def _format_version() -> int | None:
    import igpt_codec.format as stream_format

    return getattr(stream_format, "VERSION", None)


def _info_text(name: str, version: int | None, rows: Iterator[dict], reader: Any) -> None:
    tokens = images = 0
    stream = 0
    for row in rows:
        if not images:
            click.echo(f"{name}: IGP stream, format version {version}")
        if row["stream"] != stream:
            stream = row["stream"]
            click.echo(f"  stream {stream + 1} (concatenated) from byte {reader.starts[stream]}:")
        images += 1
        tokens += row["tokens"]
        coded = (
            "full-resolution palette image"
            + (f" stored as {row['codec']}" if row.get("codec") else "")
            if row["kind"] == "full"
            else f"{row['side']}x{row['side']} palette thumbnail"
        )
        click.echo(
            f"  #{row['index']}: {row['width']}x{row['height']} {row['mode']} -> "
            f"{coded}, {row['tokens']} tokens, "
            f"{row['payload_bytes']} payload bytes "
            f"({row['payload_bits_per_token']:.3f} payload bits/token), "
            f"model {row['fingerprint']}" + (f" ({row['coding']} coding)" if row["coding"] else "")
        )
    if not images:
        click.echo(f"{name}: IGP stream, format version {version}")
    per_token = f": {8 * reader.count / tokens:.3f} bits/token (file)" if tokens else ""
    streams = f" in {len(reader.starts)} concatenated streams" if len(reader.starts) > 1 else ""
    click.echo(
        f"{name}: {plural(images, 'image')}{streams}, {plural(tokens, 'token')}, "
        f"{reader.count} bytes{per_token}"
    )


def _info_json(name: str, version: int | None, rows: Iterator[dict], reader: Any) -> None:
    """Written as the records arrive (memory bounded on any stream), then the totals.

    Nothing is written before the first record has been read and checked, so a file
    that is not a stream at all leaves stdout empty.
    """
    first = next(rows, None)
    out = click.get_text_stream("stdout")
    out.write(f'{{\n  "file": {json.dumps(name)},\n  "format_version": {json.dumps(version)},')
    out.write('\n  "records": [')
    tokens = images = 0
    for row in itertools.chain([first] if first else [], rows):
        out.write(("," if images else "") + "\n    " + json.dumps(row))
        images += 1
        tokens += row["tokens"]
    totals = {
        "streams": len(reader.starts),
        "images": images,
        "tokens": tokens,
        "stream_bytes": reader.count,
        "bits_per_token": 8 * reader.count / tokens if tokens else None,
    }
    out.write(("\n  " if images else "") + "],\n")
    body = json.dumps(totals, indent=2)[1:-1].strip("\n")
    out.write(body + "\n}\n")
    out.flush()


def _coding_name(head: Any) -> str | None:
    """ "exact", "exact-adaptive" or "exact-match" (coding 3: the longer-reach levels;
    all three the same bits on every machine) or "float32" (machine-bound), if recorded."""
    import igpt_codec.format as stream_format
    from igpt_codec.format import records

    coding = getattr(head, "coding", None)
    names = {
        getattr(stream_format, "CODING_EXACT", None): "exact",
        getattr(stream_format, "CODING_FLOAT32", None): "float32",
        getattr(stream_format, "CODING_ADAPTIVE", None): "exact-adaptive",
        records.CODING_MATCH: "exact-match",
    }
    return None if coding is None else names.get(coding, str(coding))


def _record_info(index: int, record: Any) -> dict[str, Any]:
    head = record.header
    if getattr(head, "codec_name", None) is not None:  # kinds 5 and 6: a classical file
        return {
            "index": index,
            "kind": "full",
            "width": head.width,
            "height": head.height,
            "mode": head.mode,
            "side": None,
            "tokens": head.token_count,
            "codec": head.codec_name,
            "payload_bytes": len(record.data),
            "payload_bits_per_token": 8 * len(record.data) / head.token_count,
            "fingerprint": head.fingerprint.hex(),
            "coding": None,
        }
    segments = getattr(record, "segments", None)
    if segments is not None:  # a full-resolution image (kinds 3 and 4)
        payload = sum(len(segment.payload) for segment in segments)
        return {
            "index": index,
            "kind": "full",
            "width": head.width,
            "height": head.height,
            "mode": head.mode,
            "side": None,
            "tokens": head.token_count,
            "segments": len(segments),
            "chain_segments": head.chain_segments,
            "band_checks": head.band_checks,
            "linear_levels": head.linear_levels,
            "context_rows": head.context_rows,
            "payload_bytes": payload,
            "payload_bits_per_token": 8 * payload / head.token_count,
            "fingerprint": head.fingerprint.hex(),
            "coding": _coding_name(head),
        }
    return {
        "index": index,
        "kind": "thumbnail",
        "width": head.width,
        "height": head.height,
        "mode": head.mode,
        "side": head.side,
        "tokens": head.token_count,
        "payload_bytes": len(record.payload),
        "payload_bits_per_token": 8 * len(record.payload) / head.token_count,
        "fingerprint": head.fingerprint.hex(),
        "coding": _coding_name(head),
    }
