// Node-only helpers: load a bundle from a directory, and find the bundle a stream names
// among several directories (each a bundle, or a folder of <fingerprint>/ bundles).
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadBundle } from './bundle.js';

export async function bundleFromDir(dir) {
  return loadBundle(async (name) => new Uint8Array(await readFile(path.join(dir, name))), dir);
}

async function manifestFingerprint(dir) {
  try {
    return JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')).fingerprint;
  } catch {
    return null;
  }
}

/** A resolver fingerprintHex -> bundle over candidate directories (verified when used). */
export function bundleResolver(dirs) {
  const cache = new Map();
  return async (fingerprintHex) => {
    if (cache.has(fingerprintHex)) return cache.get(fingerprintHex);
    const candidates = [];
    for (const dir of dirs) {
      candidates.push(dir);
      try {
        if ((await stat(dir)).isDirectory()) for (const sub of await readdir(dir)) candidates.push(path.join(dir, sub));
      } catch { /* a missing directory offers nothing */ }
    }
    for (const dir of candidates) {
      if ((await manifestFingerprint(dir)) === fingerprintHex) {
        const bundle = await bundleFromDir(dir);
        cache.set(fingerprintHex, bundle);
        return bundle;
      }
    }
    return null;
  };
}
