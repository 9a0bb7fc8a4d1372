// exportImage of an imported image (issue 19): the byte-exact docker-save tarball of the
// bench image (its 5 plain layers rebuilt from their tar-split records and the layers'
// files) vs GNU `tar --format=pax -cf` of the same 5 layer trees (overlay2's diff dirs of
// that store), one after the other; both write a file on the same filesystem.
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cpuMs, summarize } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';
import { cachedImage } from './import.mjs';
import { writeTo } from './export.mjs';

export async function exportImageCases({ params, base, where, pairs, cairn, image: imagePkg }) {
  const image = await cachedImage(params);
  mkdirSync(base, { recursive: true });
  const driver = await cairn.openDriver({ root: join(base, 'store'), driver: 'overlay2' });
  const store = await imagePkg.LayerStore.open(driver);
  const log = (line) => process.stderr.write(`${line}\n`);
  try {
    const [img] = await store.importImage(image.plain);
    const trees = img.layers.map((chain) => join(driver.home, store.layer(chain).cacheId, 'diff'));
    const tarBytes = img.layers.reduce((n, chain) => n + store.layer(chain).tarSize, 0);
    const sides = { cairn: { wall: [], cpu: [] }, tar: { wall: [], cpu: [] } };
    for (let i = -1; i < pairs; i++) {
      {
        const out = join(base, `image-${i + 1}.tar`);
        const c0 = cpuMs();
        const t0 = performance.now();
        await writeTo(imagePkg.exportImage(store, [img.id]), out);
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0;
        if (statSync(out).size < tarBytes) throw new Error(`exportImage wrote ${statSync(out).size} bytes, less than the layers' ${tarBytes}`);
        if (i >= 0) { sides.cairn.wall.push(wall); sides.cairn.cpu.push(cpu); }
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
      if (i >= 0) log(`  exportImage pair ${i + 1}/${pairs}: cairn ${sides.cairn.wall.at(-1).toFixed(0)} ms, tar ${sides.tar.wall.at(-1).toFixed(0)} ms`);
    }
    const label = `5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, ${where}`;
    return [summarize(`exportImage ${label}: exportImage (byte-exact)`, 'tar -cf (pax) ×5', sides.cairn.wall, sides.tar.wall, sides.cairn.cpu, sides.tar.cpu, pairs)];
  } finally {
    await store.close();
    await driver.cleanup();
    rmrf(join(base, 'store'));
  }
}
