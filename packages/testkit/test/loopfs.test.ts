import { open, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { readMountInfo } from '@cairnfs/core';
import { describeBackend, loopFsMissing, makeLoopFs, missingTools } from '@cairnfs/testkit';

test('missingTools is null for installed tools and names each missing one', () => {
  expect(missingTools('mount', 'umount')).toBeNull();
  expect(missingTools('mount', 'no-such-tool-cairn', 'nor-this-one')).toBe('no-such-tool-cairn, nor-this-one not found: run scripts/install-deps.sh');
});

async function isMounted(dir: string): Promise<boolean> {
  return (await readMountInfo()).some((m) => m.mountPoint === dir);
}

describeBackend('loop-ext4', loopFsMissing('ext4'), () => {
  test('makeLoopFs mounts a fresh filesystem and dispose unmounts it and deletes the image', async () => {
    const fs = await makeLoopFs('ext4', { sizeMiB: 16, mountOptions: 'noatime' });
    const mount = (await readMountInfo()).find((m) => m.mountPoint === fs.dir);
    expect(mount).toMatchObject({ fsType: 'ext4' });
    expect(mount!.mountOptions.split(',')).toContain('noatime');
    await writeFile(join(fs.dir, 'f'), 'x');
    await fs.dispose();
    expect(await isMounted(fs.dir)).toBe(false);
    await expect(stat(dirname(fs.dir))).rejects.toMatchObject({ code: 'ENOENT' });
    await fs.dispose(); // twice is fine
  });

  test('dispose detaches a mount that is still busy instead of failing', async () => {
    const fs = await makeLoopFs('ext4', { sizeMiB: 16 });
    const busy = await open(join(fs.dir, 'held-open'), 'w');
    try {
      await fs.dispose();
      expect(await isMounted(fs.dir)).toBe(false);
    } finally {
      await busy.close();
    }
  });
});

describeBackend('loop-tmpfs', loopFsMissing('tmpfs'), () => {
  test('a tmpfs gets the requested size limit', async () => {
    const fs = await makeLoopFs('tmpfs', { sizeMiB: 8 });
    try {
      const mount = (await readMountInfo()).find((m) => m.mountPoint === fs.dir);
      expect(mount?.options).toMatch(/size=8192k/);
    } finally {
      await fs.dispose();
    }
  });
});
