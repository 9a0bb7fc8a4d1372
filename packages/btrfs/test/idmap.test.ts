// get with idMappings on btrfs (FS_ALLOW_IDMAP): the subvolume shown through an id-mapped
// mount; the same checks as overlay2 and vfs. btrfs has no chown-copy fallback.
import { join } from 'node:path';
import { describeBackend, idmappedGetChecks, loopFsMissing, makeLoopFs, type LoopFs } from '@cairnfs/testkit';
import { harness } from './helpers.js';

const missing = loopFsMissing('btrfs');

describeBackend('btrfs', missing, () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('btrfs', { sizeMiB: 256 }); });
  afterAll(async () => { await fs?.dispose(); });

  idmappedGetChecks('btrfs', async () => {
    const h = await harness(fs.dir);
    return { driver: h.driver, layerDir: (id) => join(h.driver.home, 'subvolumes', id), dispose: () => h.dispose() };
  }, { fullCopies: true });
});
