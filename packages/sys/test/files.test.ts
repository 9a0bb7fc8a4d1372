import { writeFile, readFile, lstat, symlink, mkdir } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  constants, mknod, mknodSync, major, minor, makedev,
  lsetxattrSync, lgetxattrSync, llistxattrSync, lremovexattrSync,
  lsetxattr, lgetxattr, llistxattr, lremovexattr, lutimesNsSync,
} from '@cairnfs/sys';
import type { SysError } from '@cairnfs/sys';
import { describeBackend, missingTools } from '@cairnfs/testkit';
import { scratch, thrown, type Scratch } from './helpers.js';

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

const { S_IFCHR, S_IFBLK, S_IFIFO, S_IFMT = 0o170000 } = { ...constants, S_IFMT: 0o170000 };

describe('mknod', () => {
  test('a 0/0 char device with mode 0000 (the overlay whiteout)', async () => {
    const p = join(s.dir, 'wh');
    mknodSync(p, S_IFCHR | 0o000, 0, 0);
    const st = await lstat(p);
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.mode & 0o7777).toBe(0);
    expect(st.rdev).toBe(0);
  });

  test('char device 1/3 (/dev/null) reads as a real device', async () => {
    const p = join(s.dir, 'null');
    await mknod(p, S_IFCHR | 0o666, 1, 3);
    const st = await lstat(p);
    expect(st.mode & S_IFMT).toBe(S_IFCHR);
    expect([major(st.rdev), minor(st.rdev)]).toEqual([1, 3]);
    expect(st.rdev).toBe(makedev(1, 3));
    await writeFile(p, 'discarded');
    expect((await readFile(p)).length).toBe(0);
  });

  test('a block device keeps a minor above 255', async () => {
    const p = join(s.dir, 'blk');
    mknodSync(p, S_IFBLK | 0o600, 259, 300);
    const st = await lstat(p, { bigint: true });
    expect(Number(st.mode) & S_IFMT).toBe(S_IFBLK);
    expect(major(st.rdev)).toBe(259);
    expect(minor(st.rdev)).toBe(300);
  });

  test('a fifo', async () => {
    const p = join(s.dir, 'fifo');
    await mknod(p, S_IFIFO | 0o644, 0, 0);
    expect((await lstat(p)).isFIFO()).toBe(true);
  });

  test('EEXIST when the path exists, with syscall and path', async () => {
    const p = join(s.dir, 'taken');
    await writeFile(p, '');
    const e = thrown(() => mknodSync(p, S_IFIFO | 0o644, 0, 0)) as SysError;
    expect(e).toMatchObject({ code: 'EEXIST', errno: -17, syscall: 'mknod', path: p });
    expect(e.message).toBe(`EEXIST: file already exists, mknod '${p}'`);
    await expect(mknod(p, S_IFIFO, 0, 0)).rejects.toMatchObject({ code: 'EEXIST', syscall: 'mknod', path: p });
  });

  test('ENOENT and ENOTDIR for bad parents', async () => {
    await writeFile(join(s.dir, 'f'), '');
    expect(thrown(() => mknodSync(join(s.dir, 'no', 'x'), S_IFIFO, 0, 0))).toMatchObject({ code: 'ENOENT' });
    expect(thrown(() => mknodSync(join(s.dir, 'f', 'x'), S_IFIFO, 0, 0))).toMatchObject({ code: 'ENOTDIR', errno: -20 });
  });
});

describe('dev_t helpers', () => {
  test('match glibc for small and large numbers, from numbers and bigints', () => {
    expect(makedev(8, 1)).toBe(0x801);
    // glibc: minor low 8 bits | major low 12 bits << 8 | minor high bits << 12 | major high bits << 32
    expect(makedev(259, 70000)).toBe(0x70 | (0x103 << 8) | (0x11100 * 2 ** 12));
    const bigMajor = 0x1003;
    expect(makedev(bigMajor, 5)).toBe(5 + (0x003 << 8) + 0x1000 * 2 ** 32);
    expect(major(makedev(bigMajor, 70000))).toBe(bigMajor);
    expect(minor(BigInt(makedev(bigMajor, 70000)))).toBe(70000);
    expect(thrown(() => major(-1)).name).toBe('TypeError');
  });
});

describe('xattrs', () => {
  const binary = Buffer.from([0x00, 0xff, 0x01, 0x00, 0xfe, 0x80, 0x00]);

  test('user.* set/get/list/remove on a file', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    lsetxattrSync(f, 'user.greeting', Buffer.from('hello'));
    expect(lgetxattrSync(f, 'user.greeting')).toEqual(Buffer.from('hello'));
    expect(llistxattrSync(f)).toEqual(['user.greeting']);
    lremovexattrSync(f, 'user.greeting');
    expect(lgetxattrSync(f, 'user.greeting')).toBeNull();
    expect(llistxattrSync(f)).toEqual([]);
  });

  test('a binary value with 0x00 and 0xff bytes round-trips exactly, sync and async', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    lsetxattrSync(f, 'trusted.bin', binary);
    expect(lgetxattrSync(f, 'trusted.bin')).toEqual(binary);
    await lsetxattr(f, 'user.bin', new Uint8Array(binary));
    const back = await lgetxattr(f, 'user.bin');
    expect(Buffer.isBuffer(back)).toBe(true);
    expect(back).toEqual(binary);
  });

  // An independent reader (attr's getfattr) sees exactly what the addon wrote, so the
  // round trips above are not the addon agreeing with itself.
  describeBackend('getfattr', missingTools('getfattr'), () => {
    test('getfattr reads a text value and a binary one (0x00, 0xff bytes) as written', async () => {
      const f = join(s.dir, 'file');
      await writeFile(f, '');
      lsetxattrSync(f, 'user.greeting', Buffer.from('hello'));
      await lsetxattr(f, 'user.bin', new Uint8Array(binary));
      const out = execFileSync('getfattr', ['--absolute-names', '-n', 'user.greeting', '--only-values', f]);
      expect(out.toString()).toBe('hello');
      const hex = execFileSync('getfattr', ['--absolute-names', '-e', 'hex', '-n', 'user.bin', f]).toString();
      expect(hex).toContain('user.bin=0x00ff0100fe8000');
    });
  });

  test('an empty value is a present attribute, not null', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    lsetxattrSync(f, 'trusted.overlay.opaque', Buffer.alloc(0));
    expect(lgetxattrSync(f, 'trusted.overlay.opaque')).toEqual(Buffer.alloc(0));
  });

  test('a 60000-byte value is read whole', async () => {
    const big = Buffer.alloc(60000, 0xab);
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    await lsetxattr(f, 'trusted.big', big);
    expect(await lgetxattr(f, 'trusted.big')).toEqual(big);
  });

  test('trusted.* on a symlink acts on the link itself and leaves the target untouched', async () => {
    const target = join(s.dir, 'target');
    const link = join(s.dir, 'link');
    await writeFile(target, '');
    await symlink(target, link);
    lsetxattrSync(link, 'trusted.overlay.redirect', binary);
    expect(lgetxattrSync(link, 'trusted.overlay.redirect')).toEqual(binary);
    expect(lgetxattrSync(target, 'trusted.overlay.redirect')).toBeNull();
    expect(llistxattrSync(target)).toEqual([]);
    expect(await llistxattr(link)).toEqual(['trusted.overlay.redirect']);
    await lremovexattr(link, 'trusted.overlay.redirect');
    expect(await llistxattr(link)).toEqual([]);
  });

  test('user.* on a symlink is refused by the kernel (EPERM) rather than landing on the target', async () => {
    const target = join(s.dir, 'target');
    const link = join(s.dir, 'link');
    await writeFile(target, '');
    await symlink(target, link);
    expect(thrown(() => lsetxattrSync(link, 'user.x', Buffer.from('1')))).toMatchObject({
      code: 'EPERM', syscall: 'lsetxattr', path: link,
    });
    expect(lgetxattrSync(target, 'user.x')).toBeNull();
  });

  test('ENODATA is null from get and an error from remove', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    expect(lgetxattrSync(f, 'user.none')).toBeNull();
    expect(await lgetxattr(f, 'user.none')).toBeNull();
    expect(thrown(() => lremovexattrSync(f, 'user.none'))).toMatchObject({ code: 'ENODATA', syscall: 'lremovexattr' });
    await expect(lremovexattr(f, 'user.none')).rejects.toMatchObject({ code: 'ENODATA' });
  });

  test('XATTR_CREATE and XATTR_REPLACE fail with EEXIST and ENODATA', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    expect(thrown(() => lsetxattrSync(f, 'user.a', Buffer.from('1'), constants.XATTR_REPLACE))).toMatchObject({ code: 'ENODATA' });
    lsetxattrSync(f, 'user.a', Buffer.from('1'), constants.XATTR_CREATE);
    await expect(lsetxattr(f, 'user.a', Buffer.from('2'), constants.XATTR_CREATE)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(lgetxattrSync(f, 'user.a')).toEqual(Buffer.from('1'));
  });

  test('errors for a missing path and a non-directory parent', async () => {
    await writeFile(join(s.dir, 'f'), '');
    const missing = join(s.dir, 'missing');
    expect(thrown(() => lgetxattrSync(missing, 'user.a'))).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'lgetxattr', path: missing });
    await expect(llistxattr(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'llistxattr', path: missing });
    expect(thrown(() => llistxattrSync(join(s.dir, 'f', 'x')))).toMatchObject({ code: 'ENOTDIR' });
  });

  test('a string value is a TypeError (values are bytes)', () => {
    // @ts-expect-error: a string where the value's bytes belong
    expect(thrown(() => lsetxattrSync(s.dir, 'user.a', 'text')).name).toBe('TypeError');
  });
});

describe('lutimesNsSync', () => {
  const atime = 1_600_000_000_123_456_789n;
  const mtime = 1_500_000_000_987_654_321n;

  test('sets nanosecond atime/mtime on a file', async () => {
    const f = join(s.dir, 'file');
    await writeFile(f, '');
    lutimesNsSync(f, atime, mtime);
    const st = await lstat(f, { bigint: true });
    expect(st.atimeNs).toBe(atime);
    expect(st.mtimeNs).toBe(mtime);
  });

  test('sets the symlink itself, not its target', async () => {
    const target = join(s.dir, 'target');
    const link = join(s.dir, 'link');
    await writeFile(target, '');
    await symlink(target, link);
    const targetBefore = (await lstat(target, { bigint: true })).mtimeNs;
    lutimesNsSync(link, atime, mtime);
    expect((await lstat(link, { bigint: true })).mtimeNs).toBe(mtime);
    expect((await lstat(target, { bigint: true })).mtimeNs).toBe(targetBefore);
  });

  test('times before 1970 keep their nanoseconds', async () => {
    const d = join(s.dir, 'dir');
    await mkdir(d);
    lutimesNsSync(d, -1n, -1_000_000_001n);
    const st = await lstat(d, { bigint: true });
    expect(st.atimeNs).toBe(-1n);
    expect(st.mtimeNs).toBe(-1_000_000_001n);
  });

  test('a number instead of a bigint is a TypeError; a missing path is ENOENT', () => {
    // @ts-expect-error: a number where a bigint belongs
    expect(thrown(() => lutimesNsSync(s.dir, 1, 1n)).name).toBe('TypeError');
    expect(thrown(() => lutimesNsSync(join(s.dir, 'nope'), 1n, 1n))).toMatchObject({ code: 'ENOENT', syscall: 'utimensat' });
  });
});
