// Kinds 3 and 4: a full-resolution image decoded window group by window group
// (format/SPEC.md "Kinds 3 and 4", "Coding 2", "Coding 3", "Linear levels"), each segment re-encoded to prove its
// payload canonical and checked against its segment token check, and with BAND_CHECKS
// each band of a chain against its band check as soon as it is decoded.
import { PayloadError, TokenChecksumError } from './errors.js';
import { RangeDecoder, RangeEncoder, sameBytes } from './rangecoder.js';
import { Stepper, SOS, VOCAB } from './model.js';
import { cumulative } from './tables.js';
import { SegmentCheck } from './checks.js';
import { layout, segmentOf, cellPositions } from './tiling.js';
import { AdaptiveMixer, OUTSIDE } from './adaptive.js';
import { LinearMixer } from './linear.js';
import { MatchMixer, windowTemplate } from './match.js';
import { CODING_ADAPTIVE, CODING_MATCH } from './stream.js';

/**
 * One segment's decoder, its shadow encoder, its running check, the tokens of the band being
 * decoded (coding order) and the bands it has finished.
 */
function openSegment(record, index) {
  const segment = record.segments[index];
  return {
    index, segment, decoder: new RangeDecoder(segment.payload), shadow: new RangeEncoder(),
    check: new SegmentCheck(record, segment, index), tokens: [], bands: 0,
  };
}

/** A band of a segment decoded: its tokens join the check; with BAND_CHECKS, band k's must match. */
function closeBand(record, seg) {
  seg.check.add(seg.tokens);
  seg.tokens = [];
  const k = seg.bands++;
  const checks = seg.segment.bandChecks;
  if (k < checks.length && seg.check.bandValue !== checks[k]) {
    throw new TokenChecksumError(`record ${record.index}: segment ${seg.index}: the decoded tokens fail band ${k}'s check: the record is damaged, or the model computes other numbers than the encoder's`);
  }
}

function closeSegment(record, seg) {
  if (!sameBytes(seg.shadow.finish(), seg.segment.payload)) {
    throw new PayloadError(`record ${record.index}: segment ${seg.index}'s payload is not the encoder's canonical output for the tokens it decodes to`);
  }
  if (seg.check.value !== seg.segment.tokenCheck) {
    throw new TokenChecksumError(`record ${record.index}: segment ${seg.index} fails its token check: the record is damaged, or the model computes other numbers than the encoder's`);
  }
}

/** The four neighbours (W, N, NW, NE) of cell `cell` in a window of width w. */
function neighbours(cells, cell, w) {
  const r = Math.floor(cell / w);
  const c = cell % w;
  const at = (rr, cc) => (rr < 0 || cc < 0 || cc >= w ? OUTSIDE : cells[rr * w + cc]);
  return [at(r, c - 1), at(r - 1, c), at(r - 1, c - 1), at(r - 1, c + 1)];
}

/**
 * A chain's mixer: coding 2's three levels (with the header's LINEAR feature, linear.js's
 * table arithmetic over the same state), then for coding 3 match.js's six on their output,
 * both from the state before the step and both learning its symbols after it
 * (codec/core/mixers.py mixer_for). Null for coding 0: the model's tables as they are.
 */
function mixerFor(coding, linearLevels) {
  if (coding !== CODING_ADAPTIVE && coding !== CODING_MATCH) return null;
  const adaptive = linearLevels ? new LinearMixer() : new AdaptiveMixer();
  return { adaptive, match: coding === CODING_MATCH ? new MatchMixer() : null };
}

/** One step's tables through the mixer: {tables, steps} (what update needs, per stage). */
function mixTables(mixer, tables, cells, live, cell, w) {
  const first = mixer.adaptive.tables(tables, live.map((b) => neighbours(cells[b], cell, w)));
  if (!mixer.match) return { tables: first.tables, steps: [first.step] };
  const { size } = mixer.match;
  const second = mixer.match.tables(first.tables, live.map((b) => windowTemplate(cells[b], cell, w, size)));
  return { tables: second.tables, steps: [first.step, second.step] };
}

function mixUpdate(mixer, steps, symbols) {
  mixer.adaptive.update(steps[0], symbols);
  if (mixer.match) mixer.match.update(steps[1], symbols);
}

/**
 * Decode one band's group of windows into `image` (Uint16Array W*H): the known rows
 * and SOS go through the model in one call, then one step per cell.
 */
async function decodeGroup(ctx, band, columnIndexes, seg, mixer) {
  const { bundle, session, plan, record, image, positions, onTokens } = ctx;
  const { w } = plan;
  const { width } = record;
  const batch = columnIndexes.length;
  const nCells = band.rows * w;
  const x0s = columnIndexes.map((c) => plan.columns[c]);
  const real = x0s.map((x0) => Math.min(w, width - x0));
  const cells = x0s.map(() => new Int32Array(nCells));
  // Context rows from the image; padding cells repeat the row's last real token.
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < band.known; r++) {
      const rowStart = (band.top + r) * width + x0s[b];
      for (let c = 0; c < w; c++) cells[b][r * w + c] = image[rowStart + Math.min(c, real[b] - 1)];
    }
  }
  const first = band.known * w;
  const ids = new Int32Array(batch * (first + 1));
  for (let b = 0; b < batch; b++) {
    ids[b * (first + 1)] = SOS;
    ids.set(cells[b].subarray(0, first), b * (first + 1) + 1);
  }
  const stepper = new Stepper(bundle, session, batch);
  let freqs = await stepper.run(ids, positions.subarray(0, first + 1));
  let rowStride = (first + 1) * VOCAB; // the tables of the last position fed
  let rowOffset = first * VOCAB;
  const feed = new Int32Array(batch);
  for (let cell = first; cell < nCells; cell++) {
    const col = cell % w;
    const live = [];
    for (let b = 0; b < batch; b++) if (col < real[b]) live.push(b);
    if (live.length) {
      let tables = live.map((b) => freqs.subarray(b * rowStride + rowOffset, b * rowStride + rowOffset + VOCAB));
      let steps = null;
      if (mixer) ({ tables, steps } = mixTables(mixer, tables, cells, live, cell, w));
      const symbols = [];
      for (let i = 0; i < live.length; i++) {
        const { symbol, low, high, total } = seg.decoder.decode(cumulative(tables[i]));
        seg.shadow.encode(low, high, total);
        seg.tokens.push(symbol);
        cells[live[i]][cell] = symbol;
        symbols.push(symbol);
      }
      if (mixer) mixUpdate(mixer, steps, symbols);
      await onTokens(live.length);
    }
    for (let b = 0; b < batch; b++) {
      if (col >= real[b]) cells[b][cell] = cells[b][cell - col + real[b] - 1];
    }
    if (cell + 1 < nCells) {
      for (let b = 0; b < batch; b++) feed[b] = cells[b][cell];
      freqs = await stepper.run(feed, positions.subarray(cell + 1, cell + 2));
      rowStride = VOCAB;
      rowOffset = 0;
    }
  }
  for (let b = 0; b < batch; b++) {
    for (let r = band.known; r < band.rows; r++) {
      const rowStart = (band.top + r) * width + x0s[b];
      for (let c = 0; c < real[b]; c++) image[rowStart + c] = cells[b][r * w + c];
    }
  }
}

/** Tokens (Uint16Array, raster order, width x height) of a full-resolution record. */
export async function decodeFull(bundle, session, record, onTokens) {
  const plan = layout(record);
  const image = new Uint16Array(record.width * record.height);
  const positions = cellPositions(plan.w, plan.h, record.grid);
  const ctx = { bundle, session, plan, record, image, positions, onTokens };
  const mixers = plan.groups.map(() => mixerFor(record.coding, record.linearLevels));
  const open = new Map(); // segment index -> its decoder state
  for (let b = 0; b < plan.bands.length; b++) {
    for (let g = 0; g < plan.groups.length; g++) {
      const index = segmentOf(plan, b, g);
      if (!open.has(index)) open.set(index, openSegment(record, index));
      await decodeGroup(ctx, plan.bands[b], plan.groups[g], open.get(index), mixers[g]);
      closeBand(record, open.get(index));
      const last = plan.chain ? b === plan.bands.length - 1 : true;
      if (last) {
        closeSegment(record, open.get(index));
        open.delete(index);
      }
    }
  }
  return image;
}
