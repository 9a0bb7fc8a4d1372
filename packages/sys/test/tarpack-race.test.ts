// TarPacker while a racer swaps a regular file with /dev/zero, on each of the packer's three
// ways of opening a file: by name in a nodev clone of the root's mount (the default where
// this process may clone mounts), through a file handle of a checked O_PATH fd, and by
// name on the real mount (an unprivileged caller). Whatever the swap hits, no byte of the
// device is packed and every failure says the file changed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACK_LEGACY_KERNEL, PACK_NO_NODEV_VIEW, constants, mknodSync, openTarPacker } from '@cairnfs/sys';
import { describeBackend, startSwapRacer } from '@cairnfs/testkit';
import { scratch, type Scratch } from './helpers.js';

const ROUNDS = 300;
const CONTENT = 0x41;

let s: Scratch;
beforeEach(async () => {
  s = await scratch('cairn-tarpack-race-');
});
afterEach(async () => {
  await s.cleanup();
});

/** Packs `tree`; returns the outcome (was d/f packed as the device?) and the number of content bytes that are not 'A'. */
function packOnce(tree: string, flags: number): { outcome: string; foreign: number } {
  let foreign = 0;
  let swapped = false;
  const p = openTarPacker(tree, flags, true);
  try {
    // A whole tar of the tree fits in one buffer: d/, d/f (128 KiB) or d/z, d/z or d/f.
    const buf = Buffer.alloc(1 << 20);
    const used = p.fill(buf, 0);
    const tar = buf.subarray(0, used);
    for (let off = 0; off + 512 <= tar.length;) {
      const h = tar.subarray(off, off + 512);
      if (h.every((b) => b === 0)) break;
      const size = parseInt(h.toString('latin1', 124, 136).replace(/\0.*$/, ''), 8) || 0;
      if (h[156] === 0x33 && h.toString('latin1', 0, 4) === 'd/f\0') swapped = true;
      if (h[156] === 0x30) for (const b of tar.subarray(off + 512, off + 512 + size)) if (b !== CONTENT) foreign++;
      off += 512 + Math.ceil(size / 512) * 512;
    }
    return { outcome: swapped ? 'ok, d/f a device' : 'ok', foreign };
  } catch (err) {
    const e = err as { cairnCode?: string; detail?: string; code?: string };
    return { outcome: e.cairnCode !== undefined ? `${e.cairnCode} ${e.detail ?? ''}`.trim() : `${e.code ?? String(err)}`, foreign };
  } finally {
    p.close();
  }
}

describeBackend('root', process.getuid?.() === 0 ? null : 'making a device node needs root', () => {
  const ways: Array<[string, number]> = [['nodev view', 0], ['file handles', PACK_NO_NODEV_VIEW], ['by name', PACK_LEGACY_KERNEL]];
  for (const [way, flags] of ways) {
    test(`packing while d/f is swapped with /dev/zero (${way}): no device byte packed, every failure is 'changed'`, async () => {
      const tree = join(s.dir, 'tree');
      mkdirSync(join(tree, 'd'), { recursive: true });
      writeFileSync(join(tree, 'd', 'f'), Buffer.alloc(128 << 10, CONTENT));
      mknodSync(join(tree, 'd', 'z'), constants.S_IFCHR | 0o666, 1, 5);
      const racer = await startSwapRacer({ dir: join(tree, 'd'), a: 'f', b: 'z' });
      const outcomes: Record<string, number> = {};
      let foreign = 0;
      let swaps = 0;
      try {
        for (let r = 0; r < ROUNDS; r++) {
          const one = packOnce(tree, flags);
          foreign += one.foreign;
          outcomes[one.outcome] = (outcomes[one.outcome] ?? 0) + 1;
          if (r % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
        }
      } finally {
        swaps = (await racer.stop()).swaps;
      }
      console.log(`tarpack race (${way}): ${swaps} swaps, ${JSON.stringify(outcomes)}`);
      expect(swaps).toBeGreaterThan(0);
      expect(foreign).toBe(0);
      expect(Object.keys(outcomes).filter((k) => !k.startsWith('ok') && k !== 'ERR_INVALID_ARCHIVE changed')).toEqual([]);
      // The swap must have been seen (between the listing and the lstat: d/f packed as the
      // device it then was; between the lstat and the open: 'changed'), or the test proves nothing.
      expect((outcomes['ok, d/f a device'] ?? 0) + (outcomes['ERR_INVALID_ARCHIVE changed'] ?? 0)).toBeGreaterThan(0);
    }, 60_000);
  }
});
