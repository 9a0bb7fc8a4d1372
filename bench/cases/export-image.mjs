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

/**
 * Wall and CPU ms of `run`; what it resolves to (a reference tool's own CPU, run in a child
 * and not counted in this process) is added to the CPU.
 */
async function timed(run) {
  const c0 = cpuMs();
  const t0 = performance.now();
  const childCpu = (await run()) ?? 0;
  return { wall: performance.now() - t0, cpu: cpuMs() - c0 + childCpu };
}

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
    // The store's layerdb, where LayerStore.open puts it for this driver (docs/images.md).
    const layerDb = join(dirname(driver.home), 'image', driver.name, 'layerdb', 'sha256');
    const layers = img.layers.map((chain) => {
      const info = store.layer(chain);
      return {
        tree: join(driver.home, info.cacheId, 'diff'), split: join(layerDb, chain.slice('sha256:'.length), 'tar-split.gz'),
        tarSize: info.tarSize, diffId: info.diffId,
      };
    });
    const trees = layers.map((l) => l.tree);
    const tarBytes = layers.reduce((n, l) => n + l.tarSize, 0);
    const replayBuffer = Buffer.allocUnsafe(1 << 20);
    const layerTars = image.layers.map((l) => readFileSync(l.tar));
    const sides = Object.fromEntries(['cairn', 'direct', 'replay', 'write', 'sha', 'tar'].map((side) => [side, { wall: [], cpu: [] }]));
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
      const keep = (side, t) => { if (i >= 0) { sides[side].wall.push(t.wall); sides[side].cpu.push(t.cpu); } };
      for (const [side, write] of Object.entries(writers)) {
        const out = join(base, `image-${i + 1}.tar`);
        const t = await timed(() => write(out));
        if (statSync(out).size < tarBytes) throw new Error(`exportImage wrote ${statSync(out).size} bytes, less than the layers' ${tarBytes}`);
        keep(side, t);
        rmrf(out);
      }
      const outs = trees.map((_, l) => join(base, `tar-${i + 1}-${l}.tar`));
      keep('tar', await timed(async () => {
        let tarCpu = 0;
        for (const [l, tree] of trees.entries()) tarCpu += (await runReference('tar', ['--format=pax', '-C', tree, '-cf', outs[l], '.'])).cpuMs;
        return tarCpu;
      }));
      for (const o of outs) rmrf(o);
      const writeOut = join(base, `write-${i + 1}.tar`);
      keep('replay', await timed(() => replayOnly(sys, layers, replayBuffer)));
      keep('write', await timed(async () => writeOnly(replayBuffer, tarBytes, writeOut)));
      keep('sha', await timed(async () => { for (const b of layerTars) sys.applierSha256(b); }));
      rmrf(writeOut);
      if (i >= 0) log(`  exportImage pair ${i + 1}/${pairs}: Readable ${sides.cairn.wall.at(-1).toFixed(0)} ms, writeExportTo ${sides.direct.wall.at(-1).toFixed(0)} ms, tar ${sides.tar.wall.at(-1).toFixed(0)} ms`);
    }
    const label = `5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, ${where}`;
    const rows = [
      ['cairn', 'exportImage (byte-exact)'],
      ['direct', 'exportImage → writeExportTo'],
      ['replay', 'floor part, the replay into one buffer, written nowhere'],
      ['write', "floor part, the tar's bytes written from one buffer"],
      ['sha', 'floor part, sha256 alone, in memory'],
    ];
    return rows.map(([side, what]) => summarize(`exportImage ${label}: ${what}`, 'tar -cf (pax) ×5', sides[side].wall, sides.tar.wall, sides[side].cpu, sides.tar.cpu, pairs));
  } finally {
    await store.close();
    await driver.cleanup();
    rmrf(join(base, 'store'));
  }
}
