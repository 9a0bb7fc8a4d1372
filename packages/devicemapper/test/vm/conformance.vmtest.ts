import { describeBackend, driverConformanceSuite } from '@cairnfs/testkit';
import { kernelMissing } from '@cairnfs/devicemapper';
import { harness } from './harness.js';
import { makeRawPool } from './pools.js';
import type { RawPool } from './pools.js';

// The shared graphdriver scenarios, ext4 on a 16M base device, so storageOpt size 16M is
// a real fixed-size device and the quota scenario checks that writing past it fails
// with ENOSPC. Every scenario gets a fresh home; to keep the process count low under
// emulation they share one thin pool (dm.thinpooldev) made once here. loop-lvm's own
// set-up and teardown are covered in devicemapper.vmtest.ts.
describeBackend('devicemapper', kernelMissing(), () => {
  let pool: RawPool;
  beforeAll(async () => { pool = await makeRawPool('conf'); });
  afterAll(async () => { await pool?.destroy(); });

  driverConformanceSuite('devicemapper (thin pool, ext4)',
    () => harness({ 'dm.thinpooldev': pool.dev, 'dm.basesize': '16M', 'dm.fs': 'ext4', 'dm.min_free_space': '0' }),
    { quota: true, depth: 20 });
});
