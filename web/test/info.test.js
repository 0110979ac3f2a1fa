// The `info` rows of the JS reader equal the Python command's (`info --json`), field for
// field, for every golden file: test/reference/python_info.json, made by
// scripts/make_reference.py --info (tests/test_cli_info_reference.py holds the Python
// command to the same file, so a field added on one side only fails one of the two).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readStream, streamInfo } from '../src/index.js';
import { GOLDEN, WEB, readJson } from '../support/helpers.js';

const pythonInfo = readJson(path.join(WEB, 'test', 'reference', 'python_info.json'));

test('info rows equal Python\'s info --json records for every golden file', () => {
  const names = Object.keys(pythonInfo);
  assert.ok(names.length >= 10, 'the reference covers the golden files');
  const fields = new Set();
  for (const name of names) {
    const bytes = new Uint8Array(readFileSync(path.join(GOLDEN, name)));
    const rows = streamInfo(readStream(bytes), bytes.length).records;
    assert.deepEqual(rows, pythonInfo[name], `${name}: info rows differ from Python's`);
    rows.forEach((row) => Object.keys(row).forEach((k) => fields.add(k)));
  }
  // The rows compared hold every kind of field: full-resolution layout, band checks, linear
  // levels, names, codecs; and linear_levels both ways.
  for (const k of ['chain_segments', 'band_checks', 'linear_levels', 'context_rows', 'codec', 'stream']) assert.ok(fields.has(k), k);
  const linear = Object.values(pythonInfo).flat().filter((row) => 'linear_levels' in row).map((row) => row.linear_levels);
  assert.deepEqual([...new Set(linear)].sort(), [false, true]);
});
