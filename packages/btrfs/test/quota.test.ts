import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { btrfsFsInfo, btrfsSubvolId } from '@cairnfs/sys';
import { describeBackend, expectCode, loopFsMissing, makeLoopFs, missingTools, tarOf, withMounted } from '@cairnfs/testkit';
import type { DriverHarness, LoopFs } from '@cairnfs/testkit';
import { harness, run } from './helpers.js';

const missing = loopFsMissing('btrfs') ?? missingTools('btrfs');

/** The qgroup limit the kernel holds for a subvolume, from sysfs (null: no qgroup or no limit). */
async function kernelLimit(fsid: string, subvolId: number): Promise<number | null> {
  try {
    const v = Number((await readFile(`/sys/fs/btrfs/${fsid}/qgroups/0_${subvolId}/max_referenced`, 'utf8')).trim());
    return v > 0 ? v : null;
  } catch {
    return null;
  }
}

describeBackend('btrfs', missing, () => {
  describe('btrfs quota through qgroups (quotas enabled on the test filesystem by the test)', () => {
    let fs: LoopFs;
    let fsid: string;
    let h: DriverHarness;
    beforeAll(async () => {
      // commit=1: the cleaner that finishes deleted subvolumes runs at each commit (default every 30 s).
      fs = await makeLoopFs('btrfs', { sizeMiB: 512, mountOptions: 'commit=1' });
      // Only the test turns quotas on: the driver never does.
      await run('btrfs', ['quota', 'enable', fs.dir]);
      fsid = (await btrfsFsInfo(fs.dir)).fsid;
    });
    afterAll(async () => { await fs?.dispose(); });
    beforeEach(async () => { h = await harness(fs.dir); });
    afterEach(async () => { await h.dispose(); });

    test('a write past storageOpt size fails with EDQUOT inside the layer, and the limit is the kernel\'s', async () => {
      const d = h.driver;
      await d.createReadWrite('q', null, { storageOpt: { size: '16M' } });
      const id = await btrfsSubvolId(join(d.home, 'subvolumes', 'q'));
      expect(await kernelLimit(fsid, id)).toBe(16 << 20);
      expect((await d.metadata('q')).Quota).toBe(String(16 << 20));
      expect(new Map(await d.status()).get('Quota Enabled')).toBe('true');
      await withMounted(d, 'q', async (root) => {
        await writeFile(join(root, 'fits'), Buffer.alloc(8 << 20, 1));
        const err = await writeFile(join(root, 'big'), Buffer.alloc(32 << 20, 1)).then(() => null, (e: unknown) => e);
        // Node 20 has no name for EDQUOT: errno -122, code 'UNKNOWN' or none.
        expect(Math.abs((err as { errno?: number } | null)?.errno ?? 0)).toBe(122);
      });
    });

    test('applyDiff past the limit is ERR_NO_SPACE', async () => {
      const d = h.driver;
      await d.create('img', null, { storageOpt: { size: '8M' } });
      const tar = await tarOf([{ name: 'huge', content: Buffer.alloc(24 << 20, 7) }]);
      await expectCode(d.applyDiff('img', null, Readable.from([tar])), 'ERR_NO_SPACE');
    });

    test('a snapshot inherits its parent\'s limit; btrfs.size is the default for container layers only', async () => {
      const d = h.driver;
      await d.createReadWrite('parent', null, { storageOpt: { size: '20M' } });
      await d.createReadWrite('child', 'parent');
      expect((await d.metadata('child')).Quota).toBe(String(20 << 20));
      await d.cleanup();
      const sized = await harness(fs.dir, { 'btrfs.size': '12M' });
      try {
        await sized.driver.createReadWrite('ctr');
        await sized.driver.create('image');
        expect((await sized.driver.metadata('ctr')).Quota).toBe(String(12 << 20));
        expect((await sized.driver.metadata('image')).Quota).toBeUndefined();
        expect(new Map(await sized.driver.status()).get('Default Container Size')).toBe('12MiB');
      } finally {
        await sized.dispose();
      }
    });

    test('remove destroys the layer\'s qgroup (and those of subvolumes nested in it) once btrfs has cleaned them', async () => {
      const d = h.driver;
      await d.createReadWrite('q', null, { storageOpt: { size: '16M' } });
      const root = await d.get('q');
      await run('btrfs', ['subvolume', 'create', join(root, 'nested')]);
      const ids = [await btrfsSubvolId(root), await btrfsSubvolId(join(root, 'nested'))];
      await d.put('q');
      await d.remove('q');
      await run('btrfs', ['subvolume', 'sync', fs.dir]);
      await d.cleanup();
      // Pending qgroups (EBUSY while the cleaner ran) are retried at cleanup/reopen.
      await (await h.reopen()).cleanup();
      for (const id of ids) {
        await expect(access(`/sys/fs/btrfs/${fsid}/qgroups/0_${id}`)).rejects.toMatchObject({ code: 'ENOENT' });
      }
      const { stdout } = await run('btrfs', ['qgroup', 'show', fs.dir]);
      expect(stdout).not.toMatch(new RegExp(`0/${ids[0]}\\b`));
    });
  });
});
