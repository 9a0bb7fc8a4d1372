// The store's record writes (native/durable.cc): what lands, with which mode, and what a
// failure leaves. That each is fsynced in the right order before the rename is proven
// from the syscalls by testkit's reliability-powerloss test.
import { lstat, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncPath, renameDurable, replaceFile, writeNewFiles, type SysError } from '@cairnfs/sys';
import { scratch, thrown, type Scratch } from './helpers.js';

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

async function rejection(p: Promise<unknown>): Promise<SysError> {
  try {
    await p;
  } catch (e) {
    return e as SysError;
  }
  throw new Error('did not reject');
}

describe('replaceFile', () => {
  test('a new file gets the content and mode, and no temp sibling is left', async () => {
    const p = join(s.dir, 'repositories.json');
    await replaceFile(p, '{"a":1}', 0o640, true);
    expect(await readFile(p, 'utf8')).toBe('{"a":1}');
    expect((await lstat(p)).mode & 0o777).toBe(0o640);
    expect(await readdir(s.dir)).toEqual(['repositories.json']);
  });

  test('an existing file is replaced whole (a new inode), bytes as given, also without fsyncs', async () => {
    const p = join(s.dir, 'f');
    await writeFile(p, 'old content that is longer');
    const before = (await lstat(p)).ino;
    await replaceFile(p, Buffer.from([0, 1, 2, 255]), 0o600, false);
    expect(await readFile(p)).toEqual(Buffer.from([0, 1, 2, 255]));
    expect((await lstat(p)).ino).not.toBe(before);
  });

  test('a temp sibling a crash left is overwritten, not appended to', async () => {
    const p = join(s.dir, 'f');
    await writeFile(join(s.dir, '.f.tmp'), 'x'.repeat(100));
    await replaceFile(p, 'new', 0o600, true);
    expect(await readFile(p, 'utf8')).toBe('new');
    expect(await readdir(s.dir)).toEqual(['f']);
  });

  test('a symlink planted as the temp sibling is not followed: ELOOP, its target untouched', async () => {
    const victim = join(s.dir, 'victim');
    await writeFile(victim, 'keep');
    await symlink(victim, join(s.dir, '.f.tmp'));
    const err = await rejection(replaceFile(join(s.dir, 'f'), 'evil', 0o600, true));
    expect(err.code).toBe('ELOOP');
    expect(err.syscall).toBe('open');
    expect(await readFile(victim, 'utf8')).toBe('keep');
  });

  test('a rename that fails (the target is a directory) leaves the target as it was and no sibling', async () => {
    const p = join(s.dir, 'd');
    await mkdir(join(p, 'child'), { recursive: true });
    const err = await rejection(replaceFile(p, 'x', 0o600, true));
    expect(err.syscall).toBe('rename');
    expect(err.code).toBe('EISDIR');
    expect(err.path).toBe(join(s.dir, '.d.tmp'));
    expect(err.dest).toBe(p);
    expect((await lstat(p)).isDirectory()).toBe(true);
    expect(await readdir(s.dir)).toEqual(['d']);
  });

  test('a missing directory is ENOENT naming the temp path', async () => {
    const err = await rejection(replaceFile(join(s.dir, 'no/such/f'), 'x', 0o600, true));
    expect(err.code).toBe('ENOENT');
    expect(err.path).toBe(join(s.dir, 'no/such/.f.tmp'));
  });
});

describe('writeNewFiles', () => {
  test('every file is made with its content and mode 0600 unless told', async () => {
    await writeNewFiles(s.dir, [['diff', 'sha256:ab'], ['size', '12'], ['tar-split.gz', Buffer.from([31, 139, 8])]]);
    expect((await readdir(s.dir)).sort()).toEqual(['diff', 'size', 'tar-split.gz']);
    expect(await readFile(join(s.dir, 'diff'), 'utf8')).toBe('sha256:ab');
    expect(await readFile(join(s.dir, 'tar-split.gz'))).toEqual(Buffer.from([31, 139, 8]));
    expect((await lstat(join(s.dir, 'size'))).mode & 0o777).toBe(0o600);
    await writeNewFiles(join(s.dir), [['other', '']], 0o644);
    expect((await lstat(join(s.dir, 'other'))).mode & 0o777).toBe(0o644);
  });

  test('a file that exists is refused with EEXIST, and its content kept', async () => {
    await writeFile(join(s.dir, 'size'), 'old');
    const err = await rejection(writeNewFiles(s.dir, [['diff', 'd'], ['size', 'new']]));
    expect(err.code).toBe('EEXIST');
    expect(err.path).toBe(join(s.dir, 'size'));
    expect(await readFile(join(s.dir, 'size'), 'utf8')).toBe('old');
  });

  test('a symlink in place of a name is refused, not written through', async () => {
    await writeFile(join(s.dir, 'victim'), 'keep');
    await symlink(join(s.dir, 'victim'), join(s.dir, 'diff'));
    const err = await rejection(writeNewFiles(s.dir, [['diff', 'evil']]));
    expect(err.code).toBe('EEXIST');
    expect(await readFile(join(s.dir, 'victim'), 'utf8')).toBe('keep');
  });

  test.each(['', '.', '..', 'a/b', 'nul\0'])('a name that is not one path component (%j) is a RangeError before anything is written', async (name) => {
    // By name: the addon's errors come from the main realm, not jest's.
    expect(thrown(() => writeNewFiles(s.dir, [['ok', 'x'], [name, 'y']])).name).toBe('RangeError');
    expect(await readdir(s.dir)).toEqual([]);
  });

  test('a data that is neither a string nor bytes is a TypeError', () => {
    expect(thrown(() => writeNewFiles(s.dir, [['n', 42 as unknown as string]])).name).toBe('TypeError');
  });
});

describe('renameDurable and fsyncPath', () => {
  test('a staged directory moves to its final name with its files', async () => {
    await mkdir(join(s.dir, 'stage'));
    await writeFile(join(s.dir, 'stage/link'), 'ABC');
    await mkdir(join(s.dir, 'layers'));
    await renameDurable(join(s.dir, 'stage'), join(s.dir, 'layers/x'), true);
    expect(await readFile(join(s.dir, 'layers/x/link'), 'utf8')).toBe('ABC');
    expect(await readdir(s.dir)).toEqual(['layers']);
  });

  test('a rename onto a non-empty directory fails with the source and destination named, and moves nothing', async () => {
    await mkdir(join(s.dir, 'stage'));
    await mkdir(join(s.dir, 'taken/child'), { recursive: true });
    const err = await rejection(renameDurable(join(s.dir, 'stage'), join(s.dir, 'taken')));
    expect(['ENOTEMPTY', 'EEXIST']).toContain(err.code);
    expect(err.path).toBe(join(s.dir, 'stage'));
    expect(err.dest).toBe(join(s.dir, 'taken'));
    expect((await lstat(join(s.dir, 'stage'))).isDirectory()).toBe(true);
  });

  test('fsyncPath takes a file or a directory, and names a missing one', async () => {
    await writeFile(join(s.dir, 'f'), 'x');
    await fsyncPath(join(s.dir, 'f'));
    await fsyncPath(s.dir, true);
    expect((await rejection(fsyncPath(join(s.dir, 'f'), true))).code).toBe('ENOTDIR');
    const err = await rejection(fsyncPath(join(s.dir, 'gone')));
    expect(err.code).toBe('ENOENT');
    expect(err.syscall).toBe('open');
    expect(err.path).toBe(join(s.dir, 'gone'));
  });
});
