import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readMountInfo } from '@cairnfs/core';
import { describeBackend, fileEntry, idmappedGetChecks, packedTarOf, shiftedLayerChecks } from '@cairnfs/testkit';
import { makeHome, overlayMissing } from './helpers.js';

const missing = await overlayMissing();

for (const fallback of [false, true]) {
  describeBackend('overlay', missing, () => {
    idmappedGetChecks('overlay2', async () => {
      const h = await makeHome();
      const driver = await h.open(fallback ? { 'overlay2.idmapped_mounts': 'false' } : {});
      return { driver, layerDir: (id) => driver.layout.diffDir(id), dispose: () => h.dispose() };
    }, { fallback });
  });
}

describeBackend('overlay', missing, () => {
  shiftedLayerChecks('overlay2', async () => {
    const h = await makeHome();
    const driver = await h.open();
    return { driver, layerDir: (id) => driver.layout.diffDir(id), dispose: () => h.dispose() };
  });
});

/** Where an id-mapped get attaches its lowers while the overlay mounts (packages/overlay2/src/idmap.ts). */
const IDMAP_SCRATCH_PREFIX = '.cairn-idmap-';

describeBackend('overlay', missing, () => {
  test('id-mapped gets reuse one scratch dir for their lowers: 12 get/put rounds leave one behind, and cleanup() removes it; the views are right every round', async () => {
    const h = await makeHome();
    try {
      const d = await h.open();
      const maps = { uidMap: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 100000, size: 65536 }] };
      await d.create('base', null);
      await d.applyDiff('base', null, Readable.from([await packedTarOf([fileEntry('etc/hostname', 'x\n')])]));
      await d.create('top', 'base');
      await d.applyDiff('top', 'base', Readable.from([await packedTarOf([fileEntry('etc/motd', 'hi\n')])]));
      const scratchDirs = async () => (await readdir(h.home)).filter((n) => n.startsWith(IDMAP_SCRATCH_PREFIX));
      for (let i = 0; i < 12; i++) {
        await d.createReadWrite(`c${i}`, 'top');
        const root = await d.get(`c${i}`, { idMappings: maps });
        expect((await stat(join(root, 'etc/hostname'))).uid).toBe(100000);
        expect((await stat(join(root, 'etc/motd'))).uid).toBe(100000);
        await d.put(`c${i}`);
      }
      expect(await scratchDirs()).toHaveLength(1);
      expect((await readdir(join(h.home, (await scratchDirs())[0]!))).sort()).toEqual(['0']); // the home's clone's slot, empty: nothing mounted
      expect((await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${h.home}/${IDMAP_SCRATCH_PREFIX}`))).toEqual([]);
      await d.cleanup();
      expect(await scratchDirs()).toEqual([]);
    } finally {
      await h.dispose();
    }
  });
});
