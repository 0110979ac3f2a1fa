// Public entry points of the decoder (browser and Node alike).
export { decode, DEFAULT_LIMITS } from './decode.js';
export { loadBundle } from './bundle.js';
export { readStream } from './stream.js';
export { streamInfo, infoLines } from './info.js';
export * from './errors.js';
