// Browser-side bundle loading: a bundle is fetched from models/<fingerprint>/ next to the
// page (or another base URL), and verified like any other.
import { loadBundle } from './bundle.js';
import { BundleError } from './errors.js';

/** A resolver fingerprintHex -> bundle, fetching from `${base}${fingerprint}/`. */
export function urlResolver(base = 'models/') {
  const cache = new Map();
  return async (fingerprintHex) => {
    if (!cache.has(fingerprintHex)) {
      const root = new URL(`${base}${fingerprintHex}/`, document.baseURI);
      const probe = await fetch(new URL('manifest.json', root)).catch(() => null);
      if (!probe || !probe.ok) return null; // no such model here: the decoder reports it
      cache.set(fingerprintHex, loadBundle(async (name) => {
        const response = await fetch(new URL(name, root));
        if (!response.ok) throw new BundleError(`${name}: HTTP ${response.status}`);
        return new Uint8Array(await response.arrayBuffer());
      }, `model ${fingerprintHex}`));
    }
    return cache.get(fingerprintHex);
  };
}
