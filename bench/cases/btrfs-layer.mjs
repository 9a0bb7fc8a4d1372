// btrfs per-layer cost on a loopback btrfs: create(child of parent) + get + put through
// the driver vs `btrfs subvolume snapshot` of the same parent (what a layer is on btrfs).
import { comparePair } from '../harness.mjs';
import { run } from '../env.mjs';

export async function btrfsCases({ pairs, cairn, testkit }) {
  const missing = testkit.loopFsMissing('btrfs');
  if (missing) return [{ name: 'btrfs create+get+put', skipped: missing }];
  const fs = await testkit.makeLoopFs('btrfs', { sizeMiB: 512 });
  try {
    const driver = await cairn.openDriver({ root: `${fs.dir}/root`, driver: 'btrfs' });
    await driver.create('parent', null);
    await driver.applyDiff('parent', null, cairn.packEntries([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }]));
    const parentDir = await driver.get('parent');
    await driver.put('parent');
    const result = await comparePair({
      name: 'btrfs create+get+put per layer', pairs: Math.max(pairs, 10), referenceName: 'btrfs subvolume snapshot',
      setup: (side, i) => side === 'cairn'
        ? { teardown: () => driver.remove(`c${i}`), id: `c${i}` }
        : { dst: `${fs.dir}/snap${i}`, teardown: () => run('btrfs', ['subvolume', 'delete', `${fs.dir}/snap${i}`]) },
      cairn: async (ctx) => {
        await driver.create(ctx.id, 'parent');
        await driver.get(ctx.id);
        await driver.put(ctx.id);
      },
      reference: (ctx) => run('btrfs', ['subvolume', 'snapshot', parentDir, ctx.dst]),
    });
    await driver.remove('parent');
    await driver.cleanup();
    return [result];
  } finally {
    await fs.dispose();
  }
}
