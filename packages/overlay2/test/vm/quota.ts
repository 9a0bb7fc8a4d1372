// overlay2 quota tests for the test VM (a kernel with xfs quotas): registered by the guest
// test file next to this one, launched with core's and the other driver's by packages/testkit/test/quota-vm.test.ts.
// Every test name here contains the word "quota": the host launcher filters on it.
import { join } from 'node:path';
import { xfsGetProjectId } from '@cairnfs/sys';
import { codeOf, driverConformanceSuite, expectIndependent16MQuotas, writeError } from '@cairnfs/testkit';
import type { DriverHarness, LoopFs } from '@cairnfs/testkit';
import { makeHome } from '../helpers.js';

/** Registers the overlay2 quota tests; `fs()` is the xfs mounted with prjquota (made in a beforeAll). */
export function overlay2QuotaTests(fs: () => LoopFs): void {

  async function harness(options: Record<string, string> = {}): Promise<DriverHarness> {
    const h = await makeHome('ovl-q-', fs().dir);
    let driver = await h.open(options);
    return {
      get driver() { return driver; },
      async reopen() {
        await driver.cleanup();
        driver = await h.open(options);
        return driver;
      },
      dispose: () => h.dispose(),
    };
  }

  describe('overlay2 size quota', () => {
    test('a 16M quota on a container layer: 10M written through the merged view works, 20M more fails with EDQUOT/ENOSPC; a second layer\'s quota is independent', async () => {
      const h = await harness();
      try {
        const d = h.driver;
        await d.createReadWrite('base');
        await d.createReadWrite('c1', 'base', { storageOpt: { size: '16M' } });
        await d.createReadWrite('c2', 'base', { storageOpt: { size: '16M' } });
        const r1 = await d.get('c1');
        const r2 = await d.get('c2');
        try {
          await expectIndependent16MQuotas(fs().dir, [join(d.home, 'c1', 'diff'), join(d.home, 'c2', 'diff')], [r1, r2]);
        } finally {
          await d.put('c1');
          await d.put('c2');
        }
      } finally {
        await h.dispose();
      }
    });

    test('overlay2.size is the default quota of container layers; image layers get none; storageOpt.size overrides it', async () => {
      const h = await harness({ 'overlay2.size': '8M' });
      try {
        const d = h.driver;
        await d.create('img');
        expect(await xfsGetProjectId(join(d.home, 'img', 'diff'))).toBe(0);
        await d.createReadWrite('small', 'img');
        await d.createReadWrite('big', 'img', { storageOpt: { size: '32M' } });
        const root = await d.get('small');
        try {
          expect(['EDQUOT', 'ENOSPC']).toContain(await writeError(join(root, 'f'), 12 << 20));
        } finally {
          await d.put('small');
        }
        const big = await d.get('big');
        try {
          expect(await writeError(join(big, 'f'), 12 << 20)).toBeNull();
        } finally {
          await d.put('big');
        }
        // Reopening keeps handing out fresh ids: the scan starts above the existing layers.
        const d2 = await h.reopen();
        await d2.createReadWrite('after', 'img');
        const ids = await Promise.all(['small', 'big', 'after'].map((id) => xfsGetProjectId(join(d2.home, id))));
        expect(new Set(ids).size).toBe(3);
        expect(ids[2]).toBeGreaterThan(Math.max(ids[0]!, ids[1]!));
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

  driverConformanceSuite('overlay2 (xfs prjquota)', () => harness(), { quota: true });
}
