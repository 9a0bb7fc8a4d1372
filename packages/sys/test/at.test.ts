// The *at calls (src/at.ts, native/atcalls.cc) the pure-JS applier and copyTree are built
// on: each works relative to a directory fd and never follows its last component; the
// directory fds come from openDirBeneathSync, which refuses any symlink on the way.
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  O_PATH, chmodFdSync, copyFdSync, fchownFdSync, haveChmodFd, linkatSync, mkdiratSync, mknodatSync, openDirBeneathSync, openatSync,
  readdirFdSync, symlinkatSync, unlinkatSync, utimensFdSync, constants,
} from '@cairnfs/sys';
import type { SysError } from '@cairnfs/sys';
import { scratch, thrown, type Scratch } from './helpers.js';

let s: Scratch;
let root: string;
let rootFd: number;
beforeEach(async () => {
  s = await scratch();
  root = join(s.dir, 'root');
  await mkdir(join(root, 'd'), { recursive: true });
  await writeFile(join(s.dir, 'outside'), 'HOST\n', { mode: 0o600 });
  await symlink(s.dir, join(root, 'up'));
  await symlink(join(s.dir, 'outside'), join(root, 'd', 'link'));
  rootFd = openSync(root, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
});
afterEach(async () => {
  closeSync(rootFd);
  await s.cleanup();
});

test('openDirBeneathSync opens a real directory and refuses a symlink or .. on the way', () => {
  const fd = openDirBeneathSync(rootFd, 'd');
  try {
    expect(fstatSync(fd).ino).toBe(statSync(join(root, 'd')).ino);
  } finally {
    closeSync(fd);
  }
  expect((thrown(() => openDirBeneathSync(rootFd, 'up')) as SysError).code).toBe('ELOOP');
  expect((thrown(() => openDirBeneathSync(rootFd, '../root')) as SysError).code).toBe('EXDEV');
});

test('name calls act on the name itself, never through the symlink it is', () => {
  const d = openDirBeneathSync(rootFd, 'd');
  try {
    const before = lstatSync(join(s.dir, 'outside'));
    // O_PATH|O_NOFOLLOW of the symlink is the link: owner, times, link count act on it.
    const l = openatSync(d, 'link', O_PATH | fsConstants.O_NOFOLLOW);
    try {
      expect(fstatSync(l).isSymbolicLink()).toBe(true);
      fchownFdSync(l, 4321, 4321);
      utimensFdSync(l, d, 'link', 1_000_000_000n, 2_000_000_000n);
    } finally {
      closeSync(l);
    }
    expect(lstatSync(join(root, 'd', 'link')).uid).toBe(4321);
    linkatSync(d, 'link', d, 'hard');
    expect(readlinkSync(join(root, 'd', 'hard'))).toBe(join(s.dir, 'outside'));
    expect((thrown(() => openatSync(d, 'link', fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW)) as SysError).code).toBe('ELOOP');
    unlinkatSync(d, 'link');
    const after = lstatSync(join(s.dir, 'outside'));
    expect([after.uid, after.mode, after.mtimeMs, readFileSync(join(s.dir, 'outside'), 'utf8')]).toEqual([before.uid, before.mode, before.mtimeMs, 'HOST\n']);
  } finally {
    closeSync(d);
  }
});

test('mkdirat, mknodat, symlinkat, readdir and the mode of an O_PATH fd', () => {
  const d = openDirBeneathSync(rootFd, 'd');
  try {
    mkdiratSync(d, 'sub', 0o700);
    mknodatSync(d, 'fifo', constants.S_IFIFO | 0o644, 0, 0, !haveChmodFd());
    symlinkatSync('target', d, 'sym');
    expect(readdirFdSync(d).sort()).toEqual(['fifo', 'link', 'sub', 'sym']);
    const f = openatSync(d, 'fifo', O_PATH | fsConstants.O_NOFOLLOW); // never opens the fifo: no block
    try {
      if (haveChmodFd()) {
        chmodFdSync(f, 0o4755);
        expect(fstatSync(f).mode & 0o7777).toBe(0o4755);
      } else {
        expect((thrown(() => chmodFdSync(f, 0o4755)) as SysError).code).toBe('ENOSYS');
      }
    } finally {
      closeSync(f);
    }
    expect(readlinkSync(join(root, 'd', 'sym'))).toBe('target');
    unlinkatSync(d, 'sub', true);
    expect(readdirFdSync(d).includes('sub')).toBe(false);
  } finally {
    closeSync(d);
  }
});

test('copyFdSync copies a file fd to fd, to the end', async () => {
  await writeFile(join(root, 'd', 'src'), Buffer.alloc(300_000, 7));
  const src = openSync(join(root, 'd', 'src'), 'r');
  const dst = openSync(join(root, 'd', 'dst'), 'w');
  try {
    expect(copyFdSync(src, dst)).toBe(300_000);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
  expect(readFileSync(join(root, 'd', 'dst')).equals(Buffer.alloc(300_000, 7))).toBe(true);
});
