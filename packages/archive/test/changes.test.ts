import { chmod, lchown, link, mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lsetxattrSync, lutimesNsSync } from '@cairnfs/sys';
import { copyTree } from '@cairnfs/core';
import { changesBetween, diffSizeOf, sortChanges } from '@cairnfs/archive';

let work: string;
let parent: string;
let layer: string;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'cairn-changes-'));
  parent = join(work, 'parent');
  layer = join(work, 'layer');
  await mkdir(parent);
  await mkdir(join(parent, 'etc', 'deep'), { recursive: true });
  await writeFile(join(parent, 'etc', 'hosts'), 'hosts');
  await writeFile(join(parent, 'etc', 'deep', 'file'), 'deep');
  await mkdir(join(parent, 'var', 'lib'), { recursive: true });
  await writeFile(join(parent, 'var', 'lib', 'db'), 'db');
  await symlink('etc/hosts', join(parent, 'link'));
  await writeFile(join(parent, 'top'), 'top');
  lutimesNsSync(join(parent, 'top'), 1_000_000_000_000_000_000n, 1_000_000_000_000_000_000n);
  // The layer starts as an exact copy (what vfs does), so nothing differs until a test edits it.
  await copyTree(parent, layer, { reflink: 'never' });
});
afterEach(async () => { await rm(work, { recursive: true, force: true }); });

test('an exact copy has no changes', async () => {
  expect(await changesBetween(layer, parent)).toEqual([]);
});

test('no parent: every entry is an add, root excluded, sorted with dirs before their contents', async () => {
  const changes = await changesBetween(layer, null);
  expect(changes.every((c) => c.kind === 'add')).toBe(true);
  expect(changes.map((c) => c.path)).toEqual([
    '/etc', '/etc/deep', '/etc/deep/file', '/etc/hosts', '/link', '/top', '/var', '/var/lib', '/var/lib/db',
  ]);
});

test('a deleted subtree is reported once, at its top, and its parent as modified', async () => {
  await rm(join(layer, 'var', 'lib'), { recursive: true });
  expect(await changesBetween(layer, parent)).toEqual([
    { path: '/var', kind: 'modify' },
    { path: '/var/lib', kind: 'delete' },
  ]);
});

test('an added subtree reports every entry in it', async () => {
  await mkdir(join(layer, 'etc', 'deep', 'new', 'sub'), { recursive: true });
  await writeFile(join(layer, 'etc', 'deep', 'new', 'sub', 'f'), 'f');
  expect(await changesBetween(layer, parent)).toEqual([
    { path: '/etc', kind: 'modify' },
    { path: '/etc/deep', kind: 'modify' },
    { path: '/etc/deep/new', kind: 'add' },
    { path: '/etc/deep/new/sub', kind: 'add' },
    { path: '/etc/deep/new/sub/f', kind: 'add' },
  ]);
});

test('a same-size edit in the same second is caught by the nanosecond mtime', async () => {
  await writeFile(join(layer, 'top'), 'TOP');
  lutimesNsSync(join(layer, 'top'), 1_000_000_000_000_000_001n, 1_000_000_000_000_000_001n);
  expect(await changesBetween(layer, parent)).toEqual([{ path: '/top', kind: 'modify' }]);
});

test('a same-size edit with the mtime put back exactly is not detected (documented limit)', async () => {
  await writeFile(join(layer, 'top'), 'TOP');
  lutimesNsSync(join(layer, 'top'), 1_000_000_000_000_000_000n, 1_000_000_000_000_000_000n);
  expect(await changesBetween(layer, parent)).toEqual([]);
});

test('chown-only, chmod-only and xattr-only changes are modifications', async () => {
  await lchown(join(layer, 'etc', 'hosts'), 10, 10);
  await chmod(join(layer, 'var', 'lib', 'db'), 0o600);
  lsetxattrSync(join(layer, 'top'), 'user.tag', Buffer.from('x'));
  expect(await changesBetween(layer, parent)).toEqual([
    { path: '/etc', kind: 'modify' },
    { path: '/etc/hosts', kind: 'modify' },
    { path: '/top', kind: 'modify' },
    { path: '/var', kind: 'modify' },
    { path: '/var/lib', kind: 'modify' },
    { path: '/var/lib/db', kind: 'modify' },
  ]);
});

test('a directory whose only difference is its mtime is not a change; its own mode change is', async () => {
  lutimesNsSync(join(layer, 'etc'), 5n, 5n);
  expect(await changesBetween(layer, parent)).toEqual([]);
  await chmod(join(layer, 'etc'), 0o700);
  expect(await changesBetween(layer, parent)).toEqual([{ path: '/etc', kind: 'modify' }]);
});

test('a retargeted symlink of the same length and mtime is a modification', async () => {
  const st = 2_000_000_000_000_000_000n;
  lutimesNsSync(join(parent, 'link'), st, st);
  await unlink(join(layer, 'link'));
  await symlink('etc/HOSTS', join(layer, 'link'));
  lutimesNsSync(join(layer, 'link'), st, st);
  expect(await changesBetween(layer, parent)).toEqual([{ path: '/link', kind: 'modify' }]);
});

test('a file replaced by a directory is a modification and its contents are additions', async () => {
  await rm(join(layer, 'top'));
  await mkdir(join(layer, 'top'));
  await writeFile(join(layer, 'top', 'inside'), 'i');
  expect(await changesBetween(layer, parent)).toEqual([
    { path: '/top', kind: 'modify' },
    { path: '/top/inside', kind: 'add' },
  ]);
});

test('diffSizeOf counts added and modified regular files, a hardlinked file once', async () => {
  await writeFile(join(layer, 'big'), Buffer.alloc(1000));
  await link(join(layer, 'big'), join(layer, 'big-link'));
  await writeFile(join(layer, 'etc', 'hosts'), 'longer hosts'); // 12 bytes
  await rm(join(layer, 'var'), { recursive: true });
  const changes = await changesBetween(layer, parent);
  expect(await diffSizeOf(layer, changes)).toBe(1012);
});

test('sortChanges orders by path component, so a directory precedes its contents', () => {
  const sorted = sortChanges([
    { path: '/a-b', kind: 'add' }, { path: '/a/b', kind: 'add' }, { path: '/a', kind: 'modify' }, { path: '/a b', kind: 'add' },
  ]);
  expect(sorted.map((c) => c.path)).toEqual(['/a', '/a/b', '/a b', '/a-b']);
});

describe('content check for coarse-timestamp filesystems', () => {
  test('a same-size edit with identical mtime is found only with contentCheckSinceSec, and untouched files are not read', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-coarse-'));
    try {
      const parent = join(base, 'parent');
      const layer = join(base, 'layer');
      await mkdir(parent);
      await writeFile(join(parent, 'edited'), 'hello');
      await writeFile(join(parent, 'same'), 'same');
      await copyTree(parent, layer, { reflink: 'never' });
      const t = 1_700_000_000_000_000_000n; // whole seconds, as zfs-fuse stores them
      await writeFile(join(layer, 'edited'), 'HELLO');
      for (const dir of [parent, layer]) for (const f of ['edited', 'same']) lutimesNsSync(join(dir, f), t, t);
      expect(await changesBetween(layer, parent)).toEqual([]);
      const since = Math.floor(Date.now() / 1000) - 60; // both files' ctimes are newer: both compared
      expect(await changesBetween(layer, parent, { contentCheckSinceSec: since })).toEqual([{ path: '/edited', kind: 'modify' }]);
      // A threshold after every ctime means no file counts as touched since: nothing is read.
      expect(await changesBetween(layer, parent, { contentCheckSinceSec: since + 3600 })).toEqual([]);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
