#!/usr/bin/env node
// Headless Chromium loads index.html, decodes thumbnail golden files and
// full-resolution ones (of a model with an attention span too: the ring cache), and the pixels' sha256 must equal the Python decoder's
// (test/reference/python_pixels.json). Saves a screenshot of the page.
//   node scripts/browser-check.js [--screenshot PATH] [--repeat N] [--files a.igpt,b.igpt] [--json OUT] [--cold]
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './serve.js';
import { launchChromium } from './cdp.js';
import { createHash } from 'node:crypto';
import { bundleFromDir } from '../src/node.js';
import { colourTable } from '../src/palette.js';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = path.resolve(WEB, '..');
const GOLDEN = path.join(ROOT, 'tests', 'golden');
const MODELS = path.join(ROOT, 'codec', 'models');
// The shipped default, then the earlier defaults shipped beside it (codec/models/v4-..., v5-...),
// as the Python search path orders them.
const SHIPPED = [path.join(MODELS, 'default'), ...readdirSync(MODELS, { withFileTypes: true })
  .filter((e) => e.isDirectory() && e.name !== 'default').map((e) => path.join(MODELS, e.name)).sort()];

async function committedTokenPixels() {
  const golden = JSON.parse(await readFile(path.join(GOLDEN, 'expected.json'), 'utf8'));
  const out = {};
  for (const [name, entry] of Object.entries(golden)) {
    const dir = [...SHIPPED, path.join(GOLDEN, 'model'), path.join(GOLDEN, 'models', entry.fingerprint)];
    const bundle = await (async () => {
      for (const d of dir) {
        try {
          const b = await bundleFromDir(d);
          if (b.fingerprintHex === entry.fingerprint) return b;
        } catch { /* not this one */ }
      }
      return null;
    })();
    if (!bundle) continue;
    const colours = colourTable(bundle.palette);
    out[name] = entry.records.map((r) => {
      const tokens = r.tokens.flat();
      const rgb = Buffer.alloc(tokens.length * 3);
      tokens.forEach((t, i) => colours.subarray(3 * t, 3 * t + 3).forEach((v, k) => { rgb[3 * i + k] = v; }));
      const [width, height] = r.full ? r.size : [r.side, r.side];
      return { width, height, rgb_sha256: createHash('sha256').update(rgb).digest('hex') };
    });
  }
  return out;
}

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const files = option('--files', 'default_one_32.igpt,default_span128.igpt,default_v6.igpt,default_full_chain.igpt,default_classical.igpt,tiny_full_band_checks.igpt,span_thumbnails.igpt,span_full_chain.igpt,tiny_full_match.igpt,default_full_match.igpt,tiny_full_linear.igpt,default_full_linear.igpt,damaged:tiny_one_24.igpt,nomodel:default_full_adaptive.igpt').split(',');
// What the page must say for a file that cannot be decoded.
const EXPECTED_MESSAGES = { damaged: /damaged.*ChecksumError/, nomodel: /Missing model:.*e6446cc21e2dd7a1/ };
const repeat = Number(option('--repeat', '1'));
const screenshot = option('--screenshot', null);
const jsonOut = option('--json', null);
const timeoutMs = Number(option('--timeout', '300')) * 1000;
const warm = args.includes('--cold') ? '&warm=0' : '';

const expected = JSON.parse(await readFile(path.join(WEB, 'test', 'reference', 'python_pixels.json'), 'utf8'));
// Golden files newer than the Python reference data (kinds 5/6): the colours of their
// committed tokens, through the same colour table that matches Python's on every other file.
const fromTokens = new Set();
for (const [name, hashes] of Object.entries(await committedTokenPixels())) {
  if (!expected[name]) fromTokens.add(name);
  expected[name] ??= hashes;
}
let reportResolve;
const reported = new Promise((resolve) => { reportResolve = resolve; });
const server = await startServer({
  // Not models/e6446cc21e2dd7a1: default_full_adaptive.igpt stands for a file whose model is missing.
  modelDirs: [...SHIPPED, path.join(GOLDEN, 'model'), path.join(GOLDEN, 'models', '521cbedc2a206487'), path.join(GOLDEN, 'models', '12f32c72c4a71c93')],
  filesDir: GOLDEN,
  onReport: reportResolve,
});
const browser = await launchChromium();
let failures = 0;
try {
  const url = `http://127.0.0.1:${server.port}/index.html?check=${files.join(',')}&repeat=${repeat}${warm}`;
  await browser.page('Page.navigate', { url });
  let timer;
  const report = await Promise.race([
    reported,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no report from the page in ${timeoutMs / 1000} s; console: ${browser.consoleLines.slice(-3).join(' | ')}`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
  console.log(`chromium: ${report.userAgent}; page warm-up ${report.warmup?.ms?.toFixed(0)} ms (${report.warmup?.note})`);
  for (const result of report.results) {
    const want = expected[result.file];
    const how = /^(damaged|nomodel):/.exec(result.file)?.[1];
    if (how) {
      const ok = Boolean(result.error) && EXPECTED_MESSAGES[how].test(result.shown || '');
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${result.file}: the page says "${result.shown ?? '(decoded without error)'}"`);
      if (!ok) failures++;
      continue;
    }
    if (result.error) {
      console.log(`FAIL ${result.file}: ${result.error}`);
      failures++;
      continue;
    }
    const ms = result.ms.map((m) => m.toFixed(0)).join(', ');
    if (!want) { // a timing-only file (bench): nothing to compare
      console.log(`time ${result.file}: ${result.images.length} image(s), ${result.tokens} tokens, ${ms} ms`);
      continue;
    }
    const same = want.length === result.images.length && want.every((w, i) => w.rgb_sha256 === result.images[i].rgb_sha256 && w.width === result.images[i].width && w.height === result.images[i].height);
    console.log(`${same ? 'ok  ' : 'FAIL'} ${result.file}: ${result.images.length} image(s), ${result.tokens} tokens, ${ms} ms; pixels ${same ? 'equal' : 'differ from'} ${fromTokens.has(result.file) ? 'the colours of the committed tokens' : "Python's"}`);
    if (!same) failures++;
  }
  if (screenshot) {
    const { data } = await browser.page('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
    await mkdir(path.dirname(path.resolve(screenshot)), { recursive: true });
    await writeFile(screenshot, Buffer.from(data, 'base64'));
    console.log(`screenshot: ${screenshot}`);
  }
  if (jsonOut) await writeFile(jsonOut, JSON.stringify(report, null, 1) + '\n');
} catch (err) {
  console.log(`FAIL browser check: ${err.message}`);
  failures++;
} finally {
  await browser.close();
  await server.close();
}
process.exitCode = failures ? 1 : 0;
