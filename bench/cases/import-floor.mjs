// Import's floor, on one thread: what importImage's own work costs with no store, no pool
// and no JavaScript between slices. The addon's LayerApplier runs synchronously on this
// thread over each plain layer file of the bench image, 2 MiB per call as importImage's
// range path does: untapped (the files alone), tapped with raw records (+ SHA-256 of every
// byte + the tar-split record), and tapped as importImage taps (the record gzipped). One
// more row is the files and the digest with no record: each slice read into one reused
// buffer, hashed through Node's crypto (the same libcrypto the addon calls) and applied
// from it, the least any import that checks the digest before committing can do. The last
// is SHA-256 alone over the same bytes, read into memory beforehand: what the digest check
// costs whoever does it. All against `tar -xf` of the same five layers into empty dirs on
// the same tmpfs, alternating.
//
// The rows answer whether a goal on import's CPU is within reach: a goal below the
// gzipped-record row cannot be met by anything the store does, one below the no-record row
// not by any import that checks the digest, and SHA-256 alone is the part no applier can
// save while the digest is checked before a layer is committed.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { comparePair } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';
import { cachedImage } from './import.mjs';

const SLICE = 2 << 20; // archive's RANGE_SLICE: what one pool job applies in importImage

/**
 * Applies each layer file into its own dir under `dir` on this thread; `tap` is null
 * (untapped), 'digest' (hashed here, no record), 'raw' or 'gzip' (the record as
 * importImage keeps it).
 */
function applyAll(sys, layers, dir, tap, umask) {
  const slice = tap === 'digest' ? Buffer.allocUnsafe(SLICE) : null;
  for (const [i, path] of layers.entries()) {
    const root = join(dir, String(i));
    mkdirSync(root);
    const applier = sys.openLayerApplier(root, {
      whiteouts: 'overlay', noDevices: false, ownership: process.getuid() === 0,
      euid: process.geteuid(), egid: process.getegid(), umask,
    });
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      if (tap === 'digest') {
        applyHashed(applier, fd, size, slice);
      } else {
        if (tap) applier.tap(Number.MAX_SAFE_INTEGER, `layer ${i}`, false, tap === 'raw');
        for (let at = 0; at < size; at += SLICE) {
          applier.writeRange(fd, at, Math.min(SLICE, size - at));
          if (tap) applier.takeRecord();
        }
        applier.finish();
        if (tap) applier.tapEnd();
      }
    } finally {
      applier.close();
      closeSync(fd);
    }
  }
}

/** The layer in `fd` through `slice`: each piece hashed, then applied from the same bytes; returns the digest. */
function applyHashed(applier, fd, size, slice) {
  const hash = createHash('sha256');
  for (let at = 0; at < size; at += SLICE) {
    const bytes = slice.subarray(0, readSync(fd, slice, 0, Math.min(SLICE, size - at), at));
    hash.update(bytes);
    applier.write(bytes);
  }
  applier.finish();
  return hash.digest('hex');
}

export async function importFloorCases({ params, base, pairs, sys }) {
  const image = await cachedImage(params);
  // The process umask, read once, untimed (process.umask() without an argument is deprecated).
  const umask = parseInt(/^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))[1], 8);
  const layers = image.layers.map((l) => l.tar);
  const label = `5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, tmpfs, one thread`;
  const fresh = (name) => (side, i) => {
    const dir = join(base, `${name}-${side}-${i}`);
    mkdirSync(dir, { recursive: true });
    return { dir, teardown: () => rmrf(dir) };
  };
  const tarX = async (ctx) => {
    let cpuMs = 0;
    for (const [i, path] of layers.entries()) {
      const dir = join(ctx.dir, String(i));
      mkdirSync(dir);
      cpuMs += (await runReference('tar', ['-xf', path, '-C', dir])).cpuMs;
    }
    return { cpuMs };
  };
  const results = [];
  for (const [what, tap] of [['applier alone', null], ['applier + sha256, no record', 'digest'], ['applier + sha256 + record', 'raw'], ['applier + sha256 + gzipped record', 'gzip']]) {
    results.push(await comparePair({
      name: `import floor ${label}: ${what}`, pairs, referenceName: 'tar -xf ×5',
      setup: fresh(what.replace(/\W+/g, '-')),
      cairn: (ctx) => applyAll(sys, layers, ctx.dir, tap, umask),
      reference: tarX,
    }));
  }
  const bytes = layers.map((p) => readFileSync(p));
  results.push(await comparePair({
    name: `import floor ${label}: sha256 alone, in memory`, pairs, referenceName: 'tar -xf ×5',
    setup: fresh('sha256'),
    cairn: () => { for (const b of bytes) sys.applierSha256(b); },
    reference: tarX,
  }));
  return results;
}
