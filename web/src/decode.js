// The public call: decode(bytes, {model}) -> the images of a stream as RGBA pixels,
// with what the file holds. Every defect is one of the error classes in errors.js;
// the whole stream is read and checked before any model step runs.
import { DecodeLimitError, InvalidFieldError, ModelMismatchError, CodecError } from './errors.js';
import { readStream, CODING_EXACT, CODING_ADAPTIVE, CODING_MATCH } from './stream.js';
import { streamInfo } from './info.js';
import { sessionFor } from './model.js';
import { decodeThumbnails } from './thumbnail.js';
import { decodeFull } from './fullres.js';
import { decodeClassical } from './classical.js';
import { colourTable, tokensToRgba } from './palette.js';

export const DEFAULT_LIMITS = { maxImages: 2 ** 16, maxTokens: 2 ** 26 };
const MAX_BATCH = 16;

async function resolveModel(model, fingerprintHex) {
  if (!model) throw new ModelMismatchError(`no model bundle given; the stream needs model ${fingerprintHex}`);
  const bundle = typeof model === 'function' ? await model(fingerprintHex) : model;
  if (!bundle) throw new ModelMismatchError(`no model bundle with fingerprint ${fingerprintHex} (the model this stream was coded with)`);
  if (bundle.fingerprintHex !== fingerprintHex) {
    throw new ModelMismatchError(`the stream was coded with model ${fingerprintHex}, but the bundle at hand is ${bundle.fingerprintHex}`);
  }
  return bundle;
}

/** Refuse records this bundle cannot decode, before any work (Python: _check_record). */
function checkRecord(record, bundle) {
  if (record.type === 'classical') return; // coding 0 checked by the reader; no model step
  const full = record.type === 'full';
  const allowed = full ? [CODING_EXACT, CODING_ADAPTIVE, CODING_MATCH] : [CODING_EXACT];
  if (!allowed.includes(record.coding)) {
    throw new ModelMismatchError(`record ${record.index} says coding ${record.coding}, but bundle ${bundle.fingerprintHex} is exact-int-v1`);
  }
  if (full && record.grid !== bundle.grid) {
    throw new InvalidFieldError(`record ${record.index} was cut into ${record.grid}-wide windows; the model's are ${bundle.grid}`);
  }
  if (!full && record.side > bundle.grid) {
    throw new InvalidFieldError(`record ${record.index} has side ${record.side}; the model has only ${bundle.nPositions} positions`);
  }
}

/** Consecutive thumbnails of one side, at most MAX_BATCH, decode as one batch. */
function batches(records) {
  const out = [];
  for (const record of records) {
    const last = out[out.length - 1];
    const joins = last && last[0].type === 'thumbnail' && last[0].stream === record.stream && last[0].side === record.side;
    if (record.type === 'thumbnail' && joins && last.length < MAX_BATCH) last.push(record);
    else out.push([record]);
  }
  return out;
}

/**
 * Decode a stream. options.model: a bundle from loadBundle, or an async function
 * fingerprintHex -> bundle. options.onProgress(doneTokens, totalTokens). options.decodeWebp
 * (file, width, height) -> RGBA bytes, for kind-5 WebP records (a page passes one).
 * Returns {info, images: [{index, kind, width, height, rgba, tokens, side, mode,
 * originalWidth, originalHeight, name}]}.
 */
export async function decode(input, options = {}) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const limits = { ...DEFAULT_LIMITS, ...(options.limits || {}) };
  const parsed = readStream(bytes);
  const info = streamInfo(parsed, bytes.length);
  if (!parsed.records.length) throw new CodecError('the stream holds no image this decoder can decode (only records it skips)');
  if (info.images > limits.maxImages) throw new DecodeLimitError(`the stream holds ${info.images} images; the limit is ${limits.maxImages}`);
  if (info.tokens > limits.maxTokens) throw new DecodeLimitError(`the stream holds ${info.tokens} tokens; the limit is ${limits.maxTokens}`);
  const t0 = performance.now();
  // One model per stream (concatenated streams may name several).
  const bundles = [];
  for (const stream of parsed.streams) bundles.push(await resolveModel(options.model, stream.fingerprintHex));
  for (const record of parsed.records) checkRecord(record, bundles[record.stream]);
  const t1 = performance.now();
  const sessions = [];
  for (const bundle of bundles) sessions.push(await sessionFor(bundle));
  const t2 = performance.now();
  const colours = bundles.map((bundle) => colourTable(bundle.palette));
  let done = 0;
  // onProgress may return a promise (a page uses one to let the browser paint).
  const onTokens = async (n) => {
    done += n;
    if (options.onProgress) await options.onProgress(done, info.tokens);
  };
  const images = [];
  for (const batch of batches(parsed.records)) {
    const { stream } = batch[0];
    const bundle = bundles[stream];
    const session = sessions[stream];
    let decoded;
    if (batch[0].type === 'classical') {
      decoded = [await decodeClassical(batch[0], colours[stream], options.decodeWebp)];
      await onTokens(batch[0].tokens);
    } else if (batch[0].type === 'full') {
      decoded = [await decodeFull(bundle, session, batch[0], onTokens)];
    } else {
      decoded = await decodeThumbnails(bundle, session, batch, onTokens);
    }
    batch.forEach((record, i) => {
      const full = record.type !== 'thumbnail'; // kinds 3+4 and 5+6 are full-resolution images
      const width = full ? record.width : record.side;
      const height = full ? record.height : record.side;
      images.push({
        index: record.index, kind: full ? 'full' : 'thumbnail', width, height,
        rgba: tokensToRgba(decoded[i], colours[stream]), tokens: decoded[i], side: full ? null : record.side,
        mode: record.mode, originalWidth: record.width, originalHeight: record.height, name: record.name,
        storedAs: record.type === 'classical' ? record.codecName : null,
      });
    });
  }
  // Where the time went, in ms: the bundle (fetched and verified), the session, the decode.
  const timings = { bundle: t1 - t0, session: t2 - t1, decode: performance.now() - t2 };
  return { info, images, timings };
}
