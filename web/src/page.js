// The page: pick or drop an .igpt file, decode it with a progress bar, show each image at
// its size (thumbnails also upscaled, pixelated) and what the file holds.
// ?check=a.igpt,b.igpt (files under /files/) decodes them and POSTs hashes to /report:
// the headless-Chromium test drives the page that way.
import { decode, readStream, streamInfo, infoLines, CodecError, BundleError, ModelMismatchError, PayloadError } from './index.js';
import { urlResolver } from './browser.js';
import { sessionFor, Stepper } from './model.js';

const $ = (id) => document.getElementById(id);
const model = urlResolver('models/');
const THUMBNAIL_VIEW = 256; // CSS pixels a thumbnail is scaled up to
let lastTimings = null;

/** Kind-5 WebP records: the browser decodes them, colour conversion off (SPEC.md). */
async function decodeWebp(file, width, height) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([file], { type: 'image/webp' }), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new PayloadError('embedded WebP does not decode');
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, width, height).data;
}

function say(text, isError = false) {
  $('message').textContent = text;
  $('message').className = isError ? 'error' : '';
}

/** Resolves at most every 50 ms on a timer, so the progress bar gets painted. */
function progressUpdater() {
  let last = 0;
  return (done, total) => {
    $('progress').value = total ? done / total : 1;
    const now = performance.now();
    if (now - last < 50) return undefined;
    last = now;
    return new Promise((resolve) => setTimeout(resolve, 0));
  };
}

function render(images, append) {
  const box = $('images');
  if (!append) box.replaceChildren();
  for (const image of images) {
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.getContext('2d').putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
    const figure = document.createElement('figure');
    const caption = document.createElement('figcaption');
    let text = `#${image.index}: ${image.width}×${image.height}`;
    if (image.kind === 'thumbnail') {
      const scale = Math.max(1, Math.floor(THUMBNAIL_VIEW / image.side));
      canvas.className = 'thumbnail';
      canvas.style.width = `${image.width * scale}px`;
      canvas.style.height = `${image.height * scale}px`;
      text += ` thumbnail of a ${image.originalWidth}×${image.originalHeight} ${image.mode} image (shown ×${scale})`;
    } else {
      text += ` full-resolution ${image.mode} image${image.storedAs ? ` (stored as ${image.storedAs})` : ''}`;
    }
    if (image.name) text += ` — ${image.name}`;
    caption.textContent = text;
    figure.append(canvas, caption);
    box.append(figure);
  }
}

function explain(err) {
  if (err instanceof ModelMismatchError) return `Missing model: ${err.message}. Put its bundle under models/<fingerprint>/ next to this page.`;
  if (err instanceof BundleError) return `The model bundle is unusable: ${err.message}`;
  if (err instanceof CodecError) return `This file is damaged or not an .igpt stream (${err.name}): ${err.message}`;
  return `Unexpected failure: ${err.message}`;
}

async function openBytes(label, bytes, append = false) {
  if (!append) $('images').replaceChildren();
  $('info').hidden = true;
  $('progress').value = 0;
  try {
    const info = streamInfo(readStream(bytes), bytes.length); // what it holds, before any model
    $('info').textContent = infoLines(label, info).join('\n');
    $('info').hidden = false;
    say(`Decoding ${info.images} image${info.images === 1 ? '' : 's'} (${info.tokens} tokens)…`);
    const started = performance.now();
    const { images, timings } = await decode(bytes, { model, decodeWebp, onProgress: progressUpdater() });
    lastTimings = timings;
    render(images, append);
    $('progress').value = 1;
    say(`${label}: ${images.length} image${images.length === 1 ? '' : 's'} decoded in ${((performance.now() - started) / 1000).toFixed(2)} s.`);
    return images;
  } catch (err) {
    say(explain(err), true);
    throw err;
  }
}

async function openFile(file) {
  await openBytes(file.name, new Uint8Array(await file.arrayBuffer())).catch(() => {});
}

$('picker').addEventListener('change', (e) => e.target.files[0] && openFile(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]);
});

async function rgbSha256(image) {
  const rgb = new Uint8Array(image.width * image.height * 3);
  for (let i = 0; i < image.width * image.height; i++) rgb.set(image.rgba.subarray(4 * i, 4 * i + 3), 3 * i);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', rgb));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Test mode: decode the named files (each shown in turn) and report hashes and timings. */
async function check(names, repeat) {
  const warmup = await ready;
  const results = [];
  for (const name of names) {
    const entry = { file: name };
    try {
      // "damaged:F" flips a bit of F; "nomodel:F" is a file whose model the server lacks.
      const [, how, file] = /^(?:(damaged|nomodel):)?(.*)$/.exec(name);
      const bytes = new Uint8Array(await (await fetch(file.includes('/') ? file : `files/${file}`)).arrayBuffer());
      if (how === 'damaged') bytes[bytes.length - 8] ^= 0x10;
      const runs = [];
      let images;
      for (let r = 0; r < repeat; r++) {
        const t0 = performance.now();
        images = await openBytes(name, bytes, r === repeat - 1 && names.length > 1);
        runs.push(performance.now() - t0);
        (entry.timings ||= []).push(lastTimings);
      }
      entry.ms = runs;
      entry.tokens = images.reduce((n, im) => n + im.tokens.length, 0);
      entry.images = await Promise.all(images.map(async (im) => ({ width: im.width, height: im.height, rgb_sha256: await rgbSha256(im) })));
    } catch (err) {
      entry.error = `${err.name}: ${err.message}`;
      entry.shown = $('message').textContent; // what the reader of the page sees
    }
    results.push(entry);
  }
  await fetch('report', { method: 'POST', body: JSON.stringify({ userAgent: navigator.userAgent, warmup, results }) });
}

/**
 * While the page waits for a file: load the default bundle (models/default/) and run a few
 * hundred model steps (up to 1,024 or 3 s), so the browser has compiled onnxruntime's WASM to optimised code
 * (measured: the first decode in a fresh page ran 2-4x slower than later ones). Optional:
 * without a default bundle the page simply starts cold.
 */
async function warmUp(maxSteps = 1024, maxMs = 3000) {
  const started = performance.now();
  try {
    const response = await fetch('models/default/manifest.json');
    if (!response.ok) return { ms: performance.now() - started, note: 'no default model: cold start' };
    const bundle = await model((await response.json()).fingerprint);
    if (!bundle) return { ms: performance.now() - started, note: 'default model not found' };
    const stepper = new Stepper(bundle, await sessionFor(bundle), 1);
    let steps = 0;
    while (steps < maxSteps && performance.now() - started < maxMs) {
      await stepper.run(Int32Array.of(steps ? steps % 512 : 512), Int32Array.of(steps));
      steps++;
    }
    return { ms: performance.now() - started, note: `bundle ${bundle.fingerprintHex} loaded, ${steps} steps` };
  } catch (err) {
    return { ms: performance.now() - started, note: `warm-up failed: ${err.message}` };
  }
}
const params = new URLSearchParams(location.search);
// ?warm=0 skips the warm-up (to measure a cold start).
const ready = params.get('warm') === '0' ? Promise.resolve({ ms: 0, note: 'no warm-up (?warm=0)' }) : warmUp();

if (params.get('check')) check(params.get('check').split(','), Number(params.get('repeat') || 1));
