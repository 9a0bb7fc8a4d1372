// openBeneathSync: the one way host code opens untrusted content for reading. Resolved
// beneath the root without links (or with links kept inside it), regular files only,
// and the fd returned is the very inode that was checked.
import { closeSync, fstatSync, openSync, readSync, constants as fsConstants } from 'node:fs';
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { BENEATH_IN_ROOT, BENEATH_NO_HANDLES, fileTypeName, openBeneathSync } from '@cairnfs/sys';
import type { SysError } from '@cairnfs/sys';
import { scratch, thrown, type Scratch } from './helpers.js';

let s: Scratch;
let root: string;
beforeEach(async () => {
  s = await scratch();
  root = join(s.dir, 'root');
  await mkdir(join(root, 'd'), { recursive: true });
  await writeFile(join(root, 'd/f'), 'inside\n');
  await writeFile(join(s.dir, 'outside'), 'HOST SECRET\n');
});
afterEach(async () => {
  await s.cleanup();
});

function read(fd: number): string {
  const buf = Buffer.alloc(64);
  const n = readSync(fd, buf, 0, 64, 0);
  closeSync(fd);
  return buf.subarray(0, n).toString();
}

describe('openBeneathSync', () => {
  test('a regular file beneath the root: an fd for reading, with its identity', () => {
    const f = openBeneathSync(root, 'd/f');
    expect(f.fd).toBeGreaterThanOrEqual(0);
    expect(f.size).toBe(7);
    const st = fstatSync(f.fd, { bigint: true });
    expect([st.dev, st.ino]).toEqual([f.dev, f.ino]);
    expect(read(f.fd)).toBe('inside\n');
  });

  test('the root may be given as a directory fd', () => {
    const dirfd = openSync(root, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    try { expect(read(openBeneathSync(dirfd, 'd/f').fd)).toBe('inside\n'); } finally { closeSync(dirfd); }
  });

  test.each([
    ['an absolute symlink', async () => symlink(join(s.dir, 'outside'), join(root, 'd/l')), 'd/l'],
    ['a relative symlink that climbs out', async () => symlink('../../outside', join(root, 'd/l')), 'd/l'],
    ['a symlink inside the root', async () => symlink('f', join(root, 'd/l')), 'd/l'],
    ['a symlinked parent directory', async () => symlink('d', join(root, 'e')), 'e/f'],
  ])('strict mode refuses %s (ELOOP)', async (_what, make, rel) => {
    await make();
    expect((thrown(() => openBeneathSync(root, rel)) as SysError).code).toBe('ELOOP');
  });

  test.each(['../outside', '/etc/passwd', 'd/../../outside'])('%s leads out: EXDEV', (rel) => {
    expect((thrown(() => openBeneathSync(root, rel)) as SysError).code).toBe('EXDEV');
  });

  test('in-root mode follows links but keeps them inside the root', async () => {
    await symlink('f', join(root, 'd/rel'));
    await symlink('/d/f', join(root, 'd/abs-inside'));
    await symlink(join(s.dir, 'outside'), join(root, 'd/abs-host'));
    await symlink('../../../../../../outside', join(root, 'd/climb'));
    expect(read(openBeneathSync(root, 'd/rel', BENEATH_IN_ROOT).fd)).toBe('inside\n');
    expect(read(openBeneathSync(root, 'd/abs-inside', BENEATH_IN_ROOT).fd)).toBe('inside\n');
    for (const rel of ['d/abs-host', 'd/climb']) expect((thrown(() => openBeneathSync(root, rel, BENEATH_IN_ROOT)) as SysError).code).toBe('ENOENT');
  });

  test.each([
    ['a fifo', (p: string) => execFileSync('mkfifo', [p]), 'a fifo'],
    ['a character device', (p: string) => execFileSync('mknod', [p, 'c', '1', '3']), 'a character device'],
    ['a block device', (p: string) => execFileSync('mknod', [p, 'b', '7', '0']), 'a block device'],
    ['a directory', (p: string) => execFileSync('mkdir', [p]), 'a directory'],
  ])('%s is reported (fd -1 and its mode), never opened, and a fifo does not block', (_what, make, typeName) => {
    make(join(root, 'x'));
    const started = Date.now();
    const f = openBeneathSync(root, 'x');
    expect(f.fd).toBe(-1);
    expect(fileTypeName(f.mode)).toBe(typeName);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  test('the fd stays the checked inode when the name is replaced afterwards', async () => {
    const f = openBeneathSync(root, 'd/f');
    await writeFile(join(root, 'd/g'), 'replacement\n');
    await rename(join(root, 'd/g'), join(root, 'd/f'));
    expect(read(f.fd)).toBe('inside\n');
  });

  test('reopened by name (no file handles): the same file, links kept inside the root in in-root mode', async () => {
    const f = openBeneathSync(root, 'd/f', BENEATH_NO_HANDLES);
    expect(f.changed).toBe(false);
    expect(read(f.fd)).toBe('inside\n');
    await symlink('f', join(root, 'd/rel'));
    expect(read(openBeneathSync(root, 'd/rel', BENEATH_IN_ROOT | BENEATH_NO_HANDLES).fd)).toBe('inside\n');
    expect((thrown(() => openBeneathSync(root, 'd/rel', BENEATH_NO_HANDLES)) as SysError).code).toBe('ELOOP');
  });

  test('missing: ENOENT with the path', () => {
    const err = thrown(() => openBeneathSync(root, 'nope')) as SysError;
    expect(err.code).toBe('ENOENT');
    expect(err.path).toBe('nope');
  });
});
