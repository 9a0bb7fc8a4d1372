import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { btrfsSnapshot, btrfsSubvolCreate, btrfsSubvolDestroy } from '@cairnfs/sys';
import { describeBackend, loopFsMissing, makeLoopFs, missingTools } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { harness, run } from './helpers.js';

const missing = loopFsMissing('btrfs') ?? missingTools('btrfs');
const N = 20;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

describeBackend('btrfs', missing, () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('btrfs', { sizeMiB: 256 }); });
  afterAll(async () => { await fs?.dispose(); });

  test(`per-layer cost: snapshot + destroy through ioctls is cheaper than spawning btrfs-progs (median of ${N})`, async () => {
    const dir = await mkdtemp(join(fs.dir, 'bench-'));
    await btrfsSubvolCreate(dir, 'base');
    for (let i = 0; i < 100; i++) await writeFile(join(dir, 'base', `f${i}`), `file ${i}`);
    const ioctlSnap: number[] = [];
    const ioctlDestroy: number[] = [];
    const spawnSnap: number[] = [];
    const spawnDestroy: number[] = [];
    for (let i = 0; i < N; i++) {
      ioctlSnap.push(await timed(() => btrfsSnapshot(join(dir, 'base'), dir, `i${i}`)));
      ioctlDestroy.push(await timed(() => btrfsSubvolDestroy(dir, `i${i}`)));
      spawnSnap.push(await timed(() => run('btrfs', ['-q', 'subvolume', 'snapshot', join(dir, 'base'), join(dir, `s${i}`)])));
      spawnDestroy.push(await timed(() => run('btrfs', ['-q', 'subvolume', 'delete', join(dir, `s${i}`)])));
    }
    // The whole driver path: create (snapshot, metadata, rename, fsyncs) and remove.
    const h = await harness(fs.dir);
    const create: number[] = [];
    const remove: number[] = [];
    try {
      await h.driver.createReadWrite('base');
      for (let i = 0; i < N; i++) {
        create.push(await timed(() => h.driver.create(`l${i}`, 'base')));
        remove.push(await timed(() => h.driver.remove(`l${i}`)));
      }
    } finally {
      await h.dispose();
    }
    const ms = (x: number[]) => `${median(x).toFixed(2)} ms`;
     
    console.log([
      `btrfs per-layer cost, median of ${N} on a loopback btrfs:`,
      `  snapshot: ioctl ${ms(ioctlSnap)} vs spawn \`btrfs subvolume snapshot\` ${ms(spawnSnap)}`,
      `  destroy:  ioctl ${ms(ioctlDestroy)} vs spawn \`btrfs subvolume delete\` ${ms(spawnDestroy)}`,
      `  driver create(id, parent) ${ms(create)}, remove ${ms(remove)}`,
    ].join('\n'));
    expect(median(ioctlSnap)).toBeLessThan(median(spawnSnap));
    expect(median(ioctlDestroy)).toBeLessThan(median(spawnDestroy));
  });
});
