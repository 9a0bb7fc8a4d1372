import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { describeBackend, loopFsMissing, makeLoopFs } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { overlay2Driver } from '@cairnfs/overlay2';
import { makeHome, overlayMissing } from './helpers.js';

const missing = await overlayMissing();

async function errorOf(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CairnError) return err;
    throw err;
  }
  throw new Error('expected a CairnError, got success');
}

function ctx(root: string, options: Record<string, string> = {}) {
  return { root, home: join(root, 'overlay2'), options, lockTimeoutMs: 0 };
}

describeBackend('overlayfs', missing, () => {
  test('probe on ext4/tmp is usable, names the backing fs, and leaves nothing behind', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cairn-ovl-probe-'));
    try {
      const r = await overlay2Driver.probe(ctx(root));
      expect(r).toMatchObject({ name: 'overlay2', priority: 1, usable: true });
      expect(r.backingFs).toBeTruthy();
      expect(await readdir(root)).toEqual([]);
      expect(await overlay2Driver.hasLayers(ctx(root))).toBe(false);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('overlay on overlay is refused with the reason in probe() and ERR_INCOMPATIBLE_FS from open', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-ovl-on-ovl-'));
    const merged = join(base, 'merged');
    try {
      for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(base, d));
      await sys.mount('overlay', merged, 'overlay', 0, `lowerdir=${join(base, 'lower')},upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`);
      const r = await overlay2Driver.probe(ctx(merged));
      expect(r.usable).toBe(false);
      expect(r.backingFs).toBe('overlayfs');
      expect(r.reason).toMatch(/overlayfs/);
      expect((await errorOf(overlay2Driver.open(ctx(merged)))).code).toBe('ERR_INCOMPATIBLE_FS');
    } finally {
      await sys.umount2(merged, sys.constants.MNT_DETACH).catch(() => undefined);
      await rm(base, { recursive: true, force: true });
    }
  });

  // xfs ftype=0 needs the V4 format (crc=0), which this kind of kernel no longer mounts;
  // ext4 without the filetype feature is the other filesystem that lacks d_type.
  describeBackend('ext4', loopFsMissing('ext4'), () => {
    test('a filesystem without d_type (ext4 -O ^filetype) is refused with the mkfs hint', async () => {
      const fs = await makeLoopFs('ext4', { mkfsArgs: ['-O', '^filetype'] });
      try {
        const r = await overlay2Driver.probe(ctx(fs.dir));
        expect(r.usable).toBe(false);
        expect(r.backingFs).toBe('extfs');
        expect(r.reason).toMatch(/d_type/);
        expect(r.reason).toMatch(/mkfs\.ext4/);
        expect((await errorOf(overlay2Driver.open(ctx(fs.dir)))).code).toBe('ERR_INCOMPATIBLE_FS');
      } finally {
        await fs.dispose();
      }
    });
  });

  describeBackend('xfs', loopFsMissing('xfs'), () => {
    let fs: LoopFs | undefined;
    afterEach(async () => {
      await fs?.dispose();
      fs = undefined;
    });

    test('on xfs without prjquota the driver works, and size quotas are ERR_QUOTA_UNSUPPORTED naming prjquota', async () => {
      fs = await makeLoopFs('xfs');
      const h = await makeHome('ovl-', fs.dir);
      try {
        const d = await h.open();
        expect(new Map(await d.status()).get('Backing Filesystem')).toBe('xfs');
        await d.createReadWrite('base');
        await d.createReadWrite('c', 'base');
        await writeFile(join(await d.get('c'), 'f'), 'x');
        await d.put('c');
        const err = await errorOf(d.createReadWrite('q', 'base', { storageOpt: { size: '16M' } }));
        expect(err.code).toBe('ERR_QUOTA_UNSUPPORTED');
        expect(err.message).toMatch(/prjquota/);
        expect(await d.exists('q')).toBe(false);
        await d.cleanup();
        const optErr = await errorOf(h.open({ 'overlay2.size': '1G' }));
        expect(optErr.code).toBe('ERR_QUOTA_UNSUPPORTED');
      } finally {
        await h.dispose();
      }
    });

    test('size on an image layer (create) is ERR_QUOTA_UNSUPPORTED; a bad size is ERR_INVALID_OPTION', async () => {
      const h = await makeHome();
      try {
        const d = await h.open();
        expect((await errorOf(d.create('img', null, { storageOpt: { size: '16M' } }))).code).toBe('ERR_QUOTA_UNSUPPORTED');
        expect((await errorOf(d.createReadWrite('rw', null, { storageOpt: { size: 'huge' } }))).code).toBe('ERR_INVALID_OPTION');
        expect((await errorOf(d.createReadWrite('rw', null, { storageOpt: { color: 'red' } }))).code).toBe('ERR_INVALID_OPTION');
      } finally {
        await h.dispose();
      }
    });
  });

  // Enforced size quotas need a kernel with xfs quota code, which this host may lack: they
  // run in the test VM (packages/overlay2/test/vm/quota.vmtest.ts, launched by
  // packages/testkit/test/quota-vm.test.ts).
});
