import { existsSync } from 'node:fs';
import { appendFile, chmod, chown, link, lstat, mkdir, readdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { changesBetween, diffSizeOf } from '@cairnfs/archive';
import type { Change } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { collect, describeBackend, expectSameTree, snapshotTree, tarEntries } from '@cairnfs/testkit';
import type { Overlay2Driver } from '@cairnfs/overlay2';
import { makeHome, overlayMissing } from './helpers.js';
import type { Home } from './helpers.js';

const missing = await overlayMissing();

/** What the naive walk (both layers mounted, whole trees compared) says. */
async function naiveChanges(d: Overlay2Driver, id: string, parent: string): Promise<Change[]> {
  const [a, b] = [await d.get(id), await d.get(parent)];
  try {
    return await changesBetween(a, b);
  } finally {
    await d.put(id);
    await d.put(parent);
  }
}

async function fillBase(root: string): Promise<void> {
  await mkdir(join(root, 'a/sub'), { recursive: true });
  await writeFile(join(root, 'a/f1'), 'one');
  await writeFile(join(root, 'a/f2'), 'two');
  await writeFile(join(root, 'a/sub/x'), 'old x');
  await writeFile(join(root, 'b'), 'bee');
  await mkdir(join(root, 'c/deep'), { recursive: true });
  await writeFile(join(root, 'c/deep/file'), 'c');
  await writeFile(join(root, 'h1'), 'hard');
  await link(join(root, 'h1'), join(root, 'h2'));
  await writeFile(join(root, 'same'), 'AAAA');
  await writeFile(join(root, 'owned'), 'o');
  await writeFile(join(root, 'untouched'), 'u');
  const t = new Date('2020-01-01T00:00:00.000Z');
  await utimes(join(root, 'same'), t, t);
}

/** A child that exercises every kind of change overlayfs records. */
async function mutate(root: string): Promise<void> {
  await rm(join(root, 'a/f1'));                                   // whiteout
  await rm(join(root, 'c'), { recursive: true });                 // whiteout of a dir
  await rm(join(root, 'a/sub'), { recursive: true });             // removed and recreated: opaque
  await mkdir(join(root, 'a/sub'));
  await writeFile(join(root, 'a/sub/y'), 'new y');
  await writeFile(join(root, 'same'), 'BBBB');                    // same size
  const t = new Date('2020-01-01T00:00:00.500Z');                 // same second, other ns
  await utimes(join(root, 'same'), t, t);
  await chown(join(root, 'owned'), 1000, 1000);                   // chown-only copy-up
  await appendFile(join(root, 'h1'), '!');                        // copy-up of one hardlink name
  await rename(join(root, 'b'), join(root, 'b2'));                // rename of a file
  await mkdir(join(root, 'new/deep'), { recursive: true });
  await writeFile(join(root, 'new/deep/file'), 'n');
  await symlink('/etc/hosts', join(root, 'link'));
  await chmod(join(root, 'a/f2'), 0o600);
}

describeBackend('overlayfs', missing, () => {
  let h: Home;
  let d: Overlay2Driver;
  beforeEach(async () => {
    h = await makeHome();
    d = await h.open();
    await d.createReadWrite('base');
    const root = await d.get('base');
    await fillBase(root);
    await d.put('base');
    await d.createReadWrite('child', 'base');
    await mutate(await d.get('child'));
    await d.put('child');
  });
  afterEach(async () => {
    await h.dispose();
  });

  test('native diff is in use on this kernel (no redirect_dir, no metacopy)', async () => {
    expect(d.features.nativeDiff).toBe(true);
    expect(new Map(await d.status()).get('Native Overlay Diff')).toBe('true');
  });

  test('the upper dir holds overlay whiteouts: 0/0 char devices and an opaque xattr', async () => {
    const st = await lstat(join(h.home, 'child/diff/a/f1'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
    expect(sys.lgetxattrSync(join(h.home, 'child/diff/a/sub'), 'trusted.overlay.opaque')?.toString()).toBe('y');
  });

  test('native changes are exactly the naive walk: deletes, opaque recreate, same-second edit, chown-only, hardlink copy-up, rename', async () => {
    const native = await d.changes('child');
    expect(native).toEqual(await naiveChanges(d, 'child', 'base'));
    expect(native).toEqual([
      { path: '/a', kind: 'modify' },
      { path: '/a/f1', kind: 'delete' },
      { path: '/a/f2', kind: 'modify' },
      { path: '/a/sub', kind: 'modify' },
      { path: '/a/sub/x', kind: 'delete' },
      { path: '/a/sub/y', kind: 'add' },
      { path: '/b', kind: 'delete' },
      { path: '/b2', kind: 'add' },
      { path: '/c', kind: 'delete' },
      { path: '/h1', kind: 'modify' },
      { path: '/link', kind: 'add' },
      { path: '/new', kind: 'add' },
      { path: '/new/deep', kind: 'add' },
      { path: '/new/deep/file', kind: 'add' },
      { path: '/owned', kind: 'modify' },
      { path: '/same', kind: 'modify' },
    ]);
  });

  test('a file opened for writing but left unchanged is copied up, yet reported unchanged, as the naive walk says', async () => {
    await d.createReadWrite('touch', 'base');
    const root = await d.get('touch');
    const st = await lstat(join(root, 'untouched'));
    await chmod(join(root, 'untouched'), st.mode & 0o7777); // forces a copy-up, changes nothing
    await d.put('touch');
    expect(existsSync(join(h.home, 'touch/diff/untouched'))).toBe(true);
    expect(await d.changes('touch')).toEqual([]);
    expect(await naiveChanges(d, 'touch', 'base')).toEqual([]);
  });

  test('diff streams the upper dir as OCI: .wh. for deletions, .wh..wh..opq for the recreated dir', async () => {
    const names = (await tarEntries(await collect(await d.diff('child')))).map((e) => e.name.replace(/\/$/, ''));
    expect(names).toEqual(expect.arrayContaining(['a/.wh.f1', '.wh.c', '.wh.b', 'a/sub/.wh..wh..opq', 'a/sub/y', 'b2', 'same', 'owned', 'h1']));
    expect(names).not.toContain('untouched');
    expect(names.some((n) => n.startsWith('c/'))).toBe(false);
  });

  test('diff → applyDiff on a new layer over the same parent reproduces the child exactly, and deletions stay hidden above', async () => {
    const tar = await collect(await d.diff('child'));
    await d.create('copy', 'base');
    await d.applyDiff('copy', 'base', Readable.from([tar]));
    // The applied layer's upper carries overlay whiteouts, not .wh. files.
    expect((await lstat(join(h.home, 'copy/diff/a/f1'))).isCharacterDevice()).toBe(true);
    expect(existsSync(join(h.home, 'copy/diff/a/.wh.f1'))).toBe(false);
    const want = await snapshotTree(await d.get('child'));
    const got = await snapshotTree(await d.get('copy'));
    try {
      expectSameTree(got, want);
    } finally {
      await d.put('child');
      await d.put('copy');
    }
    // Two more layers on top: the deleted and replaced entries never come back.
    await d.createReadWrite('g1', 'copy');
    await d.createReadWrite('g2', 'g1');
    const top = await d.get('g2');
    try {
      expect(existsSync(join(top, 'a/f1'))).toBe(false);
      expect(existsSync(join(top, 'c'))).toBe(false);
      expect((await readdir(join(top, 'a/sub'))).sort()).toEqual(['y']);
    } finally {
      await d.put('g2');
    }
  });

  test('diffSize natively equals the naive size of the changed files', async () => {
    const native = await d.diffSize('child');
    const changes = await d.changes('child');
    const merged = await d.get('child');
    try {
      expect(native).toBe(await diffSizeOf(merged, changes));
    } finally {
      await d.put('child');
    }
    expect(native).toBe('new y'.length + 'BBBB'.length + 'o'.length + 'hard!'.length + 'n'.length + 'two'.length + 'bee'.length);
  });

  test('against a parent that is not the direct one, diff and changes fall back to the naive walk', async () => {
    await d.createReadWrite('grand', 'child');
    await writeFile(join(await d.get('grand'), 'g'), 'g');
    await d.put('grand');
    const vsBase = await d.changes('grand', 'base');
    expect(vsBase).toEqual(await naiveChanges(d, 'grand', 'base'));
    expect(vsBase).toContainEqual({ path: '/g', kind: 'add' });
    expect(vsBase).toContainEqual({ path: '/a/f1', kind: 'delete' });
    const full = (await tarEntries(await collect(await d.diff('grand', null)))).map((e) => e.name);
    expect(full).toContain('untouched');
    expect(full.some((n) => n.includes('.wh.'))).toBe(false);
  });

  test('random edits over three layers: native changes always equal the naive walk', async () => {
    let seed = 12345;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    let parent = 'child';
    for (let layer = 0; layer < 3; layer++) {
      const id = `r${layer}`;
      await d.createReadWrite(id, parent);
      const root = await d.get(id);
      for (let op = 0; op < 40; op++) {
        const dir = ['', 'a', 'a/sub', 'new', 'new/deep', 'r'][rnd(6)]!;
        const name = `n${rnd(5)}`;
        const p = join(root, dir, name);
        try {
          switch (rnd(6)) {
            case 0: await mkdir(join(root, dir), { recursive: true }); await writeFile(p, `v${rnd(3)}`); break;
            case 1: await rm(p, { recursive: true, force: true }); break;
            case 2: await mkdir(p, { recursive: true }); break;
            case 3: await rm(join(root, dir), { recursive: true, force: true }); if (rnd(2)) await mkdir(join(root, dir), { recursive: true }); break;
            case 4: await chmod(p, 0o640 + rnd(2)); break;
            default: await appendFile(p, 'x'); break;
          }
        } catch { /* ENOENT/ENOTDIR/EISDIR from random ops are fine */ }
      }
      await d.put(id);
      expect(await d.changes(id)).toEqual(await naiveChanges(d, id, parent));
      parent = id;
    }
  });
});
