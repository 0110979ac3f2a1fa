// Bundles with an attention span (contract exact-int-v1-span): the manifest's span and ring
// verified as Python's load_bundle verifies them, and the ring stepper of model.js: S slots,
// position p in slot p mod S, a call longer than S keeping its last S positions. The golden
// files tests/golden/span_*.igpt (golden.test.js) decode with it; this file proves the ring
// is what ran and that it holds the right positions in the right slots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { loadBundle, BundleError } from '../src/index.js';
import { canonicalJson, codingFields } from '../src/bundle.js';
import { Stepper, sessionFor, SOS, VOCAB } from '../src/model.js';
import { SPAN_MODEL_DIR as SPAN_DIR, spanBundle, tinyBundle } from '../support/helpers.js';

const sha = (bytes) => createHash('sha256').update(bytes).digest();

/** The span bundle with its manifest edited by `edit`; `refingerprint` recomputes the
 * fingerprint from the edited coding fields (so the checks after it are reached). */
function editedSpanBundle(edit, refingerprint = true) {
  const manifest = JSON.parse(readFileSync(path.join(SPAN_DIR, 'manifest.json'), 'utf8'));
  edit(manifest);
  if (refingerprint) {
    const digests = ['model.onnx', 'palette.npy'].map((n) => sha(readFileSync(path.join(SPAN_DIR, n))));
    digests.push(sha(canonicalJson(codingFields(manifest))));
    manifest.fingerprint = sha(Buffer.concat(digests)).subarray(0, 8).toString('hex');
  }
  const files = { 'manifest.json': new TextEncoder().encode(JSON.stringify(manifest)) };
  return loadBundle(async (name) => files[name] ?? new Uint8Array(readFileSync(path.join(SPAN_DIR, name))), 'edited');
}

test('a span bundle loads with its span; the fingerprint rule adds attention_span only where present', async () => {
  const span = await spanBundle();
  const tiny = await tinyBundle();
  assert.equal(span.attentionSpan, 64);
  assert.equal(span.manifest.io.cache_layout.ring, 64);
  assert.equal(tiny.attentionSpan, null);
  assert.equal(codingFields(span.manifest).model.attention_span, 64);
  assert.ok(!('attention_span' in codingFields(tiny.manifest).model));
  // The recomputation in editedSpanBundle is the loader's: an unedited manifest gives the same.
  assert.equal((await editedSpanBundle(() => {})).fingerprintHex, span.fingerprintHex);
});

test('span bundles are refused as Python refuses them', async () => {
  const cases = [
    // An edited span or contract is a fingerprint mismatch (both are coding fields).
    [(m) => { m.model.attention_span = 32; m.io.cache_layout.ring = 32; }, false, /fingerprint mismatch/],
    [(m) => { m.graph_contract = 'exact-int-v1'; }, false, /fingerprint mismatch/],
    [(m) => { delete m.model.attention_span; }, false, /fingerprint mismatch/],
    // Behind a recomputed fingerprint: the loader's own checks.
    [(m) => { m.io.cache_layout.ring = 32; }, false, /must give ring 64/],
    [(m) => { delete m.io.cache_layout.ring; }, false, /must give ring 64/],
    [(m) => { m.io.cache_layout.ring = true; m.model.attention_span = 1; }, true, /must give ring 1/],
    [(m) => { m.model.attention_span = 0; }, true, /attention_span must be a positive integer/],
    [(m) => { m.model.attention_span = 2.5; }, true, /attention_span must be a positive integer/],
    [(m) => { m.model.attention_span = '64'; }, true, /attention_span must be a positive integer/],
    [(m) => { m.model.attention_span = true; }, true, /attention_span must be a positive integer/],
    [(m) => { m.graph_contract = 'exact-int-v1'; }, true, /an attention span needs graph contract exact-int-v1-span/],
    [(m) => { delete m.model.attention_span; }, true, /graph contract exact-int-v1-span does not belong to profile exact-int-v1/],
    [(m) => { m.model.attention_span = null; }, true, /graph contract exact-int-v1-span does not belong/],
    [(m) => { m.graph_contract = 'exact-int-v2-span'; }, true, /is not the exact one/],
    [(m) => { m.profile = 'float32'; }, true, /is not the exact one/],
  ];
  for (const [edit, refingerprint, message] of cases) {
    await assert.rejects(editedSpanBundle(edit, refingerprint), (err) => err instanceof BundleError && message.test(err.message) && !err.message.includes('\n'), `${edit}`);
  }
});

/** Tables of `steps` single-token steps after a first call of `first` tokens (SOS, then
 * tokens), at batch 2 with different tokens per row; returns the stepper and every table. */
async function drive(bundle, first, steps) {
  const stepper = new Stepper(bundle, await sessionFor(bundle), 2);
  const token = (row, t) => (t * 37 + row * 101 + ((t * t) % 13)) % VOCAB;
  const ids = new Int32Array(2 * first);
  for (let row = 0; row < 2; row++) for (let t = 0; t < first; t++) ids[row * first + t] = t === 0 ? SOS : token(row, t);
  const positions = Int32Array.from({ length: first + steps }, (_, t) => (t * 7) % bundle.nPositions);
  const tables = [Int32Array.from(await stepper.run(ids, positions.subarray(0, first)))];
  for (let t = first; t < first + steps; t++) {
    const feed = Int32Array.of(token(0, t), token(1, t));
    tables.push(Int32Array.from(await stepper.run(feed, positions.subarray(t, t + 1))));
  }
  return { stepper, tables };
}

for (const [first, steps] of [[1, 200], [129, 70], [40, 100]]) {
  test(`the ring of S slots gives the linear cache's tables (a first call of ${first}, then ${steps} steps)`, async () => {
    const bundle = await spanBundle();
    const S = bundle.attentionSpan;
    const ring = await drive(bundle, first, steps);
    // The same graph over a linear cache (slot j holds position j): the same integers.
    const linear = await drive({ ...bundle, attentionSpan: null }, first, steps);
    assert.equal(ring.stepper.capacity, S);
    assert.equal(ring.stepper.keys[0].length, 2 * bundle.nHead * bundle.headDim * S);
    assert.ok(linear.stepper.capacity >= first + steps);
    ring.tables.forEach((t, i) => assert.deepEqual(t, linear.tables[i], `tables of call ${i}`));
    // Slot by slot: position p's keys and values in slot p mod S, for the last S positions.
    const { nHead: H, headDim: D } = bundle;
    const n = first + steps;
    const cap = linear.stepper.capacity;
    for (let i = 0; i < bundle.nLayer; i++) {
      for (let row = 0; row < 2 * H; row++) {
        for (let p = Math.max(0, n - S); p < n; p++) {
          const slot = p % S;
          for (let d = 0; d < D; d++) {
            assert.equal(ring.stepper.keys[i][(row * D + d) * S + slot], linear.stepper.keys[i][(row * D + d) * cap + p]);
            assert.equal(ring.stepper.values[i][(row * S + slot) * D + d], linear.stepper.values[i][(row * cap + p) * D + d]);
          }
        }
      }
    }
  });
}
