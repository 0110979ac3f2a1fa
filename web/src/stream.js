// The container reader (format/SPEC.md): file header, record frames with their chained
// CRCs, and the bodies of kinds 1-4; unknown ancillary kinds are checked and skipped.
// It knows nothing of models or pixels: it yields records whose payloads a decoder reads.
import { crc32 } from './crc32.js';
import {
  BadMagicError, ChecksumError, InvalidFieldError, LengthOutOfRangeError, MissingEndMarkerError,
  PayloadError, TruncatedError, UnknownRecordKindError, UnsupportedVersionError,
} from './errors.js';
import { readVarint } from './varint.js';
import { layout, segmentCount } from './tiling.js';

export const MAGIC = [0x89, 0x49, 0x47];
export const VERSION = 2;
const V1_MAGIC = [0x89, 0x49, 0x47, 0x50, 0x0d, 0x0a, 0x1a, 0x0a];
export const HEADER_LEN = 12;
export const MAX_PAYLOAD = 2 ** 20;
export const MAX_FRAME = 2 ** 20 + 64;
const MAX_DIMENSION = 65535;

export const FINAL = 0x80;
export const ANCILLARY = 0x40;
export const KIND_THUMBNAIL = 1;
export const KIND_NAME = 2;
export const KIND_FULL = 3;
export const KIND_SEGMENT = 4;
export const KIND_CLASSICAL = 5;
export const KIND_CLASSICAL_PART = 6;
export const BAND_CHECKS = 0x01; // kind 3's features byte, bit 0: a check per band of a chain
export const LINEAR_LEVELS = 0x02; // bit 1 (codings 2 and 3): coding 2's levels as one linear combination (linear.js)
const KNOWN_FEATURES = BAND_CHECKS | LINEAR_LEVELS;
const PART_SIZE = 2 ** 20; // bytes of the embedded file per kind-5/6 record
const MAX_FILE_LENGTH = 2 ** 32 - 1;
export const CODING_EXACT = 0;
export const CODING_FLOAT32 = 1;
export const CODING_ADAPTIVE = 2;
export const CODING_MATCH = 3; // coding 2's tables refined again by match.js's levels (SPEC.md "Coding 3")
export const CODING_NAMES = { 0: 'exact', 1: 'float32', 2: 'exact-adaptive', 3: 'exact-match' }; // Python info's names
const CODED_MODES = ['RGB', 'L', 'RGBA'];

const kindOf = (head) => head & 0x0f;
const codingOf = (head) => (head >> 4) & 0x03;
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** Magic, version and fingerprint; raises the SPEC's errors for anything else. */
export function readFileHeader(bytes) {
  const start = bytes.subarray(0, 4);
  const magicOk = MAGIC.every((b, i) => i >= start.length || start[i] === b);
  if (!magicOk) throw new BadMagicError('not an IGP stream: bad magic');
  if (bytes.length < 4) throw new TruncatedError(`truncated stream: ${bytes.length} bytes, not even a file header`);
  const version = bytes[3];
  if (version !== VERSION) {
    if (V1_MAGIC.every((b, i) => bytes[i] === b)) {
      throw new UnsupportedVersionError('made by an older version: format 1 (igpt-codec 0.1) is read only by igpt-codec 0.1; this reader knows format 2');
    }
    throw new UnsupportedVersionError(`format version ${version} is not supported (this reader knows ${VERSION})`);
  }
  if (bytes.length < HEADER_LEN) throw new TruncatedError('truncated stream: the file header fingerprint is cut');
  const fingerprint = bytes.slice(4, HEADER_LEN);
  return { version, fingerprint, fingerprintHex: hex(fingerprint) };
}

/** Mode field shared by kinds 1 and 3: code 0..2, or 3 = spelled out (u8 M, ASCII). */
function readMode(body, pos, code, end) {
  if (code < 3) return { mode: CODED_MODES[code], next: pos };
  if (pos >= end) throw new InvalidFieldError('record ends inside its mode');
  const length = body[pos];
  if (length < 1 || length > 16) throw new InvalidFieldError(`mode length ${length} outside 1..16`);
  if (pos + 1 + length > end) throw new InvalidFieldError('record ends inside its mode');
  const chars = body.subarray(pos + 1, pos + 1 + length);
  if (chars.some((c) => c < 0x21 || c > 0x7e)) throw new InvalidFieldError('mode is not printable ASCII');
  const mode = String.fromCharCode(...chars);
  if (CODED_MODES.includes(mode)) throw new InvalidFieldError(`mode ${mode} must use its mode code`);
  return { mode, next: pos + 1 + length };
}

function readDimension(body, pos, end, what) {
  const { value, next } = readVarint(body, pos, MAX_DIMENSION, what, end, InvalidFieldError);
  if (value < 1) throw new InvalidFieldError(`${what} 0 is not a size`);
  return { value, next };
}

function checkCoding(head, kind) {
  const coding = codingOf(head);
  if ((coding === CODING_ADAPTIVE || coding === CODING_MATCH) && kind === KIND_THUMBNAIL) {
    throw new InvalidFieldError(`coding ${coding} is for full-resolution images, not thumbnails`);
  }
  return coding;
}

/** A non-empty payload never ends in 0x00 (the coder drops trailing zero bytes). */
function checkPayload(payload) {
  if (payload.length > MAX_PAYLOAD) throw new LengthOutOfRangeError(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  if (payload.length && payload[payload.length - 1] === 0) {
    throw new PayloadError('payload ends in a zero byte (not the coder\'s output)');
  }
}

function parseThumbnail(head, body) {
  const coding = checkCoding(head, KIND_THUMBNAIL);
  const end = body.length;
  if (end < 1) throw new InvalidFieldError('thumbnail record has no geometry byte');
  const side = (body[0] & 0x3f) + 1;
  const { mode, next: afterMode } = readMode(body, 1, body[0] >> 6, end);
  const width = readDimension(body, afterMode, end, 'width');
  const height = readDimension(body, width.next, end, 'height');
  const bodyEnd = height.next;
  if (end < bodyEnd + 2) throw new InvalidFieldError('record ends inside its token check');
  const tokenCheck = body[bodyEnd] | (body[bodyEnd + 1] << 8);
  const payload = body.slice(bodyEnd + 2);
  checkPayload(payload);
  return {
    type: 'thumbnail', head, coding, side, mode, width: width.value, height: height.value,
    tokens: side * side, headerBody: body.slice(0, bodyEnd), tokenCheck, payload,
  };
}

function parseName(body) {
  if (body.length < 1 || body.length > 255) throw new InvalidFieldError(`name of ${body.length} bytes (1..255)`);
  let name;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new InvalidFieldError('name is not UTF-8');
  }
  if (/[/\\\0]/.test(name) || name === '.' || name === '..') {
    throw new InvalidFieldError('name is not a base name');
  }
  return name;
}

function parseFullHeader(head, body) {
  if (head & ANCILLARY) throw new InvalidFieldError('a full-resolution header cannot be ancillary');
  const coding = checkCoding(head, KIND_FULL);
  const end = body.length;
  if (end < 1) throw new InvalidFieldError('full-resolution header is empty');
  const contextRows = body[0] & 0x1f;
  const chain = Boolean(body[0] & 0x20);
  const { mode, next: afterMode } = readMode(body, 1, body[0] >> 6, end);
  const width = readDimension(body, afterMode, end, 'width');
  const height = readDimension(body, width.next, end, 'height');
  let pos = height.next;
  if (end !== pos + 2 && end !== pos + 3) throw new InvalidFieldError('full-resolution header has the wrong length');
  const grid = body[pos];
  const segmentWindows = body[pos + 1];
  // The features byte (SPEC.md "Kind 3 body"): present only when a bit is set.
  const features = end === pos + 3 ? body[pos + 2] : 0;
  if (end === pos + 3 && features === 0) throw new InvalidFieldError("a full-resolution header's features byte is 0");
  if (features & ~KNOWN_FEATURES) throw new InvalidFieldError(`a full-resolution header asks for features 0x${features.toString(16)} this reader does not know`);
  const bandChecks = Boolean(features & BAND_CHECKS);
  if (bandChecks && !chain) throw new InvalidFieldError('band checks need the CHAIN layout');
  // LINEAR changes how coding 2's levels make a table: a coding without them cannot have it.
  const linearLevels = Boolean(features & LINEAR_LEVELS);
  if (linearLevels && coding !== CODING_ADAPTIVE && coding !== CODING_MATCH) {
    throw new InvalidFieldError(`linear levels need coding 2 or 3, not coding ${coding}`);
  }
  if (grid < 1) throw new InvalidFieldError('window side 0');
  if (contextRows > 24 || contextRows >= grid) {
    throw new InvalidFieldError(`context rows ${contextRows} (0..24, below the window side ${grid})`);
  }
  if (segmentWindows < 1) throw new InvalidFieldError('segment windows 0');
  const image = {
    type: 'full', head, coding, contextRows, chain, bandChecks, linearLevels, mode, width: width.value, height: height.value,
    grid, segmentWindows, headerBody: body.slice(), tokens: width.value * height.value,
  };
  image.segmentCount = segmentCount(image);
  image.bandCheckCount = bandChecks ? layout(image).bands.length - 1 : 0;
  return image;
}

const readU32 = (bytes, at) => (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;

/**
 * Where the FINAL record starting at `start` ends (the offset of its CRC), by the rule of
 * SPEC.md "Concatenated streams": the end of the input when its last 4 bytes are the CRC
 * of what precedes them; else the first point where a matching CRC is followed by the
 * magic (the next stream starts there); else the stream is damaged.
 */
function finalRecordEnd(bytes, start, chain) {
  const from = start + 1; // B starts after the head byte
  const available = bytes.length - from;
  const limit = MAX_FRAME + 8;
  const head = bytes.subarray(start, start + 1);
  if (available <= limit) {
    if (available < 4) throw new TruncatedError(`truncated stream: the final record at offset ${start} is cut`);
    const end = bytes.length - 4;
    if (crc32(bytes.subarray(start, end), chain) === readU32(bytes, end)) return end;
  }
  // Rule 2: scan for a CRC match followed by the magic, the CRC kept running byte by byte.
  let crc = crc32(head, chain);
  const last = Math.min(MAX_FRAME + 4, available - 7); // room for the CRC and the magic
  for (let e = 4; e <= last; e++) {
    const at = from + e;
    if (bytes[at] === MAGIC[0] && bytes[at + 1] === MAGIC[1] && bytes[at + 2] === MAGIC[2] && readU32(bytes, at - 4) === crc) return at - 4;
    crc = crc32(bytes.subarray(at - 4, at - 3), crc);
  }
  if (available > limit) throw new LengthOutOfRangeError(`final record at offset ${start} runs past the limit of ${MAX_FRAME} bytes`);
  throw new ChecksumError(`record at offset ${start}: CRC mismatch; the stream is truncated or has bytes appended`);
}

/**
 * The frame of the record whose head byte is at `pos`: {head, body, final, next}.
 * Checks length limits, the chained CRC (state.crc, updated) and the length's minimality.
 */
function readFrame(bytes, pos, state) {
  const start = pos;
  const head = bytes[pos];
  const kind = kindOf(head);
  const final = Boolean(head & FINAL);
  if (kind === 0) throw new InvalidFieldError(`record at offset ${start}: kind 0 is not a record`);
  const known = kind <= KIND_CLASSICAL_PART;
  if (!known && !(head & ANCILLARY)) {
    throw new UnknownRecordKindError(`record at offset ${start}: unknown must-understand record kind ${kind}`);
  }
  let body, frameEnd, crcAt, minimal = true;
  if (final) {
    frameEnd = finalRecordEnd(bytes, start, state.crc);
    body = bytes.subarray(pos + 1, frameEnd);
    crcAt = frameEnd;
  } else {
    const r = readVarint(bytes, pos + 1, MAX_FRAME, 'record length', bytes.length, LengthOutOfRangeError, true);
    minimal = r.minimal;
    if (r.value > bytes.length - r.next) {
      throw new LengthOutOfRangeError(`record at offset ${start}: length ${r.value} exceeds the ${bytes.length - r.next} bytes left`);
    }
    body = bytes.subarray(r.next, r.next + r.value);
    frameEnd = r.next + r.value;
    crcAt = frameEnd;
    if (crcAt + 4 > bytes.length) throw new TruncatedError(`truncated stream: the CRC of the record at offset ${start} is cut`);
  }
  const actual = crc32(bytes.subarray(start, frameEnd), state.crc);
  const stored = (bytes[crcAt] | (bytes[crcAt + 1] << 8) | (bytes[crcAt + 2] << 16) | (bytes[crcAt + 3] << 24)) >>> 0;
  if (stored !== actual) {
    throw new ChecksumError(`record at offset ${start}: CRC mismatch${final ? '; the stream is truncated or has bytes appended' : ''}`);
  }
  if (!minimal) throw new InvalidFieldError(`record at offset ${start}: its length is not minimally encoded`);
  state.crc = actual;
  return { head, kind, body, final, known, start, next: crcAt + 4 };
}

/** A kind-4 body: u16 token check, `bandCheckCount` u8 band checks (BAND_CHECKS), payload. */
function parseSegment(frame, bandCheckCount) {
  const { head, body } = frame;
  if (head & ANCILLARY) throw new InvalidFieldError(`record at offset ${frame.start}: a segment cannot be ancillary`);
  checkCoding(head, KIND_SEGMENT);
  if (body.length < 2) throw new InvalidFieldError(`record at offset ${frame.start} ends inside its token check`);
  if (body.length < 2 + bandCheckCount) {
    throw new InvalidFieldError(`record at offset ${frame.start} ends inside its ${bandCheckCount} band checks`);
  }
  const payload = body.slice(2 + bandCheckCount);
  checkPayload(payload);
  return { head, tokenCheck: body[0] | (body[1] << 8), bandChecks: body.slice(2, 2 + bandCheckCount), payload };
}

/** Kind 5 (SPEC.md "Kinds 5 and 6"): a classical image file (PNG or WebP) of the pixels. */
function parseClassical(frame) {
  const { head, body } = frame;
  if (head & ANCILLARY) throw new InvalidFieldError(`record at offset ${frame.start}: a classical image cannot be ancillary`);
  if (codingOf(head) !== CODING_EXACT) throw new InvalidFieldError(`record at offset ${frame.start}: a classical image has coding 0`);
  const end = body.length;
  if (end < 1) throw new InvalidFieldError('classical image record is empty');
  const codec = body[0] & 0x0f;
  if (body[0] & 0x30) throw new InvalidFieldError('classical image: reserved bits set');
  if (codec !== 1 && codec !== 2) throw new InvalidFieldError(`classical image codec ${codec} is reserved`);
  const { mode, next: afterMode } = readMode(body, 1, body[0] >> 6, end);
  const width = readDimension(body, afterMode, end, 'width');
  const height = readDimension(body, width.next, end, 'height');
  const length = readVarint(body, height.next, MAX_FILE_LENGTH, 'file length', end, InvalidFieldError);
  if (length.value < 1) throw new InvalidFieldError('classical image file length 0');
  const bodyEnd = length.next;
  const first = Math.min(length.value, PART_SIZE);
  if (end !== bodyEnd + 2 + first) throw new InvalidFieldError(`record at offset ${frame.start}: the first part of the file has the wrong length`);
  return {
    type: 'classical', head, coding: CODING_EXACT, codec, codecName: codec === 1 ? 'PNG' : 'WebP lossless', mode,
    width: width.value, height: height.value, tokens: width.value * height.value, fileLength: length.value,
    headerBody: body.slice(0, bodyEnd), tokenCheck: body[bodyEnd] | (body[bodyEnd + 1] << 8),
    parts: [body.slice(bodyEnd + 2)], partCount: Math.ceil(length.value / PART_SIZE),
  };
}

/**
 * Every image record of a stream, front to back, as an array; throws the first defect.
 * Returns {header, records}; each record has `index` (its image number) and `name`.
 */
export function readStream(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const records = [];
  const streams = [];
  let pos = 0;
  // Concatenated streams (SPEC.md): each with its own header, CRC chain and FINAL record.
  do {
    const header = readFileHeader(bytes.subarray(pos));
    streams.push({ offset: pos, ...header });
    pos = readOne(bytes, pos, header, streams.length - 1, records);
  } while (pos < bytes.length);
  return { header: streams[0], streams, records };
}

/** The records of the stream whose file header is at `offset`; returns where it ends. */
function readOne(bytes, offset, header, streamIndex, records) {
  const state = { crc: crc32(bytes.subarray(offset, offset + HEADER_LEN)) };
  let pos = offset + HEADER_LEN;
  let count = 0;
  let name = null;
  for (;;) {
    if (pos >= bytes.length) {
      if (count === 0) throw new TruncatedError('truncated stream: a file header and no record');
      throw new MissingEndMarkerError(`truncated stream: ends after ${count} records, none marked final`);
    }
    const frame = readFrame(bytes, pos, state);
    pos = frame.next;
    count++;
    let record = null;
    let final = frame.final;
    if (!frame.known) {
      if (name !== null) throw new InvalidFieldError(`record ${count - 1}: a name record names a skipped record`);
    } else if (frame.kind === KIND_NAME) {
      if (final) throw new InvalidFieldError(`name record at offset ${frame.start} ends the stream`);
      if (name !== null) throw new InvalidFieldError(`record ${count - 1}: two name records in a row`);
      name = parseName(frame.body);
      continue;
    } else if (frame.kind === KIND_SEGMENT) {
      throw new InvalidFieldError(`record ${count - 1}: a segment record without its full-image header`);
    } else if (frame.kind === KIND_CLASSICAL_PART) {
      throw new InvalidFieldError(`record ${count - 1}: a classical image part without its kind-5 record`);
    } else if (frame.kind === KIND_CLASSICAL) {
      record = parseClassical(frame);
      let left = record.fileLength - record.parts[0].length;
      while (record.parts.length < record.partCount) {
        if (final || pos >= bytes.length) throw new InvalidFieldError(`record ${count - 1}: the stream ends inside a classical image`);
        if (kindOf(bytes[pos]) !== KIND_CLASSICAL_PART) throw new InvalidFieldError(`record ${count}: kind ${kindOf(bytes[pos])} where part ${record.parts.length} of a classical image belongs`);
        const part = readFrame(bytes, pos, state);
        pos = part.next;
        count++;
        final = part.final;
        if ((part.head & ANCILLARY) || codingOf(part.head) !== CODING_EXACT) throw new InvalidFieldError(`record ${count - 1}: a classical image part has coding 0 and is not ancillary`);
        if (part.body.length !== Math.min(PART_SIZE, left)) throw new InvalidFieldError(`record ${count - 1}: a classical image part has the wrong length`);
        record.parts.push(part.body.slice());
        left -= part.body.length;
      }
    } else if (frame.kind === KIND_THUMBNAIL) {
      record = parseThumbnail(frame.head, frame.body);
    } else {
      record = parseFullHeader(frame.head, frame.body);
      if (final) throw new InvalidFieldError(`record ${count - 1}: a full-image header ends the stream`);
      record.segments = [];
      while (record.segments.length < record.segmentCount) {
        if (final) throw new InvalidFieldError(`record ${count - 1}: the stream ends inside a full-resolution image`);
        if (pos >= bytes.length) throw new MissingEndMarkerError(`truncated stream: ends inside a full-resolution image after ${count} records`);
        if (kindOf(bytes[pos]) !== KIND_SEGMENT) {
          throw new InvalidFieldError(`record ${count}: kind ${kindOf(bytes[pos])} where segment ${record.segments.length} of ${record.segmentCount} belongs`);
        }
        const segFrame = readFrame(bytes, pos, state);
        pos = segFrame.next;
        count++;
        final = segFrame.final;
        const segment = parseSegment(segFrame, record.bandCheckCount);
        if (codingOf(segFrame.head) !== record.coding) {
          throw new InvalidFieldError(`record ${count - 1}: a segment's coding differs from its image's`);
        }
        record.segments.push(segment);
      }
    }
    if (record) {
      record.index = records.length;
      record.name = name;
      record.fingerprint = header.fingerprint;
      record.stream = streamIndex;
      records.push(record);
      name = null;
    }
    if (final) return pos;
  }
}
