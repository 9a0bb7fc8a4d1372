// A bounded stress run (issue 16): three processes doing random operations on one root
// at once (creates, applies, mounts, puts, removes, changes, status), building on two
// shared layers. Every process must finish without an error or an overlong wait; then
// no mount is left, a reopened store lists exactly the layers they kept, and nothing
// stray is left in the home. CAIRN_STRESS_SECONDS sets the length (CI: 25 s overlay2, 15 s vfs).
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readMountInfo } from '@cairnfs/core';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, layerTar, RemoteDriver } from '@cairnfs/testkit';
import { crashSeed, overlayMissing } from './reliability-helpers.js';

function seconds(ciDefault: number): number {
  const n = Number(process.env.CAIRN_STRESS_SECONDS);
  return Number.isFinite(n) && n > 0 ? n : ciDefault;
}

/** Layer ids on disk: overlay2 keeps one directory per layer in its home, vfs one in dir/ (plus meta/). */
async function onDisk(factory: DriverFactory, home: string): Promise<string[]> {
  const names = factory.name === 'vfs'
    ? [...await readdir(join(home, 'dir')), ...(await readdir(join(home, 'meta'))).map((n) => n.replace(/\.json$/, ''))]
    : (await readdir(home)).filter((n) => n !== 'l' && !n.startsWith('.'));
  return [...new Set(names)].sort();
}

for (const [factory, missing, ciSeconds] of [
  [overlay2Driver, overlayMissing(), 25],
  [vfsDriver, process.getuid?.() === 0 ? null : 'needs root', 15],
] as Array<[DriverFactory, string | null, number]>) {
  describeBackend(factory.name === 'vfs' ? 'root' : 'overlay', missing, () => {
    test(`${factory.name}: three processes × ${seconds(ciSeconds)} s of random operations on one root end clean and consistent`, async () => {
      const root = await mkdtemp(join(tmpdir(), `cairn-stress-${factory.name}-`));
      const home = join(root, factory.name);
      const procs: RemoteDriver[] = [];
      let driver: StorageDriver | null = null;
      try {
        driver = await factory.open({ root, home, options: {}, lockTimeoutMs: 30_000 });
        await driver.create('s0', null);
        await driver.applyDiff('s0', null, Readable.from([layerTar('s0', 1, 16 * 1024, false)]));
        await driver.create('s1', 's0');
        await driver.applyDiff('s1', 's0', Readable.from([layerTar('s1', 2, 16 * 1024, true)]));
        for (let i = 0; i < 3; i++) procs.push(await RemoteDriver.start(factory.name, root, { lockTimeoutMs: 30_000 }));
        const seed = crashSeed();
        const reports = await Promise.all(procs.map((p, i) => p.stress({
          prefix: `p${i}`, seconds: seconds(ciSeconds), seed: seed + i, shared: ['s0', 's1'], bytes: 8 * 1024, opTimeoutMs: 30_000, keep: 2,
        })));
        console.log(`${factory.name} stress (seed ${seed}): ${JSON.stringify(reports.map((r) => ({ ops: r.ops, maxOpMs: r.maxOpMs, counts: r.counts, kept: r.layers.length })))}`);
        for (const [i, r] of reports.entries()) {
          expect({ process: i, errors: r.errors.slice(0, 5) }).toEqual({ process: i, errors: [] });
          expect(r.ops).toBeGreaterThan(20);
        }
        for (const p of procs.splice(0)) expect(await p.exit()).toBe(0);
        await driver.cleanup();
        driver = null;

        expect((await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${home}/`)).map((m) => m.mountPoint)).toEqual([]);
        const expected = ['s0', 's1', ...reports.flatMap((r) => r.layers)].sort();
        driver = await factory.open({ root, home, options: {}, lockTimeoutMs: 30_000 });
        for (const id of expected) expect({ id, exists: await driver.exists(id) }).toEqual({ id, exists: true });
        expect(await onDisk(factory, home)).toEqual(expected);
        for (const sub of ['.staging', '.trash', '.cairn/mounts']) expect({ sub, left: await readdir(join(home, sub)).catch(() => []) }).toEqual({ sub, left: [] });
        if (factory.name === 'overlay2') expect((await readdir(join(home, 'l'))).length).toBe(expected.length);
      } finally {
        for (const p of procs) { p.kill(); await p.exited; }
        await driver?.cleanup();
        await rm(root, { recursive: true, force: true });
      }
    }, 180_000);
  });
}
