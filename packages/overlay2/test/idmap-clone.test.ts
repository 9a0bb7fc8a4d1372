// Id-mapped gets through ONE id-mapped clone of the home, whatever the depth
// (packages/overlay2/src/idmap.ts): mapped owners on files from every lower, one extra
// mount while the overlay mounts, none after put; and the plan's mount data at depth 128.
import { chown, lstat, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { readMountInfo } from '@cairnfs/core';
import { describeBackend } from '@cairnfs/testkit';
import { mountData, planIdmappedOverlay, type Overlay2Driver } from '@cairnfs/overlay2';
import { makeHome, overlayMissing } from './helpers.js';

const missing = await overlayMissing();

const maps = { uidMap: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 200000, size: 65536 }] };

/** Layers L0..L<n-1>, each with file-<i> owned by <i>:<i+1> (container ids) straight in its diff dir. */
async function chain(d: Overlay2Driver, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await d.createReadWrite(`L${i}`, i === 0 ? null : `L${i - 1}`);
    const file = join(d.layout.diffDir(`L${i}`), `file-${i}`);
    await writeFile(file, String(i));
    await chown(file, i, i + 1);
  }
}

/**
 * Watches /proc/self/mountinfo from a worker thread (it runs while a get's mounts are in
 * flight on the pool) and keeps the most mounts seen at once under `under`, leaving out
 * containers' own merged views. Resolves once the worker is sampling.
 */
async function watchMounts(under: string) {
  const shared = new Int32Array(new SharedArrayBuffer(16)); // stop, most, samples with any, samples
  const worker = new Worker(`
    const { workerData } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    const s = workerData.shared;
    while (Atomics.load(s, 0) === 0) {
      let n = 0;
      for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\\n')) {
        const point = line.split(' ')[4];
        if (point && point.startsWith(workerData.under) && !point.endsWith('/merged')) n++;
      }
      if (n > Atomics.load(s, 1)) Atomics.store(s, 1, n);
      if (n > 0) Atomics.add(s, 2, 1);
      Atomics.add(s, 3, 1);
    }
  `, { eval: true, workerData: { shared, under: `${under}/` } });
  while (Atomics.load(shared, 3) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  return {
    get seen() { return Atomics.load(shared, 2); },
    async stop() {
      Atomics.store(shared, 0, 1);
      await new Promise((resolve) => worker.once('exit', resolve));
      return { most: shared[1]!, seen: shared[2]!, samples: shared[3]! };
    },
  };
}

describeBackend('overlay', missing, () => {
  for (const depth of [5, 128]) {
    test(`a container on ${depth} lowers, got with an id map: files from every lower show mapped owners, one id-mapped mount is attached while it mounts, none after put`, async () => {
      const h = await makeHome();
      try {
        const d = await h.open();
        await chain(d, depth);
        const watch = await watchMounts(h.root);
        let result: { most: number; seen: number; samples: number };
        try {
          // Repeated until the watcher has caught a get mid-mount at least once (the window is short).
          for (let round = 0; round < 40 && (round === 0 || watch.seen === 0); round++) {
            const id = `c${round}`;
            await d.createReadWrite(id, `L${depth - 1}`);
            const root = await d.get(id, { idMappings: maps });
            if (round === 0) {
              for (let i = 0; i < depth; i++) {
                const st = await stat(join(root, `file-${i}`));
                expect([st.uid, st.gid]).toEqual([100000 + i, 200000 + i + 1]);
              }
              const top = await stat(root);
              expect([top.uid, top.gid]).toEqual([100000, 200000]); // the upper's root, chowned as the mapped lower root (0:0)
            }
            const under = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${h.root}/`)).map((m) => m.mountPoint);
            expect(under).toEqual([d.layout.mergedDir(id)]); // the clone is gone once get returns
            await d.put(id);
            expect((await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${h.root}/`))).toEqual([]);
          }
        } finally {
          result = await watch.stop();
        }
        expect(result.seen).toBeGreaterThan(0);
        expect(result.most).toBe(1);
        // The layers on disk keep their container ids.
        expect((await stat(join(d.layout.diffDir('L0'), 'file-0'))).uid).toBe(0);
      } finally {
        await h.dispose();
      }
    }, 120_000);
  }
});

describeBackend('overlay', missing, () => {
  test('an id-mapped get repairs a lost l/ link of a lower (as a plain get does) and shows that lower mapped', async () => {
    const h = await makeHome();
    try {
      const d = await h.open();
      await chain(d, 3);
      await d.createReadWrite('c', 'L2');
      const lost = (await d.readLowers('c'))[1]!; // L1's link
      await unlink(join(h.home, lost));
      const root = await d.get('c', { idMappings: maps });
      expect((await stat(join(root, 'file-1'))).uid).toBe(100001);
      expect((await lstat(join(h.home, lost))).isSymbolicLink()).toBe(true);
      await d.put('c');
    } finally {
      await h.dispose();
    }
  });
});

describe('planIdmappedOverlay', () => {
  const home = '/var/lib/docker/overlay2';
  const scratch = `${home}/.cairn-idmap-4194304.18446744073709551@AbC123`;
  const id = 'f'.repeat(64);
  const short = (i: number) => `l/${String(i).padStart(26, 'A')}`;
  const req = (n: number, mapped = (_i: number) => true, newMountApi = true) => ({
    home, scratch, target: `${home}/${id}/merged`, newMountApi,
    lowers: Array.from({ length: n }, (_, i) => ({ rel: short(i), mapped: mapped(i) })),
    upper: { upper: `${id}/diff`, work: `${id}/work` },
    head: [['index', 'off'], ['userxattr', null]] as Array<[string, string | null]>, tail: [],
  });

  test('one clone of the home at <scratch>/0 for any depth; absolute paths through it when they fit', () => {
    const plan = planIdmappedOverlay(req(5, (i) => i !== 4));
    expect(plan.clone).toEqual({ source: home, target: `${scratch}/0` });
    expect(plan.spec.method).toBe('mount');
    expect(plan.spec.cwd).toBeNull();
    expect(plan.spec.options).toContainEqual(['lowerdir', [0, 1, 2, 3].map((i) => `${scratch}/0/${short(i)}`).concat(`${home}/${short(4)}`).join(':')]);
    expect(plan.spec.options).toContainEqual(['upperdir', `${home}/${id}/diff`]);
  });

  test('128 lowers fit one page of mount data relative to the clone (stored-shifted lowers and the upper lead back into the home)', () => {
    const plan = planIdmappedOverlay(req(128, (i) => i !== 127, false));
    expect(plan.spec.method).toBe('mount');
    expect(plan.spec.cwd).toBe(`${scratch}/0`);
    expect(mountData(plan.spec.options).length).toBeLessThan(4096);
    const lower = plan.spec.options.find(([k]) => k === 'lowerdir')![1]!.split(':');
    expect(lower[0]).toBe(short(0));
    expect(lower[127]).toBe(`../../${short(127)}`);
    expect(plan.spec.options).toContainEqual(['workdir', `../../${id}/work`]);
  });

  test('beyond a page: one lowerdir+ per layer, absolute, through the same clone', () => {
    const plan = planIdmappedOverlay(req(300));
    expect(plan.spec.method).toBe('fsmount');
    expect(plan.clone).toEqual({ source: home, target: `${scratch}/0` });
    const lowers = plan.spec.options.filter(([k]) => k === 'lowerdir+');
    expect(lowers).toHaveLength(300);
    expect(lowers[299]![1]).toBe(`${scratch}/0/${short(299)}`);
  });

  test('no mapped lower (all stored shifted, or a chown copy): no clone', () => {
    expect(planIdmappedOverlay(req(3, () => false)).clone).toBeNull();
  });
});
