// Apply: cairn applying a layer tar vs GNU `tar -xf` of the same uncompressed tar into
// an empty directory on the same filesystem. Both keep ownership, modes and mtimes (tar
// does as root). cairn additionally enforces its path-safety rules and whiteouts.
import { createReadStream, mkdirSync } from 'node:fs';
import { comparePair } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';

/** `applyLayer` straight into a directory, plus vfs and overlay2 `applyDiff` through the driver. */
export async function applyCases({ input, base, label, pairs, archive, cairn }) {
  const results = [];
  const fresh = (name) => (side, i) => {
    const dir = `${base}/${name}-${side}-${i}`;
    mkdirSync(dir, { recursive: true });
    return { dir, teardown: () => rmrf(dir) };
  };
  const tarX = (ctx) => runReference('tar', ['-xf', input.tar, '-C', ctx.dir]);

  results.push(await comparePair({
    name: `apply ${label}: applyLayer`, pairs, referenceName: 'tar -xf',
    setup: fresh('apply'),
    cairn: (ctx) => archive.applyLayer(ctx.dir, createReadStream(input.tar, { highWaterMark: 256 * 1024 })),
    reference: tarX,
  }));

  // The same apply from a stream that is not a whole-file ReadStream (a decompressor's
  // output, a socket, a range): the bytes come through the JS stream, 256 KiB at a time.
  // `end` set makes it a range, so applyLayer cannot read the file by itself.
  results.push(await comparePair({
    name: `apply ${label}: applyLayer, input through a JS stream`, pairs, referenceName: 'tar -xf',
    setup: fresh('apply-stream'),
    cairn: (ctx) => archive.applyLayer(ctx.dir, createReadStream(input.tar, { highWaterMark: 256 * 1024, end: Number.MAX_SAFE_INTEGER })),
    reference: tarX,
  }));

  for (const driverName of ['vfs', 'overlay2']) {
    let driver;
    try {
      driver = await cairn.openDriver({ root: `${base}/root-${driverName}`, driver: driverName });
    } catch (err) {
      results.push({ name: `apply ${label}: ${driverName} applyDiff`, skipped: `cannot open ${driverName} here: ${err.message}` });
      continue;
    }
    results.push(await comparePair({
      name: `apply ${label}: ${driverName} applyDiff`, pairs, referenceName: 'tar -xf',
      setup: async (side, i) => {
        if (side === 'reference') return fresh(driverName)(side, i);
        const id = `layer-${i}`;
        await driver.create(id, null);
        return { id, teardown: () => driver.remove(id) };
      },
      cairn: (ctx) => driver.applyDiff(ctx.id, null, createReadStream(input.tar, { highWaterMark: 256 * 1024 })),
      reference: tarX,
    }));
    await driver.cleanup();
  }
  return results;
}
