import { describeBackend, driverConformanceSuite, startZfsFuse, zfsFuseMissing } from '@cairnfs/testkit';
import type { ZfsFuseFixture } from '@cairnfs/testkit';
import { zfsHarness } from './harness.js';

describeBackend('zfs-fuse', zfsFuseMissing(), () => {
  let fixture: ZfsFuseFixture;
  beforeAll(async () => { fixture = await startZfsFuse(); }, 60_000);
  afterAll(async () => { await fixture?.dispose(); }, 60_000);

  driverConformanceSuite('zfs', () => zfsHarness(fixture), { quota: true });
});
