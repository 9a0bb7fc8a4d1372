import { describeBackend, driverConformanceSuite } from '@cairnfs/testkit';
import { harness, overlayMissing } from './helpers.js';

const missing = await overlayMissing();

describeBackend('overlayfs', missing, () => {
  driverConformanceSuite('overlay2', () => harness(), { depth: 128, quota: false });
});
