// The native bulk reader (default) and the node:fs path (pureJs) must give the same
// change lists, sizes and byte-identical tars; encodeHeaderInto must write exactly
// encodeHeader's bytes.
import { execFileSync } from 'node:child_process';
import { chmod, lchown, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { lsetxattrSync, lutimesNsSync, mknodSync, constants, statDirSync, statPathsSync, STAT, STAT_FIELDS } from '@cairnfs/sys';
import { copyTree } from '@cairnfs/core';
import {
  changesBetween, diffSizeOf, encodeHeader, encodeHeaderInto, exportChanges, exportOverlayUpper, exportTree,
  type TarHeaderInput,
} from '@cairnfs/archive';

let work: string;
let parent: string;
let layer: string;

async function bytes(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'cairn-walk-'));
  parent = join(work, 'parent');
  layer = join(work, 'layer');
  await mkdir(join(parent, 'a', 'deep'), { recursive: true });
  await mkdir(join(parent, 'a-b'));
  await mkdir(join(parent, 'gone', 'sub'), { recursive: true });
  await writeFile(join(parent, 'a', 'deep', 'f'), 'deep');
  await writeFile(join(parent, 'a-b', 'x'), 'x');
  await writeFile(join(parent, 'gone', 'sub', 'y'), 'y');
  await writeFile(join(parent, 'same'), 'same');
  await writeFile(join(parent, 'xattr'), 'x');
  lsetxattrSync(join(parent, 'xattr'), 'user.k', Buffer.from([0, 1, 2]));
  await symlink('a/deep/f', join(parent, 'link'));
  await copyTree(parent, layer, { reflink: 'never' });
  // Edits: content+size, a retargeted link (same length), an xattr value, a chown, a new
  // subtree, a deletion, a long unicode name, hardlinks, a fifo, odd times.
  await writeFile(join(layer, 'a', 'deep', 'f'), 'deeper');
  await rm(join(layer, 'link'));
  await symlink('a/deep/g', join(layer, 'link'));
  lsetxattrSync(join(layer, 'xattr'), 'user.k', Buffer.from([0, 1, 3]));
  await lchown(join(layer, 'same'), 1234, 5678);
  await rm(join(layer, 'gone'), { recursive: true });
  await mkdir(join(layer, 'new', 'sub'), { recursive: true });
  const long = 'ü'.repeat(60);
  await writeFile(join(layer, 'new', long), 'long name');
  await writeFile(join(layer, 'new', 'sub', 'h1'), 'hardlinked');
  await link(join(layer, 'new', 'sub', 'h1'), join(layer, 'new', 'sub', 'h2'));
  execFileSync('mkfifo', [join(layer, 'new', 'fifo')]);
  await writeFile(join(layer, 'new', 'old'), 'old');
  lutimesNsSync(join(layer, 'new', 'old'), -1_500_000_000n, -1_500_000_000n);
  await writeFile(join(layer, 'new', 'whole'), 'whole');
  lutimesNsSync(join(layer, 'new', 'whole'), 1_700_000_000_000_000_000n, 1_700_000_000_000_000_000n);
  await writeFile(join(layer, 'new', 'bigid'), 'id');
  await lchown(join(layer, 'new', 'bigid'), 3_000_000, 3_000_001);
  await chmod(join(layer, 'new', 'bigid'), 0o4755);
});
afterEach(async () => { await rm(work, { recursive: true, force: true }); });

test('native and pure-JS changesBetween give the same sorted list, with deletions, adds and modified parents', async () => {
  const native = await changesBetween(layer, parent, { pureJs: false });
  const js = await changesBetween(layer, parent, { pureJs: true });
  expect(native).toEqual(js);
  expect(native).toEqual([
    { path: '/a', kind: 'modify' },
    { path: '/a/deep', kind: 'modify' },
    { path: '/a/deep/f', kind: 'modify' },
    { path: '/gone', kind: 'delete' },
    { path: '/link', kind: 'modify' },
    { path: '/new', kind: 'add' },
    { path: '/new/bigid', kind: 'add' },
    { path: '/new/fifo', kind: 'add' },
    { path: '/new/old', kind: 'add' },
    { path: '/new/sub', kind: 'add' },
    { path: '/new/sub/h1', kind: 'add' },
    { path: '/new/sub/h2', kind: 'add' },
    { path: '/new/whole', kind: 'add' },
    { path: `/new/${'ü'.repeat(60)}`, kind: 'add' }, // UTF-16 order, as sortChanges
    { path: '/same', kind: 'modify' },
    { path: '/xattr', kind: 'modify' },
  ]);
  expect(await changesBetween(layer, null, { pureJs: false })).toEqual(await changesBetween(layer, null, { pureJs: true }));
});

test('native and pure-JS diffSizeOf agree and count a hardlinked file once', async () => {
  const changes = await changesBetween(layer, null);
  const native = await diffSizeOf(layer, changes, { pureJs: false });
  expect(native).toBe(await diffSizeOf(layer, changes, { pureJs: true }));
  // deeper(6) x(1) long name(9) hardlinked(10, once) old(3) whole(5) id(2) same(4) xattr(1)
  expect(native).toBe(6 + 1 + 9 + 10 + 3 + 5 + 2 + 4 + 1);
});

test('native and pure-JS exportChanges are byte-identical', async () => {
  const changes = await changesBetween(layer, parent);
  const native = await bytes(exportChanges(layer, changes, { pureJs: false }));
  const js = await bytes(exportChanges(layer, changes, { pureJs: true }));
  expect(native.length).toBeGreaterThan(10 * 512);
  expect(native.equals(js)).toBe(true);
  const all = await changesBetween(layer, null);
  expect((await bytes(exportChanges(layer, all, { pureJs: false }))).equals(await bytes(exportChanges(layer, all, { pureJs: true })))).toBe(true);
});

test('native and pure-JS exportOverlayUpper are byte-identical, whiteouts and opaque dirs included', async () => {
  mknodSync(join(layer, 'a', 'deleted'), constants.S_IFCHR, 0, 0);
  lsetxattrSync(join(layer, 'new'), 'trusted.overlay.opaque', Buffer.from('y'));
  const native = await bytes(exportOverlayUpper(layer, { pureJs: false }));
  const js = await bytes(exportOverlayUpper(layer, { pureJs: true }));
  expect(native.equals(js)).toBe(true);
  expect(native.includes(Buffer.from('a/.wh.deleted'))).toBe(true);
  expect(native.includes(Buffer.from('new/.wh..wh..opq'))).toBe(true);
  expect(native.includes(Buffer.from('trusted.overlay'))).toBe(false);
});

test('exportChanges of a path that vanished fails with ERR_BACKEND_FAILED on both paths (a path gone mid-diff, not a missing layer)', async () => {
  for (const pureJs of [false, true]) {
    await expect(bytes(exportChanges(layer, [{ path: '/nope', kind: 'add' }], { pureJs }))).rejects.toMatchObject({ code: 'ERR_BACKEND_FAILED' });
  }
});

test('encodeHeaderInto writes exactly encodeHeader bytes, and 0 when the target is too small', () => {
  const inputs: TarHeaderInput[] = [
    { name: 'a', type: 'file', mode: 0o644, size: 5, mtimeNs: 1_700_000_000_123_456_789n },
    { name: 'dir', type: 'dir', mode: 0o755, mtimeNs: 1_700_000_000_000_000_000n },
    { name: 'd/sub/', type: 'dir', mode: 0o1777, uid: 7, gid: 8, mtimeNs: 1n },
    { name: 'x/l', type: 'symlink', mode: 0o777, linkname: 'ü/target', mtimeNs: 1_700_000_000_100_000_000n },
    { name: 'x/h', type: 'hardlink', mode: 0o644, linkname: 'x/a' },
    { name: 'dev', type: 'char', mode: 0o600, devmajor: 4095, devminor: 3_000_000, mtimeNs: -1_500_000_000n },
    { name: 'blk', type: 'block', mode: 0o660, devmajor: 8, devminor: 1, mtimeNs: 10n ** 20n },
    { name: 'ü'.repeat(50), type: 'file', mode: 0o644, size: 0, mtimeNs: 5n },
    { name: 'n/' + 'a'.repeat(120), type: 'file', mode: 0o644, size: 1, mtimeNs: 5n },
    { name: 'x', type: 'fifo', mode: 0o644, uid: 3_000_000, mtimeNs: 0n },
    { name: 'big', type: 'file', mode: 0o644, size: 2 ** 34, mtimeNs: 7n },
    { name: 'xa', type: 'file', mode: 0o644, size: 1, xattrs: new Map([['user.a', Buffer.from([0, 255])]]) },
    { name: 'tab\tname\u0001', type: 'file', mode: 0o644, size: 1, mtimeNs: 3n },
    { name: 'n'.repeat(100), type: 'file', mode: 0o644, size: 1, mtimeNs: 8_589_934_591_999_999_999n },
    { name: 'é'.repeat(50), type: 'dir', mode: 0o755, mtimeNs: 8_589_934_592_000_000_000n },
    { name: 'dev2', type: 'char', mode: 0o600, devmajor: 2_097_152, devminor: 0, mtimeNs: 1_000_000_000n },
    { name: 'neg', type: 'file', mode: 0o644, uid: -2, gid: -3, size: 0, mtimeNs: 4n },
    { name: 'ü/ä', type: 'symlink', mode: 0o777, linkname: 'l'.repeat(100), mtimeNs: 2n },
  ];
  for (const h of inputs) {
    const want = encodeHeader(h);
    const target = Buffer.alloc(want.length + 100, 0xee);
    expect(encodeHeaderInto(h, target, 50)).toBe(want.length);
    expect(target.subarray(50, 50 + want.length).equals(want)).toBe(true);
    expect(target[49]).toBe(0xee);
    expect(target[50 + want.length]).toBe(0xee);
    expect(encodeHeaderInto(h, Buffer.alloc(want.length - 1), 0)).toBe(0);
  }
});

test('statDirSync and statPathsSync report lstat fields, xattrs and link targets as numbers', async () => {
  const listing = statDirSync(layer, 3);
  const i = listing.names.indexOf('xattr');
  expect(i).toBeGreaterThanOrEqual(0);
  expect(listing.stats[i * STAT_FIELDS + STAT.size]).toBe(1);
  const xi = listing.xattrs.indexOf(i);
  expect(listing.xattrs.slice(xi, xi + 3)).toEqual([i, 'user.k', Buffer.from([0, 1, 3])]);
  const l = listing.names.indexOf('link');
  expect(listing.links).toEqual([l, 'a/deep/g']);
  const batch = statPathsSync(layer, ['/new/bigid', 'missing', 'new/sub/h2'], 0);
  expect(batch.stats[STAT.uid]).toBe(3_000_000);
  expect(batch.stats[STAT.mode]).toBe(constants.S_IFREG | 0o4755);
  expect(batch.stats[STAT_FIELDS + STAT.mode]).toBe(0);
  expect(batch.stats[2 * STAT_FIELDS + STAT.nlink]).toBe(2);
  expect(() => statDirSync(join(layer, 'missing'))).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'scandir' }));
});

test('native (addon-packed) and pure-JS exports are byte-identical on long names and links, big files, devices, sockets, xattr order and odd change paths', async () => {
  const deep = join(layer, 'n'.repeat(70), 'm'.repeat(70));
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'f'.repeat(40)), 'long path');
  await symlink('t'.repeat(150), join(layer, 'new', 'longlink'));
  await writeFile(join(layer, 'new', 'big'), Buffer.alloc(300 * 1024 + 3, 7));
  mknodSync(join(layer, 'new', 'null'), constants.S_IFCHR | 0o666, 1, 3);
  mknodSync(join(layer, 'new', 'loop'), constants.S_IFBLK | 0o660, 7, 0);
  mknodSync(join(layer, 'new', 'sock'), constants.S_IFSOCK | 0o755, 0, 0);
  await writeFile(join(layer, 'new', '\u{1F600}'), 'emoji');
  await writeFile(join(layer, 'new', '\uE000'), 'private use');
  lsetxattrSync(join(layer, 'new', 'big'), 'user.z', Buffer.from('z'));
  lsetxattrSync(join(layer, 'new', 'big'), 'user.a', Buffer.from([0xff, 0]));
  lsetxattrSync(join(layer, 'new', 'big'), 'trusted.overlay.origin', Buffer.from('host'));
  lsetxattrSync(join(layer, 'new'), 'user.dir', Buffer.alloc(3000, 0x41));
  const all = await changesBetween(layer, null);
  const odd = [...all.map((c) => ({ ...c, path: c.path.replace('/new/', '//new/./') })),
    { path: '/a/deep/was', kind: 'delete' as const }, { path: '/', kind: 'modify' as const }];
  for (const changes of [all, odd]) {
    const native = await bytes(exportChanges(layer, changes, { pureJs: false }));
    expect(native.includes(Buffer.from('SCHILY.xattr.user.a'))).toBe(true);
    expect(native.includes(Buffer.from('new/sock'))).toBe(false);
    expect(native.equals(await bytes(exportChanges(layer, changes, { pureJs: true })))).toBe(true);
  }
  lsetxattrSync(join(layer, 'new'), 'trusted.overlay.opaque', Buffer.from('y'));
  mknodSync(join(layer, 'a', 'deleted'), constants.S_IFCHR, 0, 0);
  const native = await bytes(exportOverlayUpper(layer, { pureJs: false }));
  expect(native.equals(await bytes(exportOverlayUpper(layer, { pureJs: true })))).toBe(true);
  expect((await bytes(exportChanges(layer, all, { pureJs: false, whiteouts: 'overlay' })))
    .equals(await bytes(exportChanges(layer, all, { pureJs: true, whiteouts: 'overlay' })))).toBe(true);
});

test("an xattr name PAX cannot carry ('=') fails both export paths with ERR_INVALID_ARCHIVE", async () => {
  lsetxattrSync(join(layer, 'same'), 'user.a=b', Buffer.from('v'));
  for (const pureJs of [false, true]) {
    await expect(bytes(exportChanges(layer, [{ path: '/same', kind: 'add' }], { pureJs }))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE', subject: 'same' });
  }
});

test("exportTree packs the bytes of exportChanges of every path, in path order ('a', 'a-b', 'a/deep'), on both paths", async () => {
  await mkdir(join(layer, 'a', 'deep', 'z'));
  await writeFile(join(layer, 'a.txt'), 'between a and a/ in path order');
  mknodSync(join(layer, 'new', 'sock'), constants.S_IFSOCK | 0o755, 0, 0);
  const want = await bytes(exportChanges(layer, await changesBetween(layer, null), { pureJs: true }));
  const native = await bytes(await exportTree(layer, { pureJs: false }));
  expect(native.equals(want)).toBe(true);
  expect((await bytes(await exportTree(layer, { pureJs: true }))).equals(want)).toBe(true);
  // Path order, not directory order: 'a-b' and 'a.txt' come before a's contents.
  expect(native.indexOf('a-b/')).toBeLessThan(native.indexOf('a/deep/'));
  expect(native.indexOf('a.txt')).toBeLessThan(native.indexOf('a/deep/'));
});

test('a native export stream destroyed half way closes every fd it opened', async () => {
  await writeFile(join(layer, 'new', 'big'), Buffer.alloc(1024 * 1024, 1));
  const { readdirSync } = await import('node:fs');
  const fds = (): number => readdirSync('/proc/self/fd').length;
  const before = fds();
  for (const stream of [exportChanges(layer, await changesBetween(layer, null), { pureJs: false }), await exportTree(layer, { pureJs: false })]) {
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // the packer is open, mid-way through new/big
    expect(fds()).toBeGreaterThan(before);
    stream.destroy();
    await new Promise((resolve) => stream.once('close', resolve));
    expect(fds()).toBe(before);
  }
});
