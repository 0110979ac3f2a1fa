// A model bundle (model.onnx + palette.npy + manifest.json), verified the way the Python
// loader verifies it: every file against the manifest's sha256, and the fingerprint
// recomputed from those hashes and the coding fields, so a stream's fingerprint names
// exactly these bytes. Files come from a `readFile(name) -> Promise<Uint8Array>`, so the
// same code loads from a directory (Node) or a URL (browser).
import { BundleError } from './errors.js';
import { readPalette } from './palette.js';

const MODEL_FILE = 'model.onnx';
const PALETTE_FILE = 'palette.npy';
const MANIFEST_FILE = 'manifest.json';
export const KV_CHUNK = 64;
const EXACT_PROFILE = 'exact-int-v1';
const SPAN_CONTRACT = 'exact-int-v1-span';

async function sha256(bytes) {
  return new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
}
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const fromHex = (text) => Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16));

/** Python's json.dumps(value, sort_keys=True, separators=(',', ':')) for plain JSON data. */
function canonicalJson(value) {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  if (typeof value === 'string') {
    return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  }
  return JSON.stringify(value);
}

/** The manifest entries that decide the numbers (covered by the fingerprint). */
function codingFields(manifest) {
  const model = manifest.model && typeof manifest.model === 'object' ? manifest.model : {};
  const io = manifest.io && typeof manifest.io === 'object' ? manifest.io : {};
  const pick = (obj, keys) => Object.fromEntries(keys.map((k) => [k, obj[k] ?? null]));
  return {
    bundle_format_version: manifest.bundle_format_version ?? null,
    profile: manifest.profile ?? null,
    graph_contract: manifest.graph_contract ?? null,
    positions: manifest.positions ?? null,
    // attention_span only where the manifest has it (as Python's coding_fields): bundles
    // without a span keep the fingerprints they had.
    model: pick(model, ['n_layer', 'n_head', 'head_dim', 'n_positions', ...(Object.hasOwn(model, 'attention_span') ? ['attention_span'] : [])]),
    io: pick(io, ['inputs', 'outputs']),
  };
}

function expectedIo(nLayer) {
  const inputs = ['input_ids', 'position_ids', 'past_length'];
  const outputs = ['freqs'];
  for (let i = 0; i < nLayer; i++) {
    inputs.push(`past.${i}.key`, `past.${i}.value`);
    outputs.push(`new.${i}.key`, `new.${i}.value`);
  }
  return { inputs, outputs };
}

/**
 * Read and verify a bundle. `label` names it in errors. Returns
 * {fingerprint, fingerprintHex, manifest, modelBytes, palette, nLayer, nHead, headDim, nPositions, grid,
 * layout, attentionSpan (S, or null: full attention over the linear cache)}.
 */
export async function loadBundle(readFile, label = 'model bundle') {
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await readFile(MANIFEST_FILE)));
  } catch (err) {
    throw new BundleError(`${label}: no readable ${MANIFEST_FILE} (${err.message})`);
  }
  if (manifest.bundle_format_version !== 2) throw new BundleError(`${label}: unsupported bundle format version ${manifest.bundle_format_version}`);
  if (manifest.profile !== EXACT_PROFILE || (manifest.graph_contract !== EXACT_PROFILE && manifest.graph_contract !== SPAN_CONTRACT)) {
    throw new BundleError(`${label}: profile ${manifest.profile} (graph contract ${manifest.graph_contract}) is not the exact one (${EXACT_PROFILE}, or ${SPAN_CONTRACT} with an attention span) this decoder runs`);
  }
  if (manifest.positions !== 'grid' && manifest.positions !== 'raster') throw new BundleError(`${label}: unknown position layout ${manifest.positions}`);
  const files = manifest.files;
  if (!files || typeof files !== 'object' || !files[MODEL_FILE] || !files[PALETTE_FILE]) {
    throw new BundleError(`${label}: manifest lists no ${MODEL_FILE} and ${PALETTE_FILE}`);
  }
  const names = [MODEL_FILE, PALETTE_FILE, ...Object.keys(files).filter((n) => n !== MODEL_FILE && n !== PALETTE_FILE).sort()];
  const contents = {};
  const digests = [];
  for (const name of names) {
    let bytes;
    try {
      bytes = await readFile(name);
    } catch (err) {
      throw new BundleError(`${label}: missing ${name} (${err.message})`);
    }
    const digest = await sha256(bytes);
    if (toHex(digest) !== files[name].sha256) throw new BundleError(`${label}: ${name} does not match the sha256 in its manifest`);
    contents[name] = bytes;
    digests.push(digest);
  }
  digests.push(await sha256(new TextEncoder().encode(canonicalJson(codingFields(manifest)))));
  const joined = new Uint8Array(digests.length * 32);
  digests.forEach((d, i) => joined.set(d, 32 * i));
  const fingerprint = (await sha256(joined)).slice(0, 8);
  if (toHex(fingerprint) !== manifest.fingerprint) {
    throw new BundleError(`${label}: fingerprint mismatch: manifest says ${manifest.fingerprint}, files and coding fields give ${toHex(fingerprint)}`);
  }
  const model = manifest.model || {};
  const [nLayer, nHead, headDim, nPositions] = ['n_layer', 'n_head', 'head_dim', 'n_positions'].map((k) => model[k]);
  if (![nLayer, nHead, headDim, nPositions].every((v) => Number.isInteger(v) && v > 0)) throw new BundleError(`${label}: manifest model shape is incomplete`);
  const grid = Math.round(Math.sqrt(nPositions));
  if (grid * grid !== nPositions) throw new BundleError(`${label}: n_positions ${nPositions} is not a square grid`);
  const io = expectedIo(nLayer);
  if (JSON.stringify(manifest.io?.inputs) !== JSON.stringify(io.inputs) || JSON.stringify(manifest.io?.outputs) !== JSON.stringify(io.outputs)) {
    throw new BundleError(`${label}: manifest io names do not follow the exact-int-v1 contract`);
  }
  if (manifest.io?.cache_layout?.chunk !== KV_CHUNK) throw new BundleError(`${label}: cache chunk is not ${KV_CHUNK}`);
  // The attention span S (contract exact-int-v1-span): the cache is a ring of S slots
  // (model.js). Refused as Python's load_bundle refuses it.
  const span = model.attention_span ?? null;
  if (span !== null && !(Number.isInteger(span) && span >= 1)) throw new BundleError(`${label}: manifest model.attention_span must be a positive integer`);
  if (span !== null && manifest.graph_contract !== SPAN_CONTRACT) throw new BundleError(`${label}: an attention span needs graph contract ${SPAN_CONTRACT}`);
  if (span === null && manifest.graph_contract !== EXACT_PROFILE) throw new BundleError(`${label}: graph contract ${manifest.graph_contract} does not belong to profile ${EXACT_PROFILE}`);
  if (span !== null && manifest.io.cache_layout.ring !== span) throw new BundleError(`${label}: manifest io.cache_layout must give ring ${span} (the span)`);
  return {
    label, manifest, fingerprint, fingerprintHex: toHex(fingerprint),
    modelBytes: contents[MODEL_FILE], palette: readPalette(contents[PALETTE_FILE]),
    nLayer, nHead, headDim, nPositions, grid, layout: manifest.positions, attentionSpan: span,
  };
}

export { fromHex, toHex, canonicalJson, codingFields };
