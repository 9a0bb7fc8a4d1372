import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMountInfo } from '@cairnfs/core';
import { packEntries } from '@cairnfs/archive';
import { MIGRATE_JOURNAL, layerDigest, migrate, orderParentsFirst } from '../src/migrate.js';
import type { StorageDriver } from '@cairnfs/core';
import type { TarSourceEntry } from '@cairnfs/archive';
import type { LayerRef, MigrateProgress } from '../src/migrate.js';
import { aufsDriver } from '@cairnfs/aufs';
import { Overlay2Driver, overlay2Driver, probeOverlay } from '@cairnfs/overlay2';
import * as sys from '@cairnfs/sys';
import { describeBackend, expectCode, expectSameTree, snapshotTree, withMounted } from '@cairnfs/testkit';
import { vfsDriver } from '@cairnfs/vfs';
import { AUFS_STORE_MTIME as T, putPinned as put, writeDockerStore, writeExpectedTop } from '@cairnfs/testkit';

async function overlayMissing(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root to mount overlayfs';
  const dir = await mkdtemp(join(tmpdir(), 'cairn-mig-probe-'));
  try {
    const p = await probeOverlay(join(dir, 'overlay2'));
    return p.usable ? null : p.reason;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const file = (name: string, content: string, mode = 0o644): TarSourceEntry => ({
  header: { name, type: 'file', mode, uid: 0, gid: 0, size: Buffer.byteLength(content), mtimeNs: T },
  body: Buffer.from(content),
});
const dir = (name: string, mode = 0o755): TarSourceEntry => ({ header: { name, type: 'dir', mode, uid: 0, gid: 0, mtimeNs: T } });
const link = (name: string, target: string): TarSourceEntry => ({ header: { name, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtimeNs: T, linkname: target } });

/** Four layers with additions, edits, a deletion, a replaced directory (opaque) and a symlink. */
const LAYERS: Array<LayerRef & { entries: TarSourceEntry[] }> = [
  { id: 'l1', parent: null, entries: [dir('etc'), file('etc/os-release', 'ID=test\n'), dir('opt'), file('opt/a', 'a'), file('opt/b', 'b'), dir('bin'), file('bin/tool', '#!/bin/sh\n', 0o755)] },
  { id: 'l2', parent: 'l1', entries: [dir('etc'), file('etc/os-release', 'ID=test\nVERSION=2\n'), file('etc/.wh.os-release-old', '', 0o600), link('etc/alias', 'os-release')] },
  { id: 'l3', parent: 'l2', entries: [dir('opt'), file('opt/.wh..wh..opq', '', 0o600), file('opt/c', 'c'), dir('bin'), file('bin/.wh.tool', '', 0o600)] },
  { id: 'l4', parent: 'l3', entries: [dir('data', 0o700), file('data/blob', 'x'.repeat(200_000), 0o600)] },
];

async function fill(d: StorageDriver): Promise<void> {
  for (const l of LAYERS) {
    await d.create(l.id, l.parent);
    await d.applyDiff(l.id, l.parent, packEntries(l.entries));
  }
}

const refs = (): LayerRef[] => LAYERS.map(({ id, parent }) => ({ id, parent }));

async function unmountUnder(root: string): Promise<void> {
  const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${root}/`));
  for (const m of mounts.reverse()) await sys.umount2(m.mountPoint, sys.constants.MNT_DETACH).catch(() => undefined);
}

describe('migrate: layer ordering', () => {
  test('parents come before children whatever the input order; an unknown parent is refused', async () => {
    const order = orderParentsFirst([{ id: 'c', parent: 'b' }, { id: 'a', parent: null }, { id: 'b', parent: 'a' }, { id: 'x', parent: 'a' }]);
    expect(order.map((l) => l.id)).toEqual(['a', 'b', 'c', 'x']);
    expect(() => orderParentsFirst([{ id: 'c', parent: 'missing' }])).toThrow(expect.objectContaining({ code: 'ERR_PARENT_NOT_FOUND' }));
    expect(() => orderParentsFirst([{ id: 'a', parent: 'b' }, { id: 'b', parent: 'a' }])).toThrow(expect.objectContaining({ code: 'ERR_PREREQUISITES' }));
  });
});

describeBackend('overlay', await overlayMissing(), () => {
  let base: string;
  let opened: StorageDriver[];
  const track = <D extends StorageDriver>(d: D): D => {
    opened.push(d);
    return d;
  };
  const openOverlay = async (root: string) => track(await overlay2Driver.open({ root, home: join(root, 'overlay2'), options: {}, lockTimeoutMs: 0 }));
  const openVfs = async (root: string) => track(await vfsDriver.open({ root, home: join(root, 'vfs'), options: {}, lockTimeoutMs: 0 }));
  const openAufs = async (root: string) => track(await aufsDriver.open({ root, home: join(root, 'aufs'), options: {}, lockTimeoutMs: 0 }));

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-migrate-'));
    opened = [];
  });
  afterEach(async () => {
    for (const d of opened) await d.cleanup().catch(() => undefined);
    await unmountUnder(base);
    await rm(base, { recursive: true, force: true });
  });

  test('aufs → overlay2: a Docker aufs store moves with ids, parents and contents; the aufs store is untouched', async () => {
    await writeDockerStore(join(base, 'src/aufs'));
    const from = await openAufs(join(base, 'src'));
    const before = await snapshotTree(join(base, 'src/aufs'));
    const to = await openOverlay(join(base, 'dst'));

    const seen: MigrateProgress[] = [];
    const result = await migrate(from, to, { onProgress: (p) => { seen.push(p); } });

    expect(seen.map((p) => [p.id, p.parent, p.index, p.outcome])).toEqual([
      ['base', null, 1, 'copied'], ['mid', 'base', 2, 'copied'], ['top', 'mid', 3, 'copied'],
    ]);
    expect(result).toMatchObject({ copied: 3, already: 0 });
    expect(await (to as Overlay2Driver).parentOf('top')).toBe('mid');
    expect(await to.changes('mid')).toEqual(await from.changes('mid'));
    expect(await to.changes('top')).toEqual(await from.changes('top'));
    const expected = join(base, 'expected');
    await mkdir(expected);
    await writeExpectedTop(expected);
    await withMounted(to, 'top', async (rootfs) => expectSameTree(await snapshotTree(rootfs), await snapshotTree(expected)));
    expectSameTree(await snapshotTree(join(base, 'src/aufs')), before);
    const journal = JSON.parse(await readFile(join(to.home, MIGRATE_JOURNAL), 'utf8')) as { verified: Record<string, string> };
    expect(Object.keys(journal.verified).sort()).toEqual(['base', 'mid', 'top']);
  });

  test('aufs → vfs: a directory aufs copied up without changing it is no difference; the merged trees match', async () => {
    await writeDockerStore(join(base, 'src/aufs'));
    await put(join(base, 'src/aufs/diff/top/etc'), null); // copied up, then its new file removed again
    const from = await openAufs(join(base, 'src'));
    const to = await openVfs(join(base, 'dst'));
    expect((await from.changes('top')).map((c) => c.path)).not.toContain('/etc');
    expect((await migrate(from, to)).copied).toBe(3);
    const expected = join(base, 'expected');
    await mkdir(expected);
    await writeExpectedTop(expected);
    await withMounted(to, 'top', async (rootfs) => expectSameTree(await snapshotTree(rootfs), await snapshotTree(expected)));
  });

  test('overlay2 → vfs: every layer mounts to the same tree on both sides, opaque dirs and whiteouts included', async () => {
    const from = await openOverlay(join(base, 'src'));
    await fill(from);
    const to = await openVfs(join(base, 'dst'));
    const result = await migrate(from, to, { layers: refs() });
    expect(result.copied).toBe(4);
    for (const { id } of LAYERS) {
      const a = await withMounted(from, id, (p) => snapshotTree(p));
      const b = await withMounted(to, id, (p) => snapshotTree(p));
      expectSameTree(b, a);
      expect(await layerDigest(to, id, undefined)).toBe(await layerDigest(from, id, undefined));
    }
    expect(await to.changes('l3')).toEqual(await from.changes('l3'));
  });

  test('a driver that cannot list its layers needs the list: ERR_PREREQUISITES names what to pass', async () => {
    const from = await openOverlay(join(base, 'src'));
    const to = await openVfs(join(base, 'dst'));
    await expectCode(migrate(from, to), 'ERR_PREREQUISITES');
  });

  test('interrupted after layer 2, then resumed: layers 1-2 are not copied again, the half-applied layer 3 is redone, all verify', async () => {
    const from = await openOverlay(join(base, 'src'));
    await fill(from);
    const to = await openVfs(join(base, 'dst'));
    await expect(migrate(from, to, {
      layers: refs(),
      onProgress: (p) => { if (p.index === 2) throw new Error('interrupted'); },
    })).rejects.toThrow('interrupted');
    expect(await to.exists('l2')).toBe(true);
    expect(await to.exists('l3')).toBe(false);

    // What a crash in the middle of layer 3 leaves: the layer created, partly applied, journaled as in progress.
    const journalPath = join(to.home, MIGRATE_JOURNAL);
    const journal = JSON.parse(await readFile(journalPath, 'utf8')) as { inProgress: string | null };
    journal.inProgress = 'l3';
    await (await import('node:fs/promises')).writeFile(journalPath, JSON.stringify(journal));
    await to.create('l3', 'l2');
    await to.applyDiff('l3', 'l2', packEntries([file('half', 'only part of it')]));

    const seen: MigrateProgress[] = [];
    const result = await migrate(from, to, { layers: refs(), onProgress: (p) => { seen.push(p); } });
    expect(seen.map((p) => [p.id, p.outcome])).toEqual([['l1', 'already'], ['l2', 'already'], ['l3', 'copied'], ['l4', 'copied']]);
    expect(result).toMatchObject({ copied: 2, already: 2 });
    for (const { id } of LAYERS) {
      const a = await withMounted(from, id, (p) => snapshotTree(p));
      const b = await withMounted(to, id, (p) => snapshotTree(p));
      expectSameTree(b, a);
    }
  });

  test('a target that loses content fails verification: ERR_BACKEND_FAILED, the bad copy removed, the source intact', async () => {
    const from = await openOverlay(join(base, 'src'));
    await fill(from);
    const real = await openVfs(join(base, 'dst'));
    // A real vfs store whose applyDiff drops the tar it is given for l2 and applies another.
    const lossy: StorageDriver = Object.assign(Object.create(real) as StorageDriver, {
      applyDiff: async (id: string, parent: string | null | undefined, tar: AsyncIterable<Uint8Array>) => {
        if (id !== 'l2') return real.applyDiff(id, parent, tar);
        for await (const _ of tar) { /* drained and thrown away */ }
        return real.applyDiff(id, parent, packEntries([dir('etc'), file('etc/os-release', 'ID=wrong\n')]));
      },
    });
    await expectCode(migrate(from, lossy, { layers: refs() }), 'ERR_BACKEND_FAILED');
    expect(await real.exists('l1')).toBe(true);
    expect(await real.exists('l2')).toBe(false);
    expect(await withMounted(from, 'l2', (p) => readFile(join(p, 'etc/os-release'), 'utf8'))).toBe('ID=test\nVERSION=2\n');
  });

  test('a layer already in the target with other contents, not made by this migration, is refused and kept', async () => {
    const from = await openOverlay(join(base, 'src'));
    await fill(from);
    const to = await openVfs(join(base, 'dst'));
    await to.create('l1', null);
    await to.applyDiff('l1', null, packEntries([file('mine', 'not yours')]));
    await expectCode(migrate(from, to, { layers: refs() }), 'ERR_LAYER_EXISTS');
    expect(await withMounted(to, 'l1', (p) => readFile(join(p, 'mine'), 'utf8'))).toBe('not yours');
  });
  test('a container layer holding a 1 GiB sparse file stops at maxLayerBytes: ERR_INVALID_ARCHIVE, no copy left, resumable', async () => {
    // issue 13, finding 11: a container can truncate(1) a 16 TiB file; its diff streams it as zeros.
    const from = await openOverlay(join(base, 'src'));
    await from.create('b', null);
    await from.applyDiff('b', null, packEntries([file('a', 'base')]));
    await from.createReadWrite('c', 'b');
    await withMounted(from, 'c', async (p) => { execFileSync('truncate', ['-s', '1G', join(p, 'huge')]); });
    const to = await openVfs(join(base, 'dst'));
    const layers = [{ id: 'b', parent: null }, { id: 'c', parent: 'b', readWrite: true }];
    const started = performance.now();
    const err = await migrate(from, to, { layers, maxLayerBytes: 64 << 20 }).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARCHIVE', subject: 'c' });
    expect(await to.exists('b')).toBe(true);
    expect(await to.exists('c')).toBe(false);
  });
});
