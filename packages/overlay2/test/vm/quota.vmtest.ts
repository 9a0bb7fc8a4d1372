// overlay2's quota tests, run in the test VM (a kernel with xfs quotas) by
// packages/testkit/test/quota-vm.test.ts, in the same boot as core's and the other drivers'.
// Every test name contains the word "quota": the host launcher filters on it.
import { describeBackend, makeLoopFs } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { overlay2QuotaTests } from './quota.js';

describeBackend('xfs-prjquota', null, () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('xfs', { mountOptions: 'prjquota', sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  describe('overlay2 on xfs prjquota', () => overlay2QuotaTests(() => fs));
});
