#!/usr/bin/env node
// A small static server for the page, on 127.0.0.1 only: web/ itself (index.html, src/,
// node_modules/onnxruntime-web/dist/), model bundles at /models/<fingerprint>/, optionally
// a folder of .igpt files at /files/, and POST /report for a test page to hand results back.
//   node scripts/serve.js [--port 8027] [--models DIR]... [--files DIR]
import http from 'node:http';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.css': 'text/css',
};

/** fingerprint -> bundle directory, from directories that are bundles or hold bundles. */
async function indexBundles(dirs) {
  const found = new Map();
  for (const dir of dirs) {
    const candidates = [dir];
    try {
      for (const sub of await readdir(dir)) candidates.push(path.join(dir, sub));
    } catch { /* not a directory */ }
    for (const candidate of candidates) {
      try {
        const manifest = JSON.parse(await readFile(path.join(candidate, 'manifest.json'), 'utf8'));
        if (manifest.fingerprint && !found.has(manifest.fingerprint)) found.set(manifest.fingerprint, candidate);
      } catch { /* not a bundle */ }
    }
  }
  return found;
}

/** A path under `root`, or null when the request tries to leave it. */
function inside(root, relative) {
  const full = path.resolve(root, '.' + path.posix.normalize('/' + decodeURIComponent(relative)));
  return full === root || full.startsWith(root + path.sep) ? full : null;
}

export async function startServer({ port = 0, modelDirs = [], filesDir = null, onReport = () => {} } = {}) {
  const bundles = await indexBundles(modelDirs);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (req.method === 'POST' && url.pathname === '/report') {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      res.writeHead(204).end();
      try {
        onReport(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        onReport({ error: `bad report: ${err.message}` });
      }
      return;
    }
    let file = null;
    const modelMatch = /^\/models\/([0-9a-f]{16}|default)\/([\w.-]+)$/.exec(url.pathname);
    if (modelMatch) {
      // models/default/ is the first bundle found: the page warms up on it.
      const dir = modelMatch[1] === 'default' ? bundles.values().next().value : bundles.get(modelMatch[1]);
      file = dir ? inside(dir, modelMatch[2]) : null;
    } else if (url.pathname.startsWith('/files/') && filesDir) {
      file = inside(filesDir, url.pathname.slice('/files/'.length));
    } else if (!url.pathname.startsWith('/models/')) {
      file = inside(WEB, url.pathname === '/' ? 'index.html' : url.pathname.slice(1));
    }
    try {
      if (!file || !(await stat(file)).isFile()) throw new Error('not found');
      const body = await readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port: server.address().port, close: () => new Promise((r) => { server.close(r); server.closeAllConnections(); }) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const modelDirs = [];
  let port = 8027;
  let filesDir = null;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = Number(args[++i]);
    else if (args[i] === '--models') modelDirs.push(path.resolve(args[++i]));
    else if (args[i] === '--files') filesDir = path.resolve(args[++i]);
  }
  if (!modelDirs.length) modelDirs.push(path.resolve(WEB, '../codec/models/default'), path.resolve(WEB, '../codec/models'), path.resolve(WEB, '../tests/golden/model'), path.resolve(WEB, '../tests/golden/models'));
  const { port: bound } = await startServer({ port, modelDirs, filesDir });
  console.log(`serving http://127.0.0.1:${bound}/ (models: ${modelDirs.join(', ')})`);
}
