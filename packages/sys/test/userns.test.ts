import { closeSync, readlinkSync } from 'node:fs';
import { chmod, chown, lchown, link, lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants, idmappedMount, makeUserNamespace, mount, shiftOwnership, umount2 } from '@cairnfs/sys';
import { scratch, thrown, type Scratch } from './helpers.js';

const A = { uidMap: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 200000, size: 65536 }] };

/** The error a promise rejects with. */
async function rejection(p: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  return p.then(() => { throw new Error('did not reject'); }, (e: NodeJS.ErrnoException) => e);
}

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

test('makeUserNamespace returns the fd of a new user namespace with exactly the given maps', () => {
  const fd = makeUserNamespace(A);
  try {
    expect(readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/^user:\[\d+\]$/);
    expect(readlinkSync(`/proc/self/fd/${fd}`)).not.toBe(readlinkSync('/proc/self/ns/user'));
  } finally {
    closeSync(fd);
  }
  const err = thrown(() => makeUserNamespace({ uidMap: [{ containerId: 0, hostId: 1, size: 5 }, { containerId: 2, hostId: 50, size: 5 }], gidMap: A.gidMap }));
  expect([(err as NodeJS.ErrnoException).code, (err as NodeJS.ErrnoException).syscall]).toEqual(['EINVAL', 'write']); // overlapping ranges: the kernel refuses the map
});

test('an id-mapped mount shows container ids as host ids, stores writes back in container ids, and keeps inodes', async () => {
  const src = join(s.dir, 'src');
  const dst = join(s.dir, 'dst');
  await mkdir(src);
  await mkdir(dst);
  await writeFile(join(src, 'f'), 'x');
  await chown(join(src, 'f'), 33, 34);
  const fd = makeUserNamespace(A);
  try {
    await idmappedMount(src, dst, fd, { readOnly: false });
  } finally {
    closeSync(fd); // the mount keeps the namespace
  }
  try {
    const inner = await stat(join(dst, 'f'), { bigint: true });
    expect([inner.uid, inner.gid]).toEqual([100033n, 200034n]);
    expect(inner.ino).toBe((await stat(join(src, 'f'), { bigint: true })).ino);
    await writeFile(join(src, 'g'), 'y');
    await chown(join(dst, 'g'), 100007, 200008); // as host ids through the mount…
    const disk = await stat(join(src, 'g'));
    expect([disk.uid, disk.gid]).toEqual([7, 8]); // …stored in container ids
    // An id outside the map cannot be written through the mount at all (host root is not in it).
    expect((await rejection(chown(join(dst, 'g'), 5, 5))).code).toBe('EOVERFLOW');
    expect((await rejection(writeFile(join(dst, 'new'), 'z'))).code).toBe('EOVERFLOW');
  } finally {
    await umount2(dst, constants.MNT_DETACH);
  }
});

test('a filesystem without id-mapping support refuses with EINVAL from mount_setattr (ramfs)', async () => {
  const ram = join(s.dir, 'ram');
  const dst = join(s.dir, 'dst');
  await mkdir(ram);
  await mkdir(dst);
  await mount('ramfs', ram, 'ramfs', 0, null);
  const fd = makeUserNamespace(A);
  try {
    const err = await rejection(idmappedMount(ram, dst, fd));
    expect([err.code, err.syscall]).toEqual(['EINVAL', 'mount_setattr']);
  } finally {
    closeSync(fd);
    await umount2(ram, constants.MNT_DETACH);
  }
});

test('shiftOwnership re-owns a tree without following symlinks, once per hardlinked inode, keeping setuid, and maps back', async () => {
  const root = join(s.dir, 't');
  await mkdir(join(root, 'd'), { recursive: true });
  await writeFile(join(root, 'd', 'suid'), '#!/bin/sh');
  await chown(join(root, 'd', 'suid'), 1, 1);
  await chmod(join(root, 'd', 'suid'), 0o4755);
  await link(join(root, 'd', 'suid'), join(root, 'hard'));
  const outside = join(s.dir, 'outside');
  await writeFile(outside, 'not mine');
  await symlink(outside, join(root, 'escape'));
  await lchown(join(root, 'escape'), 33, 33);
  await shiftOwnership(root, A, true);
  const owners = async (p: string) => { const st = await lstat(p); return [st.uid, st.gid]; };
  expect(await owners(root)).toEqual([100000, 200000]);
  expect(await owners(join(root, 'd', 'suid'))).toEqual([100001, 200001]); // shifted once, not twice through 'hard'
  expect((await stat(join(root, 'hard'))).mode & 0o7777).toBe(0o4755);
  expect(await owners(join(root, 'escape'))).toEqual([100033, 200033]);
  expect(await owners(outside)).toEqual([0, 0]); // the link's target is not touched
  await shiftOwnership(root, A, false);
  expect(await owners(join(root, 'd', 'suid'))).toEqual([1, 1]);
  expect(await readFile(outside, 'utf8')).toBe('not mine');
  await chown(join(root, 'hard'), 70000, 0); // outside the map
  const err = await rejection(shiftOwnership(root, A, true));
  expect(err.code).toBe('EOVERFLOW');
  expect(err.message).toMatch(/has no mapping/);
});
