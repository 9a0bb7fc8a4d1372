import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { DriverContext, StorageDriver } from '@cairnfs/core';
import { readMountInfo } from '@cairnfs/core';
import {
  describeBackend, driverConformanceSuite, expectCode, expectSameTree, loopFsMissing, makeLoopFs,
  snapshotTree, tarOf, withMounted, writeRichTree,
} from '@cairnfs/testkit';
import type { DriverHarness } from '@cairnfs/testkit';
import { vfsDriver } from '@cairnfs/vfs';

function context(root: string): DriverContext {
  return { root, home: join(root, 'vfs'), options: {}, lockTimeoutMs: 0 };
}

/** A vfs driver on a fresh root under `base` (a temp dir unless given), with reopen and dispose. */
async function harness(base?: string): Promise<DriverHarness> {
  const root = await mkdtemp(join(base ?? tmpdir(), 'cairn-vfs-'));
  const opened: StorageDriver[] = [await vfsDriver.open(context(root))];
  return {
    driver: opened[0]!,
    reopen: async () => {
      const d = await vfsDriver.open(context(root));
      opened.push(d);
      return d;
    },
    dispose: async () => {
      for (const d of opened) await d.cleanup().catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    },
  };
}

driverConformanceSuite('vfs', () => harness());

describe('vfs extras', () => {
  let h: DriverHarness;
  let d: StorageDriver;
  beforeEach(async () => { h = await harness(); d = h.driver; });
  afterEach(async () => { await h.dispose(); });

  test("layers live in Docker's layout: ${home}/dir/<id>", async () => {
    await d.createReadWrite('abc');
    expect(await d.get('abc')).toBe(join(d.home, 'dir', 'abc'));
    await d.put('abc');
    expect(await vfsDriver.hasLayers(context(join(d.home, '..')))).toBe(true);
  });

  test('a truncated tar fails with ERR_INVALID_ARCHIVE and leaves the layer exactly as before', async () => {
    await d.createReadWrite('base');
    await withMounted(d, 'base', writeRichTree);
    await d.create('img', 'base');
    const before = await withMounted(d, 'img', snapshotTree);
    const tar = await tarOf([
      { name: 'etc/hosts', content: 'replaced' },
      { name: 'new-file', content: Buffer.alloc(64 * 1024, 1) },
    ]);
    const truncated = tar.subarray(0, 512 + 512 + 512 + 10_000); // cut inside new-file's content
    await expectCode(d.applyDiff('img', 'base', Readable.from([truncated])), 'ERR_INVALID_ARCHIVE');
    expectSameTree(await withMounted(d, 'img', snapshotTree), before, { ignoreRootMtime: false });
    expect(await readdir(join(d.home, '.staging')).catch(() => [])).toEqual([]);
    // And the layer is still an unsealed image layer: a good tar applies and seals it.
    await d.applyDiff('img', 'base', Readable.from([tar]));
    await withMounted(d, 'img', async (root) => expect(await readFile(join(root, 'etc/hosts'), 'utf8')).toBe('replaced'));
  });

  test('applyDiff is refused while the layer is mounted or has children', async () => {
    await d.create('img');
    await d.get('img');
    await expectCode(d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'f', content: 'x' }])])), 'ERR_LAYER_IN_USE');
    await d.put('img');
    await d.create('child', 'img');
    await expectCode(d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'f', content: 'x' }])])), 'ERR_LAYER_IN_USE');
  });

  test('a sealed image layer is a read-only bind mount while got, and no mount remains after put', async () => {
    await d.create('img');
    await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'f', content: 'x' }])]));
    const path = await d.get('img');
    const mounts = () => readMountInfo().then((t) => t.filter((m) => m.mountPoint === path));
    expect((await mounts()).map((m) => m.mountOptions.split(',')[0])).toEqual(['ro']);
    await d.put('img');
    expect(await mounts()).toEqual([]);
  });

  test('a crash mid-create (metadata written, tree still staged) leaves nothing after reopen', async () => {
    await d.create('parent');
    await d.cleanup();
    // What a process killed between writeMeta and the staging rename leaves behind.
    await writeFile(join(d.home, 'meta', 'half.json'), JSON.stringify({ parent: 'parent', kind: 'image', sealed: false }));
    await mkdir(join(d.home, '.staging', 'half-123456'), { recursive: true });
    await writeFile(join(d.home, '.staging', 'half-123456', 'partial'), 'p');
    const again = await h.reopen();
    expect(await again.exists('half')).toBe(false);
    expect(await readdir(join(d.home, 'meta'))).toEqual(['parent.json']);
    expect(await readdir(join(d.home, '.staging'))).toEqual([]);
    await again.remove('parent'); // the half-made child does not pin its parent
  });

  test('a crash between the two renames of an applyDiff swap is finished on reopen', async () => {
    await d.create('img');
    await d.cleanup();
    // The old tree went to the trash; the applied tree is still staged; meta says so.
    const staged = join(d.home, '.staging', 'img-abcdef');
    await mkdir(staged, { recursive: true });
    await writeFile(join(staged, 'applied'), 'a');
    await rm(join(d.home, 'dir', 'img'), { recursive: true });
    await writeFile(join(d.home, 'meta', 'img.json'), JSON.stringify({ parent: null, kind: 'image', sealed: false, replacing: 'img-abcdef' }));
    const again = await h.reopen();
    expect(await again.exists('img')).toBe(true);
    await withMounted(again, 'img', async (root) => expect(await readdir(root)).toEqual(['applied']));
  });

  test('a second open of the same home works alongside the first: each sees what the other made, a mount is shared and outlives the first cleanup', async () => {
    const again = await h.reopen();
    await d.create('img');
    await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'f', content: 'x' }])]));
    expect(await again.exists('img')).toBe(true); // made after the second open: no stale table
    const path = await d.get('img');
    expect(await again.get('img')).toBe(path);
    const mine = async () => (await readMountInfo()).filter((m) => m.mountPoint === path).length;
    expect(await mine()).toBe(1); // one read-only view, two holds
    await expectCode(again.remove('img'), 'ERR_LAYER_IN_USE');
    await d.cleanup(); // drops d's hold only
    expect(await mine()).toBe(1);
    await again.put('img');
    expect(await mine()).toBe(0);
    await again.remove('img');
    expect(await again.exists('img')).toBe(false);
  });

  test('status names the backing filesystem and reflink support; unknown storage options are refused', async () => {
    const status = new Map(await d.status());
    expect(status.get('Backing Filesystem')).toBe('extfs'); // tmpdir is on ext4 here
    expect(status.get('Reflink')).toBe('no');
    await expectCode(d.createReadWrite('x', null, { storageOpt: { inodes: '5' } }), 'ERR_INVALID_OPTION');
    expect(await d.exists('x')).toBe(false);
  });

  test('probe says usable and names the backing filesystem without creating the home', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cairn-vfs-probe-'));
    try {
      expect(await vfsDriver.probe(context(root))).toMatchObject({ name: 'vfs', priority: 6, usable: true, backingFs: 'extfs' });
      expect(await readdir(root)).toEqual([]);
      expect(await vfsDriver.hasLayers(context(root))).toBe(false);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

for (const kind of ['btrfs', 'xfs'] as const) {
  describeBackend(kind, loopFsMissing(kind), () => {
    test(`on ${kind}, child layers and applyDiff copies are reflinks, and status says so`, async () => {
      // xfs needs ≥300 MiB; mkfs.xfs formats with reflink=1 by default since xfsprogs 5.1.
      const fs = await makeLoopFs(kind, { sizeMiB: kind === 'xfs' ? 320 : 256, ...(kind === 'xfs' ? { mkfsArgs: ['-m', 'reflink=1'] } : {}) });
      const h = await harness(fs.dir);
      try {
        const d = h.driver;
        expect(new Map(await d.status()).get('Reflink')).toBe('yes');
        expect(new Map(await d.status()).get('Backing Filesystem')).toBe(kind);
        await d.createReadWrite('base');
        await withMounted(d, 'base', (root) => writeFile(join(root, 'big'), Buffer.alloc(64 << 20, 5)));
        const before = await statfsUsed(fs.dir);
        await d.create('c1', 'base');
        await d.create('c2', 'c1');
        await d.applyDiff('c2', 'c1', Readable.from([await tarOf([{ name: 'small', content: 'x' }])]));
        const grown = (await statfsUsed(fs.dir)) - before;
        // Shared extents: a read/write copy would add ≥192 MiB. (Since Linux 5.19 a plain
        // copy_file_range shares extents on btrfs and xfs too, so this checks the outcome,
        // and the status line above checks that the driver found FICLONE.)
        expect(grown).toBeLessThan(16 << 20);
        const want = await withMounted(d, 'base', snapshotTree);
        expectSameTree(await withMounted(d, 'c1', snapshotTree), want);
        expect((await stat(join(await d.get('c2'), 'big'))).size).toBe(64 << 20);
        await d.put('c2');
      } finally {
        await h.dispose();
        await fs.dispose();
      }
    });
  });
}

/** Bytes in use on the filesystem of `dir`, after flushing it (btrfs allocates at writeback). */
async function statfsUsed(dir: string): Promise<number> {
  execFileSync('sync', ['-f', dir]);
  const s = await statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
}
