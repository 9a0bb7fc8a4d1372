import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, mount, umount2 } from '@cairnfs/sys';
import { describeBackend, idmappedGetChecks, shiftedLayerChecks } from '@cairnfs/testkit';
import { VfsLayout, vfsDriver } from '@cairnfs/vfs';

const missing = process.getuid?.() === 0 ? null : 'id-mapped mounts need root (CAP_SYS_ADMIN) on the host filesystem';

// As root on ext4/tmpfs: id-mapped mounts; forced off by option; and on ramfs, a real
// filesystem that cannot be id-mapped (no FS_ALLOW_IDMAP), where the driver must find out
// by itself and fall back.
for (const variant of ['idmapped', 'option', 'ramfs'] as const) {
  describeBackend('idmapped-mounts', missing, () => {
    idmappedGetChecks(`vfs (${variant})`, async () => {
      const root = await mkdtemp(join(tmpdir(), 'cairn-vfs-idmap-'));
      if (variant === 'ramfs') await mount('ramfs', root, 'ramfs', 0, 'mode=0700');
      const home = join(root, 'vfs');
      await mkdir(home);
      const driver = await vfsDriver.open({ root, home, options: variant === 'option' ? { 'vfs.idmapped_mounts': 'false' } : {}, lockTimeoutMs: 0 });
      const layout = new VfsLayout(home);
      return {
        driver,
        layerDir: (id) => layout.layerPath(id),
        dispose: async () => {
          await driver.cleanup().catch(() => undefined);
          if (variant === 'ramfs') await umount2(root, constants.MNT_DETACH);
          await rm(root, { recursive: true, force: true });
        },
      };
    }, { fallback: variant !== 'idmapped', fullCopies: true });
  });
}

for (const fallback of [false, true]) {
  describeBackend('idmapped-mounts', missing, () => {
    shiftedLayerChecks(`vfs${fallback ? ' (chown copies)' : ''}`, async () => {
      const root = await mkdtemp(join(tmpdir(), 'cairn-vfs-idmap-'));
      const home = join(root, 'vfs');
      const driver = await vfsDriver.open({ root, home, options: fallback ? { 'vfs.idmapped_mounts': 'false' } : {}, lockTimeoutMs: 0 });
      const layout = new VfsLayout(home);
      return {
        driver, layerDir: (id) => layout.layerPath(id),
        dispose: async () => { await driver.cleanup().catch(() => undefined); await rm(root, { recursive: true, force: true }); },
      };
    });
  });
}

test('on ramfs the status names the filesystem as the reason for chown copies', async () => {
  if (missing) return;
  const root = await mkdtemp(join(tmpdir(), 'cairn-vfs-idmap-'));
  await mount('ramfs', root, 'ramfs', 0, 'mode=0700');
  try {
    const d = await vfsDriver.open({ root, home: join(root, 'vfs'), options: {}, lockTimeoutMs: 0 });
    expect(new Map(await d.status()).get('Id-mapped mounts')).toMatch(/^no, chown copies \(.*cannot be id-mapped/);
    const [probe] = await Promise.all([vfsDriver.probe({ root, home: join(root, 'vfs'), options: {}, lockTimeoutMs: 0 })]);
    expect(probe!.notes?.join(' ')).toMatch(/chown copies .*cannot be id-mapped/);
    await d.cleanup();
  } finally {
    await umount2(root, constants.MNT_DETACH);
    await rm(root, { recursive: true, force: true });
  }
});
