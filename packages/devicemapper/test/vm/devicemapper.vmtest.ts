import { existsSync } from 'node:fs';
import { readFile, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { StorageDriver } from '@cairnfs/core';
import { Layout, devicemapperDriver, kernelMissing } from '@cairnfs/devicemapper';
import { collect, describeBackend, expectCode, expectSameTree, snapshotTree, withMounted } from '@cairnfs/testkit';
import { SMALL_POOL, harness, newHome, openAt, sh, usedDataBlocks } from './harness.js';
import { makeLoopDisk, makeRawPool } from './pools.js';

function statusOf(rows: Array<[string, string]>): Map<string, string> {
  return new Map(rows);
}

describeBackend('devicemapper', kernelMissing(), () => {
  test('probe in a kernel with device-mapper says usable', async () => {
    const h = await newHome(SMALL_POOL);
    const p = await devicemapperDriver.probe({ root: h.root, home: h.home, options: h.options, lockTimeoutMs: 0 });
    expect(p).toMatchObject({ name: 'devicemapper', priority: 4, usable: true });
  });

  test('loop-lvm: sparse data/metadata files, moby status, removal frees pool blocks, cleanup detaches everything', async () => {
    const t = await harness({ ...SMALL_POOL, 'dm.basesize': '64M' });
    try {
      const d = t.driver;
      const layout = new Layout(t.home.home, '');
      expect(existsSync(layout.dataFile)).toBe(true);
      const st = statusOf(await d.status());
      expect(st.get('Pool Name')).toMatch(/^cairn-.*-pool$/);
      expect(st.get('Pool Mode')).toMatch(/loop-lvm.*testing only/);
      expect(st.get('Pool Blocksize')).toBe('65.54 kB');
      expect(st.get('Base Device Size')).toBe('67.11 MB');
      expect(st.get('Backing Filesystem')).toBe('extfs');
      expect(st.get('Data Space Total')).toBe('1.074 GB');
      expect(st.get('Metadata Space Total')).toBe('33.55 MB');
      expect(st.get('Data loop file')).toBe(layout.dataFile);
      for (const key of ['Data Space Used', 'Data Space Available', 'Metadata Space Used', 'Metadata Space Available',
        'Thin Pool Minimum Free Space', 'Udev Sync Supported', 'Deferred Removal Enabled', 'Deferred Deletion Enabled', 'Data file', 'Metadata file']) {
        expect(st.has(key)).toBe(true);
      }
      const pool = st.get('Pool Name')!;
      await d.createReadWrite('fat');
      const before = usedDataBlocks(pool);
      await withMounted(d, 'fat', (root) => writeFile(join(root, 'blob'), Buffer.alloc(24 << 20, 3)));
      const filled = usedDataBlocks(pool);
      expect(filled - before).toBeGreaterThanOrEqual((24 << 20) / 65536);
      const meta = await d.metadata('fat');
      expect(Number(meta.DeviceSize)).toBe(64 << 20);
      await d.remove('fat');
      expect(usedDataBlocks(pool)).toBeLessThanOrEqual(before);
      await d.cleanup();
      expect(sh('dmsetup', ['ls'])).not.toContain(pool);
      expect(sh('losetup', ['-j', layout.dataFile]).trim()).toBe('');
    } finally {
      await t.dispose();
    }
  });

  test('a create interrupted after its snapshot was taken is rolled back on reopen: no layer, device id freed', async () => {
    const t = await harness({ ...SMALL_POOL, 'dm.basesize': '32M' });
    try {
      const d = t.driver;
      await d.createReadWrite('a');
      await withMounted(d, 'a', (root) => writeFile(join(root, 'f'), 'a'));
      const aId = Number((await d.metadata('a')).DeviceId);
      const pool = statusOf(await d.status()).get('Pool Name')!;
      const txBefore = Number(sh('dmsetup', ['status', pool]).trim().split(/\s+/)[3]);
      await d.cleanup();
      // What a crash between "record the transaction" and "commit it" leaves: the open
      // transaction, the thin snapshot in the pool, even the layer's metadata file.
      const again = await t.reopen();
      const layout = new Layout(t.home.home, '');
      const orphanId = aId + 50;
      sh('dmsetup', ['message', pool, '0', `create_snap ${orphanId} ${aId}`]);
      await writeFile(layout.transactionFile, JSON.stringify({ id: txBefore + 1, deviceId: orphanId, subject: 'b', op: 'create' }));
      await writeFile(layout.layerMeta('b'), JSON.stringify({ deviceId: orphanId, size: 32 << 20, transactionId: txBefore + 1, parent: 'a', kind: 'rw', applied: false }));
      await again.cleanup();
      const recovered = await t.reopen();
      expect(existsSync(layout.transactionFile)).toBe(false);
      expect(existsSync(layout.layerMeta('b'))).toBe(false);
      expect(await recovered.exists('b')).toBe(false);
      // The orphan id is free again: the pool accepts a new thin device with it.
      sh('dmsetup', ['message', pool, '0', `create_thin ${orphanId}`]);
      sh('dmsetup', ['message', pool, '0', `delete ${orphanId}`]);
      await recovered.createReadWrite('b', 'a');
      expect(await withMounted(recovered, 'b', (root) => readFile(join(root, 'f'), 'utf8'))).toBe('a');
    } finally {
      await t.dispose();
    }
  });

  test('storageOpt size grows a layer past the base size and a smaller size is refused', async () => {
    const t = await harness({ ...SMALL_POOL, 'dm.basesize': '32M' });
    try {
      const d = t.driver;
      await d.createReadWrite('big', null, { storageOpt: { size: '96M' } });
      const total = await withMounted(d, 'big', async (root) => { const s = await statfs(root); return s.blocks * s.bsize; });
      expect(total).toBeGreaterThan(64 << 20);
      await withMounted(d, 'big', (root) => writeFile(join(root, 'blob'), Buffer.alloc(48 << 20, 1)));
      await expectCode(d.createReadWrite('small', 'big', { storageOpt: { size: '64M' } }), 'ERR_INVALID_OPTION');
      expect(await d.exists('small')).toBe(false);
    } finally {
      await t.dispose();
    }
  });

  test('loop files grow on reopen with a bigger dm.loopdatasize and an explicit smaller one is refused', async () => {
    const t = await harness({ ...SMALL_POOL, 'dm.basesize': '16M' });
    try {
      await t.driver.createReadWrite('keep');
      await t.driver.cleanup();
      const grown = await openAt(t.home, { ...SMALL_POOL, 'dm.basesize': '16M', 'dm.loopdatasize': '2G' });
      expect(statusOf(await grown.status()).get('Data Space Total')).toBe('2.147 GB');
      expect(await grown.exists('keep')).toBe(true);
      await grown.cleanup();
      await expectCode(openAt(t.home, { ...SMALL_POOL, 'dm.loopdatasize': '1G' }), 'ERR_INVALID_OPTION');
    } finally {
      await t.dispose();
    }
  });

  test('xfs: two snapshots of one layer mounted at once (nouuid), each with its own writes; diff/apply round trip', async () => {
    const t = await harness({ ...SMALL_POOL, 'dm.basesize': '320M', 'dm.fs': 'xfs' });
    try {
      const d: StorageDriver = t.driver;
      expect(statusOf(await d.status()).get('Backing Filesystem')).toBe('xfs');
      await d.createReadWrite('base');
      await withMounted(d, 'base', (root) => writeFile(join(root, 'shared'), 'base'));
      await d.createReadWrite('s1', 'base');
      await d.createReadWrite('s2', 'base');
      const r1 = await d.get('s1');
      const r2 = await d.get('s2');
      try {
        expect(r1).not.toBe(r2);
        await writeFile(join(r1, 'only1'), '1');
        await writeFile(join(r2, 'only2'), '2');
        expect(await readFile(join(r1, 'shared'), 'utf8')).toBe('base');
        expect(await readFile(join(r2, 'shared'), 'utf8')).toBe('base');
        expect(existsSync(join(r1, 'only2'))).toBe(false);
        expect(existsSync(join(r2, 'only1'))).toBe(false);
      } finally {
        await d.put('s1');
        await d.put('s2');
      }
      expect(await d.changes('s1')).toEqual([{ path: '/only1', kind: 'add' }]);
      const tar = await collect(await d.diff('s2'));
      await d.create('copy', 'base');
      await d.applyDiff('copy', 'base', Readable.from([tar]));
      const want = await withMounted(d, 's2', snapshotTree);
      await withMounted(d, 'copy', async (root) => expectSameTree(await snapshotTree(root), want));
    } finally {
      await t.dispose();
    }
  });

  test('dm.thinpooldev uses an existing pool and leaves it in place on cleanup', async () => {
    const pool = await makeRawPool('tpd', 2 ** 30);
    try {
      const t = await harness({ 'dm.thinpooldev': pool.dev, 'dm.basesize': '16M' });
      try {
        const st = statusOf(await t.driver.status());
        expect(st.get('Pool Name')).toBe(pool.name);
        expect(st.has('Data loop file')).toBe(false);
        await t.driver.createReadWrite('l');
        await withMounted(t.driver, 'l', (root) => writeFile(join(root, 'x'), 'x'));
        await t.driver.cleanup();
        expect(sh('dmsetup', ['ls'])).toContain(pool.name);
        const again = await t.reopen();
        expect(await withMounted(again, 'l', (root) => readFile(join(root, 'x'), 'utf8'))).toBe('x');
      } finally {
        await t.dispose();
      }
    } finally {
      await pool.destroy();
    }
  });

  test('direct-lvm builds PV, VG and thin pool with an autoextend profile, reopens on it, and refuses a device that holds data', async () => {
    const disk = await makeLoopDisk('lvm', 1 << 30);
    const used = await makeLoopDisk('used', 64 << 20);
    try {
      sh('mkfs.ext4', ['-q', used.dev]);
      const refused = await newHome({ 'dm.directlvm_device': used.dev });
      await expectCode(openAt(refused), 'ERR_INVALID_OPTION');

      const t = await harness({ 'dm.directlvm_device': disk.dev, 'dm.basesize': '16M', 'dm.thinp_autoextend_threshold': '70' });
      try {
        const st = statusOf(await t.driver.status());
        expect(st.get('Pool Name')).toBe('cairn-thinpool');
        expect(await readFile('/etc/lvm/profile/cairn-thinpool.profile', 'utf8')).toContain('thin_pool_autoextend_threshold=70');
        expect(sh('lvs', ['--noheadings', '-o', 'lv_name,segtype', 'cairn'])).toMatch(/thinpool\s+thin-pool/);
        await t.driver.createReadWrite('l');
        await withMounted(t.driver, 'l', (root) => writeFile(join(root, 'x'), 'lvm'));
        await t.driver.cleanup();
        const again = await t.reopen();
        expect(await withMounted(again, 'l', (root) => readFile(join(root, 'x'), 'utf8'))).toBe('lvm');
        await again.remove('l');
      } finally {
        await t.dispose();
        try { sh('vgremove', ['-f', '--config', 'activation { udev_sync = 0 udev_rules = 0 }', 'cairn']); } catch { /* best effort */ }
      }
    } finally {
      await disk.destroy();
      await used.destroy();
    }
  });
});
