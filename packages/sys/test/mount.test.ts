import { mkdir, writeFile, readFile, readdir, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { mount, mountAt, umount2, constants } from '@cairnfs/sys';
import type { SysError } from '@cairnfs/sys';
import { isNativeError } from 'node:util/types';
import { scratch, isMountPoint, thrown, type Scratch } from './helpers.js';

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

test('mounting a tmpfs makes its files visible only until umount2', async () => {
  const m = join(s.dir, 'm');
  await mkdir(m);
  await mount('none', m, 'tmpfs', constants.MS_NOSUID, 'size=1m');
  expect(isMountPoint(m)).toBe(true);
  await writeFile(join(m, 'f'), 'x');
  await umount2(m);
  expect(isMountPoint(m)).toBe(false);
  expect(await readdir(m)).toEqual([]);
});

test('a bind mount shows the source directory at the target', async () => {
  const src = join(s.dir, 'src');
  const dst = join(s.dir, 'dst');
  await mkdir(src);
  await mkdir(dst);
  await writeFile(join(src, 'hello'), 'world');
  await mount(src, dst, null, constants.MS_BIND);
  expect(await readFile(join(dst, 'hello'), 'utf8')).toBe('world');
  await writeFile(join(dst, 'back'), '1');
  expect(await readFile(join(src, 'back'), 'utf8')).toBe('1');
  await umount2(dst);
  expect(await readdir(dst)).toEqual([]);
});

test('a read-only remount of a bind mount refuses writes with EROFS', async () => {
  const src = join(s.dir, 'src');
  const dst = join(s.dir, 'dst');
  await mkdir(src);
  await mkdir(dst);
  await mount(src, dst, null, constants.MS_BIND);
  await mount('none', dst, null, constants.MS_BIND | constants.MS_REMOUNT | constants.MS_RDONLY);
  await expect(writeFile(join(dst, 'f'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
});

test('umount2 of a busy mount fails with EBUSY, and MNT_DETACH detaches it anyway', async () => {
  const m = join(s.dir, 'busy');
  await mkdir(m);
  await mount('tmpfs', m, 'tmpfs', 0);
  const fh = await open(join(m, 'held'), 'w');
  try {
    await expect(umount2(m)).rejects.toMatchObject({ code: 'EBUSY', syscall: 'umount2', path: m });
    await umount2(m, constants.MNT_DETACH);
    expect(isMountPoint(m)).toBe(false);
    // The open file still works on the detached superblock.
    await fh.write('still writable');
  } finally {
    await fh.close();
  }
});

test('mountAt resolves a relative overlay lowerdir against cwd and leaves process.cwd() alone', async () => {
  const layers = join(s.dir, 'layers');
  for (const l of ['l1', 'l2']) await mkdir(join(layers, l), { recursive: true });
  await writeFile(join(layers, 'l1', 'a'), 'from l1');
  await writeFile(join(layers, 'l2', 'b'), 'from l2');
  for (const d of ['upper', 'work', 'merged']) await mkdir(join(s.dir, d));
  const before = process.cwd();
  const merged = join(s.dir, 'merged');
  await mountAt(layers, 'overlay', merged, 'overlay', 0,
    `lowerdir=l1:l2,upperdir=${join(s.dir, 'upper')},workdir=${join(s.dir, 'work')}`);
  expect(process.cwd()).toBe(before);
  expect((await readdir(merged)).sort()).toEqual(['a', 'b']);
  expect(await readFile(join(merged, 'a'), 'utf8')).toBe('from l1');
  // Relative paths in this thread still resolve against the unchanged process cwd.
  await expect(readFile('l1/a')).rejects.toMatchObject({ code: 'ENOENT' });
});

test('mountAt leaves the thread pool resolving relative paths against the process cwd', async () => {
  const layers = join(s.dir, 'layers');
  await mkdir(join(layers, 'only-here'), { recursive: true });
  for (let i = 0; i < 8; i++) {
    await mkdir(join(layers, `t${i}`));
    await mountAt(layers, 'tmpfs', `t${i}`, 'tmpfs', 0);
  }
  // Enough concurrent stats to land on every libuv pool thread.
  const rel = await Promise.allSettled(Array.from({ length: 64 }, () => stat('only-here')));
  expect(rel.every((r) => r.status === 'rejected')).toBe(true);
  const abs = await Promise.all(Array.from({ length: 64 }, () => stat(join(process.cwd(), '.'))));
  expect(abs).toHaveLength(64);
});

test('mountAt with a relative target mounts under cwd', async () => {
  await mkdir(join(s.dir, 'rel'));
  await mountAt(s.dir, 'tmpfs', 'rel', 'tmpfs', 0);
  expect(isMountPoint(join(s.dir, 'rel'))).toBe(true);
});

test('mountAt into a missing cwd fails with ENOENT from chdir', async () => {
  const missing = join(s.dir, 'nope');
  await expect(mountAt(missing, 'tmpfs', 'x', 'tmpfs', 0)).rejects.toMatchObject({
    code: 'ENOENT', syscall: 'chdir', path: missing,
  });
});

describe('errors look like node:fs errors', () => {
  test('ENOENT names the syscall, source and target', async () => {
    const target = join(s.dir, 'missing');
    const err = (await mount('tmpfs', target, 'tmpfs', 0).catch((e: unknown) => e)) as SysError;
    expect(isNativeError(err)).toBe(true);
    expect(err).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'mount', path: 'tmpfs', dest: target });
    expect(err.message).toBe(`ENOENT: no such file or directory, mount 'tmpfs' -> '${target}'`);
  });

  test('EINVAL for a bad mount option', async () => {
    const m = join(s.dir, 'm');
    await mkdir(m);
    await expect(mount('tmpfs', m, 'tmpfs', 0, 'size=banana')).rejects.toMatchObject({
      code: 'EINVAL', errno: -22, syscall: 'mount',
    });
  });

  test('ENOTDIR when a path component is a file', async () => {
    await writeFile(join(s.dir, 'file'), '');
    const target = join(s.dir, 'file', 'sub');
    await expect(umount2(target)).rejects.toMatchObject({ code: 'ENOTDIR', errno: -20, syscall: 'umount2', path: target });
  });

  test('EINVAL from umount2 of a directory that is not a mount point', async () => {
    await mkdir(join(s.dir, 'plain'));
    await expect(umount2(join(s.dir, 'plain'))).rejects.toMatchObject({ code: 'EINVAL' });
  });

  test('wrong argument types throw TypeError synchronously', () => {
    // @ts-expect-error: a number as the source
    expect(thrown(() => mount(1, s.dir, 'tmpfs', 0)).name).toBe('TypeError');
    // @ts-expect-error: a string as the flags
    expect(thrown(() => mount('a', s.dir, 'tmpfs', 'x')).message).toMatch(/"flags" argument/);
    expect(thrown(() => umount2('a\0b')).name).toBe('TypeError');
  });
});

test('an async failure carries the stack of the calling code', async () => {
  async function callerWithAName(): Promise<void> {
    await umount2(join(s.dir, 'not-mounted'));
  }
  await mkdir(join(s.dir, 'not-mounted'));
  const err = (await callerWithAName().catch((e: unknown) => e)) as SysError;
  expect(err.code).toBe('EINVAL');
  // The first frame is the call site in this file, not addon internals.
  expect(err.stack).toMatch(/^Error: EINVAL: invalid argument, umount2 '.*'\n\s+at .*mount\.test\.ts:\d+:\d+\)/);
  expect(err.stack).toContain('callerWithAName');
});
