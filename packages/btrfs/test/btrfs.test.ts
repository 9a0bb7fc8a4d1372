import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { btrfsDriver } from '@cairnfs/btrfs';
import { btrfsSetReadOnly, btrfsSnapshot, btrfsSubvolCreate, btrfsGetFlags, BTRFS_SUBVOL_RDONLY } from '@cairnfs/sys';
import {
  describeBackend, driverConformanceSuite, expectCode, loopFsMissing, makeLoopFs, tarOf, withMounted,
} from '@cairnfs/testkit';
import type { DriverHarness, LoopFs } from '@cairnfs/testkit';
import { context, destroyTree, harness, listSubvolumes, run } from './helpers.js';

const missing = loopFsMissing('btrfs');

describeBackend('btrfs', missing, () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('btrfs', { sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  driverConformanceSuite('btrfs', () => harness(fs.dir), { quota: false });

  describe('btrfs driver specifics', () => {
    let h: DriverHarness;
    beforeEach(async () => { h = await harness(fs.dir); });
    afterEach(async () => { await h.dispose(); });

    test('every layer is a subvolume at ${home}/subvolumes/<id>, get returns it, and a child is a snapshot that shares its parent\'s extents', async () => {
      const d = h.driver;
      await d.createReadWrite('base');
      const path = await d.get('base');
      expect(path).toBe(join(d.home, 'subvolumes', 'base'));
      expect((await lstat(path)).ino).toBe(256);
      await writeFile(join(path, 'big'), Buffer.alloc(48 << 20, 3));
      await d.put('base');
      await run('sync', ['-f', fs.dir]);
      const before = await used(fs.dir);
      await d.create('child', 'base');
      await d.create('grandchild', 'child');
      await run('sync', ['-f', fs.dir]);
      expect(await used(fs.dir) - before).toBeLessThan(4 << 20); // copies would add 96 MiB
      await withMounted(d, 'grandchild', async (root) => {
        expect((await lstat(root)).ino).toBe(256);
        expect((await stat(join(root, 'big'))).size).toBe(48 << 20);
      });
      expect(await d.metadata('child')).toMatchObject({ Path: join(d.home, 'subvolumes', 'child'), Parent: 'base', ReadOnly: 'false' });
    });

    test('the open-time roll-back of an interrupted apply leaves a layer alone whose apply finished since the listing (its undo snapshot gone)', async () => {
      // The race a kill trial with a live second process found: an opener lists
      // subvolumes/ and sees .undo-<id> of an apply still running; that apply finishes
      // (removing the undo) and frees the lock; the opener takes the lock and rolls back.
      // Called here directly at that point: the undo is gone, the layer is applied.
      const d = h.driver;
      await d.create('img');
      await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'a', content: 'applied' }])]));
      await (d as unknown as { restoreUndo(id: string): Promise<void> }).restoreUndo('img');
      expect(await readFile(join(d.home, 'subvolumes', 'img', 'a'), 'utf8')).toBe('applied');
      expect((await readdir(join(d.home, 'subvolumes'))).filter((n) => n.startsWith('.'))).toEqual([]);
    });

    test('an image layer gets the subvolume read-only flag after applyDiff; applying again still works; its child is writable', async () => {
      const d = h.driver;
      await d.create('img');
      const path = join(d.home, 'subvolumes', 'img');
      expect((await btrfsGetFlags(path)) & BTRFS_SUBVOL_RDONLY).toBe(0);
      await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'a', content: 'one' }])]));
      expect((await btrfsGetFlags(path)) & BTRFS_SUBVOL_RDONLY).toBe(BTRFS_SUBVOL_RDONLY);
      expect((await d.metadata('img')).ReadOnly).toBe('true');
      await d.applyDiff('img', null, Readable.from([await tarOf([{ name: 'b', content: 'two' }])]));
      expect((await readdir(path)).sort()).toEqual(['a', 'b']);
      await expect(writeFile(join(path, 'c'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
      await d.createReadWrite('ctr', 'img');
      await withMounted(d, 'ctr', (root) => writeFile(join(root, 'c'), 'x'));
      await d.remove('ctr');
      await d.remove('img'); // a read-only subvolume is destroyed too
      expect(await readdir(join(d.home, 'subvolumes'))).toEqual([]);
    });

    test('remove destroys subvolumes a container created inside its layer, at any depth, also inside read-only parents', async () => {
      const d = h.driver;
      await d.createReadWrite('ctr');
      const root = await d.get('ctr');
      await mkdir(join(root, 'var/lib/docker'), { recursive: true });
      // As a container would: with btrfs-progs, nested three deep, one of them read-only.
      await run('btrfs', ['subvolume', 'create', join(root, 'var/lib/docker/inner')]);
      await run('btrfs', ['subvolume', 'create', join(root, 'var/lib/docker/inner/deeper')]);
      await writeFile(join(root, 'var/lib/docker/inner/deeper/file'), 'x');
      await run('btrfs', ['subvolume', 'snapshot', '-r', join(root, 'var/lib/docker/inner'), join(root, 'ro-snap')]);
      await run('btrfs', ['subvolume', 'create', join(root, 'top')]);
      await d.put('ctr');
      const mine = (await listSubvolumes(fs.dir)).filter((p) => p.includes(`${h.driver.home.slice(fs.dir.length + 1)}/`));
      expect(mine).toHaveLength(5);
      await d.remove('ctr');
      expect(await d.exists('ctr')).toBe(false);
      expect((await listSubvolumes(fs.dir)).filter((p) => p.includes(h.driver.home.slice(fs.dir.length + 1)))).toEqual([]);
      expect(await readdir(join(d.home, 'subvolumes'))).toEqual([]);
    });

    test('a create that fails after its subvolume was made (size without quotas) is rolled back: no subvolume, no metadata, no layer', async () => {
      const d = h.driver;
      const before = await listSubvolumes(fs.dir);
      await expectCode(d.createReadWrite('q', null, { storageOpt: { size: '64M' } }), 'ERR_QUOTA_UNSUPPORTED');
      const err = await d.createReadWrite('q', null, { storageOpt: { size: '64M' } }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(/btrfs quota enable/);
      expect(await d.exists('q')).toBe(false);
      expect(await listSubvolumes(fs.dir)).toEqual(before);
      expect(await readdir(join(d.home, 'subvolumes'))).toEqual([]);
      expect(await readdir(join(d.home, 'meta'))).toEqual([]);
      await d.createReadWrite('q'); // the id is free again
    });

    test('a create whose metadata cannot be written is rolled back, and a snapshot of a parent too', async () => {
      const d = h.driver;
      await d.createReadWrite('base');
      // A directory where the metadata file goes: the rename onto it fails (EISDIR).
      await mkdir(join(d.home, 'meta', 'child.json', 'blocker'), { recursive: true });
      const before = await listSubvolumes(fs.dir);
      const err = await d.create('child', 'base').catch((e: unknown) => e);
      expect((err as { code?: string }).code).toBe('EISDIR');
      expect(await d.exists('child')).toBe(false);
      expect(await listSubvolumes(fs.dir)).toEqual(before);
      expect(await readdir(join(d.home, 'subvolumes'))).toEqual(['base']);
      await rm(join(d.home, 'meta', 'child.json'), { recursive: true });
      await d.remove('base'); // no phantom child holds it
    });

    test('reopen destroys leftovers of interrupted creates and removes (nested and read-only ones too) and drops orphan metadata', async () => {
      const d = h.driver;
      await d.createReadWrite('keep');
      await withMounted(d, 'keep', (root) => writeFile(join(root, 'f'), 'kept'));
      await d.cleanup();
      const sub = join(d.home, 'subvolumes');
      // What a crash mid-create leaves: a staging snapshot with a nested subvolume, its metadata written.
      await btrfsSnapshot(join(sub, 'keep'), sub, '.staging-half-0123456789ab');
      await btrfsSubvolCreate(join(sub, '.staging-half-0123456789ab'), 'nested');
      await writeFile(join(d.home, 'meta', 'half.json'), JSON.stringify({ parent: 'keep', kind: 'container' }));
      await writeFile(join(d.home, 'meta', '.half.json.tmp'), '{');
      // What a crash mid-remove leaves: a read-only subvolume renamed into the trash.
      await btrfsSubvolCreate(sub, '.trash-gone-0123456789ab');
      await btrfsSetReadOnly(join(sub, '.trash-gone-0123456789ab'), true);
      const again = await h.reopen();
      expect(await readdir(sub)).toEqual(['keep']);
      expect(await readdir(join(again.home, 'meta'))).toEqual(['keep.json']);
      expect((await listSubvolumes(fs.dir)).filter((p) => p.includes(again.home.slice(fs.dir.length + 1)))).toHaveLength(1);
      expect(await again.exists('half')).toBe(false);
      await withMounted(again, 'keep', async (root) => expect(await readFile(join(root, 'f'), 'utf8')).toBe('kept'));
      await again.createReadWrite('half', 'keep');
    });

    test('a subvolume in subvolumes/ without metadata (a home written by moby) is adopted as a base layer', async () => {
      const d = h.driver;
      await d.cleanup();
      await btrfsSubvolCreate(join(d.home, 'subvolumes'), 'from-moby');
      const again = await h.reopen();
      expect(await again.exists('from-moby')).toBe(true);
      expect(await again.changes('from-moby')).toEqual([]);
    });

    test('status names the filesystem, its UUID and quota state', async () => {
      const status = new Map(await h.driver.status());
      expect(status.get('Backing Filesystem')).toBe('btrfs');
      expect(status.get('Filesystem UUID')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(status.get('Quota Enabled')).toBe('false');
      const { stdout } = await run('btrfs', ['filesystem', 'show', fs.dir]);
      expect(stdout).toContain(status.get('Filesystem UUID'));
    });

    test('invalid ids and unknown options fail before anything is touched', async () => {
      const d = h.driver;
      await expectCode(d.create('../escape'), 'ERR_INVALID_ID');
      await expectCode(d.createReadWrite('ok', '.hidden'), 'ERR_INVALID_ID');
      await expectCode(d.createReadWrite('ok', null, { storageOpt: { inodes: '5' } }), 'ERR_INVALID_OPTION');
      await expectCode(d.createReadWrite('ok', null, { storageOpt: { size: 'lots' } }), 'ERR_INVALID_OPTION');
      expect(await readdir(join(d.home, 'subvolumes'))).toEqual([]);
      const root = await mkdtemp(join(fs.dir, 'opts-'));
      try {
        await expectCode(btrfsDriver.open(context(root, { 'btrfs.nonsense': '1' })), 'ERR_INVALID_OPTION');
        const small = await btrfsDriver.open(context(root, { 'btrfs.min_space': '32M' }));
        try {
          await expectCode(small.createReadWrite('tiny', null, { storageOpt: { size: '16M' } }), 'ERR_INVALID_OPTION');
          expect(await small.exists('tiny')).toBe(false);
        } finally {
          await small.cleanup();
        }
      } finally {
        await destroyTree(root);
      }
    });
  });

  describe('probe', () => {
    test('usable on btrfs; on another filesystem unusable with ERR_INCOMPATIBLE_FS naming it, and open refuses', async () => {
      const onBtrfs = await btrfsDriver.probe(context(join(fs.dir, 'not-yet-created')));
      expect(onBtrfs).toMatchObject({ name: 'btrfs', priority: 2, usable: true, backingFs: 'btrfs' });
      const elsewhere = await mkdtemp(join(tmpdir(), 'cairn-btrfs-probe-'));
      try {
        const fsName = (await statfs(elsewhere)).type === 0x01021994 ? 'tmpfs' : undefined;
        const probed = await btrfsDriver.probe(context(elsewhere));
        expect(probed).toMatchObject({ usable: false, code: 'ERR_INCOMPATIBLE_FS' });
        expect(probed.reason).toMatch(new RegExp(`backing filesystem is ${fsName ?? probed.backingFs}, not btrfs`));
        await expectCode(btrfsDriver.open(context(elsewhere)), 'ERR_INCOMPATIBLE_FS');
        expect(await readdir(elsewhere)).toEqual([]); // nothing created
        expect(await btrfsDriver.hasLayers(context(elsewhere))).toBe(false);
      } finally {
        await rm(elsewhere, { recursive: true, force: true });
      }
    });
  });
});

/** Bytes in use on the filesystem at `dir` (statfs). */
async function used(dir: string): Promise<number> {
  const s = await statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
}
