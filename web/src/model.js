// Steps the exact graph on onnxruntime-web (WASM, one thread) with the KV cache of the
// bundle's contract (manifest io.cache_layout): keys [B, H, D, capacity], values
// [B, H, capacity, D], capacity = 64 * max(1, ceil(past_length / 64)), unused positions
// zero; the graph returns the integer tables `freqs` [B, seq, 512] and only the new keys
// and values, which this runner writes into its buffers.
// A bundle with an attention span S (contract exact-int-v1-span) gets a ring of S slots
// instead: position p lives in slot p mod S, and the graph works out from past_length which
// position each slot holds (codec/runtime/ring_cache.py); a call longer than S keeps only
// its last S positions, the only ones a later token can still see.
import * as ort from 'onnxruntime-web';
import { BundleError } from './errors.js';
import { KV_CHUNK } from './bundle.js';

export const SOS = 512;
export const VOCAB = 512;
let configured = false;

function configure() {
  if (configured) return;
  ort.env.wasm.numThreads = 1; // the integers do not depend on it; one thread keeps the page light
  ort.env.logLevel = 'error';
  configured = true;
}

/** An onnxruntime-web session for a verified bundle (cached on the bundle object). */
export async function sessionFor(bundle) {
  configure();
  if (!bundle.session) {
    try {
      bundle.session = await ort.InferenceSession.create(bundle.modelBytes, {
        executionProviders: ['wasm'],
        graphOptimizationLevel: 'basic',
      });
    } catch (err) {
      throw new BundleError(`${bundle.label}: onnxruntime-web cannot load model.onnx (${String(err.message || err).split('\n')[0]})`);
    }
  }
  return bundle.session;
}

const capacityFor = (length) => KV_CHUNK * Math.max(1, Math.ceil(length / KV_CHUNK));

/** A batch of sequences fed together; every row gets the same positions. */
export class Stepper {
  constructor(bundle, session, batch) {
    this.bundle = bundle;
    this.session = session;
    this.batch = batch;
    this.length = 0;
    this.ring = bundle.attentionSpan ?? null; // S slots, or null: the linear cache
    this.capacity = this.ring ?? capacityFor(0);
    this.keys = [];
    this.values = [];
    for (let i = 0; i < bundle.nLayer; i++) {
      this.keys.push(new Float32Array(batch * bundle.nHead * bundle.headDim * this.capacity));
      this.values.push(new Float32Array(batch * bundle.nHead * bundle.headDim * this.capacity));
    }
  }

  /** Grow the buffers to the capacity of `length` positions, keeping the first `this.length`. */
  grow(length) {
    const capacity = capacityFor(length);
    if (capacity === this.capacity) return;
    const { nHead: H, headDim: D } = this.bundle;
    const old = this.capacity;
    for (let i = 0; i < this.keys.length; i++) {
      const keys = new Float32Array(this.batch * H * D * capacity);
      const values = new Float32Array(this.batch * H * D * capacity);
      for (let row = 0; row < this.batch * H; row++) {
        for (let d = 0; d < D; d++) {
          keys.set(this.keys[i].subarray((row * D + d) * old, (row * D + d) * old + this.length), (row * D + d) * capacity);
        }
        values.set(this.values[i].subarray(row * old * D, (row * old + this.length) * D), row * capacity * D);
      }
      this.keys[i] = keys;
      this.values[i] = values;
    }
    this.capacity = capacity;
  }

  /**
   * Feed `ids` (Int32Array [batch * seq], row-major) at `positions` (seq entries, shared by
   * every row). Returns the tables Int32Array [batch, seq, 512].
   */
  async run(ids, positions) {
    const seq = positions.length;
    const { batch } = this;
    const { nLayer, nHead: H, headDim: D, nPositions } = this.bundle;
    if (this.length + seq > nPositions) throw new RangeError(`the model has only ${nPositions} positions`);
    const idData = new BigInt64Array(batch * seq);
    const posData = new BigInt64Array(batch * seq);
    for (let i = 0; i < batch * seq; i++) {
      idData[i] = BigInt(ids[i]);
      posData[i] = BigInt(positions[i % seq]);
    }
    const feeds = {
      input_ids: new ort.Tensor('int64', idData, [batch, seq]),
      position_ids: new ort.Tensor('int64', posData, [batch, seq]),
      past_length: new ort.Tensor('int64', BigInt64Array.of(BigInt(this.length)), []),
    };
    for (let i = 0; i < nLayer; i++) {
      feeds[`past.${i}.key`] = new ort.Tensor('float32', this.keys[i], [batch, H, D, this.capacity]);
      feeds[`past.${i}.value`] = new ort.Tensor('float32', this.values[i], [batch, H, this.capacity, D]);
    }
    let out;
    try {
      out = await this.session.run(feeds);
    } catch (err) {
      throw new BundleError(`the model graph failed to run: ${String(err.message || err).split('\n')[0]}`);
    }
    const past = this.length;
    if (this.ring !== null) {
      this.writeRing(out, past, seq);
      this.length = past + seq;
      return out.freqs.data;
    }
    this.grow(past + seq);
    const cap = this.capacity;
    for (let i = 0; i < nLayer; i++) {
      const newKeys = out[`new.${i}.key`].data; // [B, H, D, seq]
      const newValues = out[`new.${i}.value`].data; // [B, H, seq, D]
      const keys = this.keys[i];
      const values = this.values[i];
      for (let row = 0; row < batch * H; row++) {
        for (let d = 0; d < D; d++) {
          const from = (row * D + d) * seq;
          const to = (row * D + d) * cap + past;
          for (let j = 0; j < seq; j++) keys[to + j] = newKeys[from + j];
        }
        values.set(newValues.subarray(row * seq * D, (row + 1) * seq * D), (row * cap + past) * D);
      }
    }
    this.length = past + seq;
    const freqs = out.freqs.data;
    return freqs;
  }

  /**
   * The new keys and values of positions past..past+seq-1 written into their ring slots
   * (position p in slot p mod S); of a call longer than the ring only the last S stay, as
   * the older ones would be overwritten by the later ones anyway.
   */
  writeRing(out, past, seq) {
    const { nLayer, nHead: H, headDim: D } = this.bundle;
    const S = this.ring;
    const first = Math.max(0, seq - S);
    for (let i = 0; i < nLayer; i++) {
      const newKeys = out[`new.${i}.key`].data; // [B, H, D, seq]
      const newValues = out[`new.${i}.value`].data; // [B, H, seq, D]
      const keys = this.keys[i];
      const values = this.values[i];
      for (let row = 0; row < this.batch * H; row++) {
        for (let j = first; j < seq; j++) {
          const slot = (past + j) % S;
          for (let d = 0; d < D; d++) keys[(row * D + d) * S + slot] = newKeys[(row * D + d) * seq + j];
          values.set(newValues.subarray((row * seq + j) * D, (row * seq + j + 1) * D), (row * S + slot) * D);
        }
      }
    }
  }
}

/** Position ids for the tokens of a side x side thumbnail (manifest `positions`). */
export function thumbnailPositions(side, layout, grid) {
  const out = new Int32Array(side * side);
  for (let i = 0; i < out.length; i++) out[i] = layout === 'grid' ? Math.floor(i / side) * grid + (i % side) : i;
  return out;
}
