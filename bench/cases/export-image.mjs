// exportImage of an imported image (issue 19): the byte-exact docker-save tarball of the
// bench image (its 5 plain layers rebuilt from their tar-split records and the layers'
// files) vs GNU `tar --format=pax -cf` of the same 5 layer trees (overlay2's diff dirs of
// that store), one after the other; both write a file on the same filesystem. Two rows:
// the public Readable read and written by the bench, and cairn's own writer (the CLI's
// `save -o`), writeExportTo, which packs into two reused buffers. Three more rows are the
// parts of export's floor, each a subset of what any byte-exact export that checks its
// digest must do; their sum is the floor: the addon's replay of each layer into one reused
// buffer on the pool, written nowhere (the split inflated, every file checked and read,
// every byte hashed); the same number of bytes written from one buffer into a file on the
// same filesystem (what tar -cf's output costs too); and SHA-256 alone over the layer tars
// in memory (already inside the first).
import { closeSync, constants as fsConstants, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cpuMs, summarize } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';
import { cachedImage } from './import.mjs';
import { writeTo } from './export.mjs';

/** `bytes` written into a new file `out` from `buffer`, a buffer at a time. */
function writeOnly(buffer, bytes, out) {
  const fd = openSync(out, 'w');
  try {
    for (let left = bytes; left > 0; left -= buffer.length) writeSync(fd, buffer, 0, Math.min(buffer.length, left));
  } finally {
    closeSync(fd);
  }
}

/** Each layer rebuilt by the addon's replay into `buffer` and dropped; its digest checked. */
async function replayOnly(sys, layers, buffer) {
  for (const l of layers) await replayLayer(sys, l, buffer);
}

async function replayLayer(sys, l, buffer) {
  const rootFd = openSync(l.tree, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  const splitFd = openSync(l.split, 'r');
  try {
    const replay = sys.openSplitReplay(rootFd, splitFd, l.tarSize);
    try {
      while ((await replay.fill(buffer)) > 0) { /* dropped */ }
      if (`sha256:${replay.digest().digest}` !== l.diffId) throw new Error(`the replay of ${l.diffId} rebuilt another tar`);
    } finally {
      replay.close();
    }
  } finally {
    closeSync(rootFd);
    closeSync(splitFd);
  }
}

export async function exportImageCases({ params, base, where, pairs, cairn, image: imagePkg, archive, sys }) {
  const image = await cachedImage(params);
  mkdirSync(base, { recursive: true });
  const driver = await cairn.openDriver({ root: join(base, 'store'), driver: 'overlay2' });
  const store = await imagePkg.LayerStore.open(driver);
  const log = (line) => process.stderr.write(`${line}\n`);
  try {
    const [img] = await store.importImage(image.plain);
    const trees = img.layers.map((chain) => join(driver.home, store.layer(chain).cacheId, 'diff'));
    const tarBytes = img.layers.reduce((n, chain) => n + store.layer(chain).tarSize, 0);
    // The store's layerdb, where LayerStore.open puts it for this driver (docs/images.md).
    const layerDb = join(dirname(driver.home), 'image', driver.name, 'layerdb', 'sha256');
    const layers = img.layers.map((chain, l) => {
      const info = store.layer(chain);
      return { tree: trees[l], split: join(layerDb, chain.slice('sha256:'.length), 'tar-split.gz'), tarSize: info.tarSize, diffId: info.diffId };
    });
    const replayBuffer = Buffer.allocUnsafe(1 << 20);
    const layerTars = image.layers.map((l) => readFileSync(l.tar));
    const sides = { cairn: { wall: [], cpu: [] }, direct: { wall: [], cpu: [] }, replay: { wall: [], cpu: [] }, write: { wall: [], cpu: [] }, sha: { wall: [], cpu: [] }, tar: { wall: [], cpu: [] } };
    const writers = {
      cairn: (out) => writeTo(imagePkg.exportImage(store, [img.id]), out),
      direct: async (out) => {
        const fd = openSync(out, 'w');
        try {
          await archive.writeExportTo(imagePkg.exportImage(store, [img.id]), fd);
        } finally {
          closeSync(fd);
        }
      },
    };
    for (let i = -1; i < pairs; i++) {
      for (const [side, write] of Object.entries(writers)) {
        const out = join(base, `image-${i + 1}.tar`);
        const c0 = cpuMs();
        const t0 = performance.now();
        await write(out);
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0;
        if (statSync(out).size < tarBytes) throw new Error(`exportImage wrote ${statSync(out).size} bytes, less than the layers' ${tarBytes}`);
        if (i >= 0) { sides[side].wall.push(wall); sides[side].cpu.push(cpu); }
        rmrf(out);
      }
      {
        const outs = trees.map((_, l) => join(base, `tar-${i + 1}-${l}.tar`));
        const c0 = cpuMs();
        const t0 = performance.now();
        let tarCpu = 0;
        for (const [l, tree] of trees.entries()) tarCpu += (await runReference('tar', ['--format=pax', '-C', tree, '-cf', outs[l], '.'])).cpuMs;
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0 + tarCpu;
        if (i >= 0) { sides.tar.wall.push(wall); sides.tar.cpu.push(cpu); }
        for (const o of outs) rmrf(o);
      }
      const writeOut = join(base, `write-${i + 1}.tar`);
      for (const [side, run] of [['replay', () => replayOnly(sys, layers, replayBuffer)], ['write', async () => writeOnly(replayBuffer, tarBytes, writeOut)], ['sha', async () => { for (const b of layerTars) sys.applierSha256(b); }]]) {
        const c0 = cpuMs();
        const t0 = performance.now();
        await run();
        if (i >= 0) { sides[side].wall.push(performance.now() - t0); sides[side].cpu.push(cpuMs() - c0); }
      }
      rmrf(writeOut);
      if (i >= 0) log(`  exportImage pair ${i + 1}/${pairs}: Readable ${sides.cairn.wall.at(-1).toFixed(0)} ms, writeExportTo ${sides.direct.wall.at(-1).toFixed(0)} ms, tar ${sides.tar.wall.at(-1).toFixed(0)} ms`);
    }
    const label = `5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, ${where}`;
    return [
      summarize(`exportImage ${label}: exportImage (byte-exact)`, 'tar -cf (pax) ×5', sides.cairn.wall, sides.tar.wall, sides.cairn.cpu, sides.tar.cpu, pairs),
      summarize(`exportImage ${label}: exportImage → writeExportTo`, 'tar -cf (pax) ×5', sides.direct.wall, sides.tar.wall, sides.direct.cpu, sides.tar.cpu, pairs),
      summarize(`exportImage ${label}: floor part, the replay into one buffer, written nowhere`, 'tar -cf (pax) ×5', sides.replay.wall, sides.tar.wall, sides.replay.cpu, sides.tar.cpu, pairs),
      summarize(`exportImage ${label}: floor part, the tar's bytes written from one buffer`, 'tar -cf (pax) ×5', sides.write.wall, sides.tar.wall, sides.write.cpu, sides.tar.cpu, pairs),
      summarize(`exportImage ${label}: floor part, sha256 alone, in memory`, 'tar -cf (pax) ×5', sides.sha.wall, sides.tar.wall, sides.sha.cpu, sides.tar.cpu, pairs),
    ];
  } finally {
    await store.close();
    await driver.cleanup();
    rmrf(join(base, 'store'));
  }
}
