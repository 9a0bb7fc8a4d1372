// vfs quota tests for the test VM (a kernel with xfs quotas): registered by the guest
// test file next to this one, launched with core's and the other driver's by packages/testkit/test/quota-vm.test.ts.
// Every test name here contains the word "quota": the host launcher filters on it.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { StorageDriver } from '@cairnfs/core';
import { xfsGetProjectId } from '@cairnfs/sys';
import { codeOf, driverConformanceSuite, expectIndependent16MQuotas, tarOf, writeError } from '@cairnfs/testkit';
import type { DriverHarness, LoopFs } from '@cairnfs/testkit';
import { vfsDriver } from '@cairnfs/vfs';

/** Registers the vfs quota tests; `fs()` is the xfs mounted with prjquota (made in a beforeAll). */
export function vfsQuotaTests(fs: () => LoopFs): void {

  async function harness(options: Record<string, string> = {}): Promise<DriverHarness> {
    const root = await mkdtemp(join(fs().dir, 'vfs-q-'));
    const ctx = { root, home: join(root, 'vfs'), options, lockTimeoutMs: 0 };
    const opened: StorageDriver[] = [await vfsDriver.open(ctx)];
    return {
      get driver() { return opened[opened.length - 1]!; },
      async reopen() {
        await opened[opened.length - 1]!.cleanup();
        opened.push(await vfsDriver.open(ctx));
        return opened[opened.length - 1]!;
      },
      async dispose() {
        for (const d of opened) await d.cleanup().catch(() => undefined);
        await rm(root, { recursive: true, force: true });
      },
    };
  }

  describe('vfs size quota', () => {
    test('a 16M quota on a container layer: 10M works, 20M more fails with EDQUOT/ENOSPC; a second layer\'s quota is independent', async () => {
      const h = await harness();
      try {
        const d = h.driver;
        await d.createReadWrite('base');
        await d.createReadWrite('c1', 'base', { storageOpt: { size: '16M' } });
        await d.createReadWrite('c2', 'base', { storageOpt: { size: '16M' } });
        const r1 = await d.get('c1');
        const r2 = await d.get('c2');
        try {
          await expectIndependent16MQuotas(fs().dir, [r1, r2], [r1, r2]);
        } finally {
          await d.put('c1');
          await d.put('c2');
        }
      } finally {
        await h.dispose();
      }
    });

    test('vfs.size is the default quota of container layers, the parent copy counts against it (ERR_NO_SPACE), and applyDiff keeps the quota', async () => {
      const h = await harness({ 'vfs.size': '8M' });
      try {
        const d = h.driver;
        await d.create('img');
        await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'blob', content: Buffer.alloc(10 << 20, 2) }])]));
        // The 10M parent does not fit in an 8M layer: refused, nothing left behind.
        expect(await codeOf(d.createReadWrite('c', 'img'))).toBe('ERR_NO_SPACE');
        expect(await d.exists('c')).toBe(false);
        await d.createReadWrite('c', 'img', { storageOpt: { size: '24M' } });
        await d.applyDiff('c', 'img', Readable.from([await tarOf([{ name: 'more', content: Buffer.alloc(1 << 20, 3) }])]));
        const root = await d.get('c');
        try {
          expect(await xfsGetProjectId(root)).toBeGreaterThan(0);
          expect(['EDQUOT', 'ENOSPC']).toContain(await writeError(join(root, 'f'), 16 << 20));
        } finally {
          await d.put('c');
        }
      } finally {
        await h.dispose();
      }
    });

    test('size quota on an image layer (create) is ERR_QUOTA_UNSUPPORTED even where quotas work', async () => {
      const h = await harness();
      try {
        expect(await codeOf(h.driver.create('img', null, { storageOpt: { size: '16M' } }))).toBe('ERR_QUOTA_UNSUPPORTED');
        expect(await h.driver.exists('img')).toBe(false);
      } finally {
        await h.dispose();
      }
    });
  });

  driverConformanceSuite('vfs (xfs prjquota)', () => harness(), { quota: true });
}
