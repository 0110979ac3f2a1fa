// What a stream holds, without a model: the rows of the Python `info` command.
import { CODING_NAMES, VERSION } from './stream.js';

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** One row per image record, as `python cli.py info --json` gives them. */
export function recordInfo(record) {
  if (record.type === 'classical') {
    const bytes = record.fileLength;
    return {
      index: record.index, kind: 'full', width: record.width, height: record.height, mode: record.mode,
      side: null, tokens: record.tokens, codec: record.codecName, payload_bytes: bytes,
      payload_bits_per_token: (8 * bytes) / record.tokens, fingerprint: hex(record.fingerprint), coding: null,
      ...(record.name !== null ? { name: record.name } : {}),
    };
  }
  const full = record.type === 'full';
  const payload = full ? record.segments.reduce((n, s) => n + s.payload.length, 0) : record.payload.length;
  const row = {
    index: record.index, kind: full ? 'full' : 'thumbnail', width: record.width, height: record.height,
    mode: record.mode, side: full ? null : record.side, tokens: record.tokens,
  };
  if (full) {
    Object.assign(row, {
      segments: record.segments.length, chain_segments: record.chain, band_checks: record.bandChecks,
      linear_levels: record.linearLevels, context_rows: record.contextRows,
    });
  }
  Object.assign(row, {
    payload_bytes: payload, payload_bits_per_token: (8 * payload) / record.tokens,
    fingerprint: hex(record.fingerprint), coding: CODING_NAMES[record.coding] ?? String(record.coding),
  });
  if (record.name !== null) row.name = record.name;
  return row;
}

/** {format_version, records, images, tokens, stream_bytes, bits_per_token, stream_starts}. */
export function streamInfo(parsed, streamBytes) {
  const records = parsed.records.map((record) => ({ ...recordInfo(record), stream: record.stream }));
  const tokens = records.reduce((n, r) => n + r.tokens, 0);
  return {
    format_version: VERSION, records, images: records.length, tokens, stream_bytes: streamBytes,
    bits_per_token: tokens ? (8 * streamBytes) / tokens : null, stream_starts: parsed.streams.map((s) => s.offset),
  };
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The text `python cli.py info FILE` prints, line by line. */
export function infoLines(label, info) {
  const lines = [`${label}: IGP stream, format version ${info.format_version}`];
  let stream = 0;
  for (const row of info.records) {
    if (row.stream !== stream) {
      stream = row.stream;
      lines.push(`  stream ${stream + 1} (concatenated) from byte ${info.stream_starts[stream]}:`);
    }
    const coded = row.kind === 'full'
      ? `full-resolution palette image${row.codec ? ` stored as ${row.codec}` : ''}`
      : `${row.side}x${row.side} palette thumbnail`;
    lines.push(`  #${row.index}: ${row.width}x${row.height} ${row.mode} -> ${coded}, ${row.tokens} tokens, ` +
      `${row.payload_bytes} payload bytes (${row.payload_bits_per_token.toFixed(3)} payload bits/token), ` +
      `model ${row.fingerprint}${row.coding ? ` (${row.coding} coding)` : ''}`);
  }
  const perToken = info.tokens ? `: ${info.bits_per_token.toFixed(3)} bits/token (file)` : '';
  const streams = info.stream_starts.length > 1 ? ` in ${info.stream_starts.length} concatenated streams` : '';
  lines.push(`${label}: ${plural(info.images, 'image')}${streams}, ${plural(info.tokens, 'token')}, ${info.stream_bytes} bytes${perToken}`);
  return lines;
}
