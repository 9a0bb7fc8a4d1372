// vfs create with a parent (a full copy, reflinked where the filesystem can) vs
// `cp -a --reflink=auto` of the same tree on the same filesystem.
import { createReadStream } from 'node:fs';
import { comparePair } from '../harness.mjs';
import { rmrf, run } from '../env.mjs';

export async function vfsCreateCases({ input, base, label, pairs, cairn }) {
  const driver = await cairn.openDriver({ root: `${base}/root-vfs-create`, driver: 'vfs' });
  await driver.create('parent', null);
  await driver.applyDiff('parent', null, createReadStream(input.tar));
  const parentDir = await driver.get('parent');
  await driver.put('parent');
  const result = await comparePair({
    name: `vfs create ${label}: create(child, parent)`, pairs, referenceName: 'cp -a --reflink=auto',
    setup: (side, i) => {
      if (side === 'cairn') return { id: `child-${i}`, teardown: () => driver.remove(`child-${i}`) };
      const dst = `${base}/cp-${i}`;
      return { dst, teardown: () => rmrf(dst) };
    },
    cairn: (ctx) => driver.create(ctx.id, 'parent'),
    reference: (ctx) => run('cp', ['-a', '--reflink=auto', parentDir, ctx.dst]),
  });
  await driver.remove('parent');
  await driver.cleanup();
  return [result];
}
