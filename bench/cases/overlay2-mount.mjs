// overlay2 get+put of a container layer on 1 and on 128 image layers vs a bare
// mount(2)+umount2(2) of the same lowers/upper/work (the cost floor: the kernel's).
import { mkdirSync, readFileSync } from 'node:fs';
import { comparePair } from '../harness.mjs';

export async function overlayMountCases({ base, pairs, cairn, sys, overlay2 }) {
  let driver;
  try {
    driver = await cairn.openDriver({ root: `${base}/root-overlay-mount`, driver: 'overlay2' });
  } catch (err) {
    return [{ name: 'overlay2 get/put', skipped: `cannot open overlay2 here: ${err.message}` }];
  }
  const results = [];
  const one = (name) => ({ name, entries: [{ header: { name, type: 'file', mode: 0o644, size: 3 }, body: Buffer.from('hi\n') }] });
  let parent = null;
  for (let i = 0; i < 128; i++) {
    const id = `img${i}`;
    await driver.create(id, parent);
    await driver.applyDiff(id, parent, cairn.packEntries(one(`f${i}`).entries));
    parent = id;
  }
  for (const depth of [1, 128]) {
    const id = `ctr${depth}`;
    await driver.createReadWrite(id, `img${depth - 1}`);
    const dir = overlay2.layerDirName(id);
    const lower = readFileSync(`${driver.home}/${dir}/lower`, 'utf8');
    const target = `${base}/bare-merged-${depth}`;
    mkdirSync(target, { recursive: true });
    const data = `lowerdir=${lower},upperdir=${dir}/diff,workdir=${dir}/work`;
    results.push(await comparePair({
      name: `overlay2 get+put, depth ${depth}`, pairs: Math.max(pairs, 20), referenceName: 'mount+umount',
      cairn: async () => {
        await driver.get(id);
        await driver.put(id);
      },
      reference: async () => {
        await sys.mountAt(driver.home, 'overlay', target, 'overlay', 0, data);
        await sys.umount2(target, 0);
      },
    }));
  }
  await driver.cleanup();
  return results;
}
