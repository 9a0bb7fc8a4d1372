import { describeBackend, idmappedGetChecks, shiftedLayerChecks } from '@cairnfs/testkit';
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
