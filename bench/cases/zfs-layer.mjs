// zfs per-layer cost on zfs-fuse (a file-backed pool): create(child of parent) + get + put
// through the driver vs what a layer is on zfs, run by hand: `zfs snapshot` of the parent
// and `zfs clone` of that snapshot (moby's zfs driver does the same two for a layer).
import { comparePair } from '../harness.mjs';
import { run } from '../env.mjs';

export async function zfsCases({ pairs, cairn, zfsKit }) {
  const missing = zfsKit.zfsFuseMissing();
  if (missing) return [{ name: 'zfs create+get+put', skipped: missing }];
  const fixture = await zfsKit.startZfsFuse({ sizeBytes: 1024 ** 3 });
  try {
    const { dataset, path } = await fixture.newFilesystem('bench');
    const driver = await cairn.openDriver({ root: `${path}/root`, driver: 'zfs' });
    await driver.create('parent', null);
    await driver.applyDiff('parent', null, cairn.packEntries([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }]));
    const ref = `${dataset}/refparent`;
    await run('/sbin/zfs', ['create', '-o', 'mountpoint=none', ref]);
    const result = await comparePair({
      name: 'zfs create+get+put per layer', pairs: Math.max(pairs, 10), referenceName: 'zfs snapshot + zfs clone',
      setup: (side, i) => side === 'cairn'
        ? { teardown: () => driver.remove(`c${i}`), id: `c${i}` }
        : { snap: `${ref}@s${i}`, clone: `${dataset}/refclone${i}`, teardown: async () => {
          await run('/sbin/zfs', ['destroy', `${dataset}/refclone${i}`]);
          await run('/sbin/zfs', ['destroy', `${ref}@s${i}`]);
        } },
      cairn: async (ctx) => {
        await driver.create(ctx.id, 'parent');
        await driver.get(ctx.id);
        await driver.put(ctx.id);
      },
      reference: async (ctx) => {
        await run('/sbin/zfs', ['snapshot', ctx.snap]);
        await run('/sbin/zfs', ['clone', '-o', 'mountpoint=none', ctx.snap, ctx.clone]);
      },
    });
    await driver.remove('parent');
    await driver.cleanup();
    return [result];
  } finally {
    await fixture.dispose();
  }
}
