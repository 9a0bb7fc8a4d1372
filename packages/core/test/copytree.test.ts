import { chmod, lchown, link, lstat, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants as sysConstants, lsetxattrSync, lutimesNsSync, mknodSync } from '@cairnfs/sys';
import { copyTree } from '@cairnfs/core';
import { expectSameTree, snapshotTree } from '@cairnfs/testkit';

let work: string;
beforeEach(async () => { work = await mkdtemp(join(tmpdir(), 'cairn-copytree-')); });
afterEach(async () => { await rm(work, { recursive: true, force: true }); });

async function buildTree(src: string): Promise<void> {
  await mkdir(join(src, 'd', 'e'), { recursive: true });
  await writeFile(join(src, 'd', 'e', 'f'), 'content');
  await lchown(join(src, 'd', 'e', 'f'), 1234, 5678);
  await chmod(join(src, 'd', 'e', 'f'), 0o6750); // after chown, or chown would clear setuid/setgid
  lsetxattrSync(join(src, 'd', 'e', 'f'), 'trusted.t', Buffer.from([0, 255]));
  lsetxattrSync(join(src, 'd', 'e', 'f'), 'user.u', Buffer.from('u'));
  await writeFile(join(src, 'hard1'), 'linked');
  await link(join(src, 'hard1'), join(src, 'd', 'hard2'));
  await link(join(src, 'hard1'), join(src, 'd', 'e', 'hard3'));
  await symlink('/nowhere', join(src, 'dangling'));
  await lchown(join(src, 'dangling'), 3, 4);
  lsetxattrSync(join(src, 'dangling'), 'trusted.on-link', Buffer.from('l'));
  mknodSync(join(src, 'null'), sysConstants.S_IFCHR | 0o666, 1, 3);
  mknodSync(join(src, 'whiteout'), sysConstants.S_IFCHR, 0, 0);
  mknodSync(join(src, 'fifo'), sysConstants.S_IFIFO | 0o644, 0, 0);
  await chmod(join(src, 'd'), 0o1777);
  await lchown(join(src, 'd'), 7, 7);
  lsetxattrSync(join(src, 'd'), 'trusted.overlay.opaque', Buffer.from('y'));
  lutimesNsSync(join(src, 'd', 'e', 'f'), 111_222_333_444_555_666n, 999_888_777_666_555_444n);
  lutimesNsSync(join(src, 'dangling'), 5n, 6n);
  lutimesNsSync(join(src, 'd', 'e'), 1_000_000_001n, 1_000_000_002n);
  lutimesNsSync(join(src, 'd'), 2_000_000_001n, 2_000_000_002n);
  lutimesNsSync(src, 3_000_000_001n, 3_000_000_002n);
}

test('copies every kind of entry with owners, modes, xattrs, ns times and hardlinks intact', async () => {
  const src = join(work, 'src');
  const dst = join(work, 'dst');
  await mkdir(src);
  await buildTree(src);
  const stats = await copyTree(src, dst, { reflink: 'auto' });
  expectSameTree(await snapshotTree(dst), await snapshotTree(src), { ignoreRootMtime: false });
  const inode = (await stat(join(dst, 'hard1'))).ino;
  expect((await stat(join(dst, 'd', 'hard2'))).ino).toBe(inode);
  expect((await stat(join(dst, 'd', 'e', 'hard3'))).ino).toBe(inode);
  expect(stats).toMatchObject({ bytes: 7 + 6, skippedSockets: 0 });
  expect(stats.files).toBe(8);
});

test('copies into an existing empty directory (a staging dir), taking on the source root metadata', async () => {
  const src = join(work, 'src');
  const dst = join(work, 'dst');
  await mkdir(src);
  await mkdir(dst, { mode: 0o700 });
  await writeFile(join(src, 'x'), 'x');
  await chmod(src, 0o755);
  await lchown(src, 0, 0);
  await copyTree(src, dst);
  const st = await stat(dst);
  expect(st.mode & 0o7777).toBe(0o755);
  expect(await readdir(dst)).toEqual(['x']);
});

test('skips unix sockets and counts them', async () => {
  const src = join(work, 'src');
  await mkdir(src);
  await writeFile(join(src, 'file'), 'f');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(join(src, 'sock'), resolve));
  try {
    const stats = await copyTree(src, join(work, 'dst'));
    expect(stats.skippedSockets).toBe(1);
    expect(await readdir(join(work, 'dst'))).toEqual(['file']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test("reflink 'always' on a filesystem without clones is ERR_NOT_SUPPORTED; 'auto' copies bytes", async () => {
  // tmpdir is tmpfs or ext4 here: neither can clone.
  const src = join(work, 'src');
  await mkdir(src);
  await writeFile(join(src, 'f'), 'data');
  const fs = (await lstat(src)).dev;
  expect(fs).toBeGreaterThan(0);
  await expect(copyTree(src, join(work, 'always'), { reflink: 'always' })).rejects.toMatchObject({ code: 'ERR_NOT_SUPPORTED' });
  const stats = await copyTree(src, join(work, 'auto'), { reflink: 'auto' });
  expect(stats.reflinked).toBe(0);
  expect(stats.bytes).toBe(4);
});

test('copies a wide and deep tree (2,000 files) exactly', async () => {
  const src = join(work, 'src');
  for (let d = 0; d < 20; d++) {
    await mkdir(join(src, `d${d}`, 'sub'), { recursive: true });
    for (let f = 0; f < 100; f++) await writeFile(join(src, `d${d}`, f % 2 ? 'sub' : '', `f${f}`), `${d}-${f}`);
  }
  const stats = await copyTree(src, join(work, 'dst'));
  expect(stats.files).toBe(2000);
  expectSameTree(await snapshotTree(join(work, 'dst')), await snapshotTree(src), { ignoreRootMtime: false });
});
