import { open, writeFile } from 'node:fs/promises';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { constants, flockSync } from '@cairnfs/sys';
import { scratch, thrown, type Scratch } from './helpers.js';

const { LOCK_EX, LOCK_SH, LOCK_UN, LOCK_NB } = constants;

let s: Scratch;
let lockFile: string;
const handles: FileHandle[] = [];
beforeEach(async () => {
  s = await scratch();
  lockFile = join(s.dir, 'lock');
  await writeFile(lockFile, '');
});
afterEach(async () => {
  for (const h of handles.splice(0)) await h.close().catch(() => undefined);
  await s.cleanup();
});

async function openLock(): Promise<number> {
  const h = await open(lockFile, 'r');
  handles.push(h);
  return h.fd;
}

test('an exclusive lock makes LOCK_NB on a second open file return false until LOCK_UN', async () => {
  const a = await openLock();
  const b = await openLock();
  expect(flockSync(a, LOCK_EX)).toBe(true);
  expect(flockSync(b, LOCK_EX | LOCK_NB)).toBe(false);
  expect(flockSync(b, LOCK_SH | LOCK_NB)).toBe(false);
  expect(flockSync(a, LOCK_UN)).toBe(true);
  expect(flockSync(b, LOCK_EX | LOCK_NB)).toBe(true);
});

test('shared locks coexist and keep an exclusive one out', async () => {
  const a = await openLock();
  const b = await openLock();
  const c = await openLock();
  expect(flockSync(a, LOCK_SH)).toBe(true);
  expect(flockSync(b, LOCK_SH | LOCK_NB)).toBe(true);
  expect(flockSync(c, LOCK_EX | LOCK_NB)).toBe(false);
});

test('a lock held by another process (flock(1)) blocks us, and ours blocks it', async () => {
  const child = spawn('flock', ['-x', lockFile, 'sh', '-c', 'echo locked; read line'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const [chunk] = (await once(child.stdout, 'data')) as [Buffer];
    expect(chunk.toString()).toBe('locked\n');
    const fd = await openLock();
    expect(flockSync(fd, LOCK_EX | LOCK_NB)).toBe(false);
    child.stdin.end('\n');
    await once(child, 'exit');
    expect(flockSync(fd, LOCK_EX | LOCK_NB)).toBe(true);
    // Now the other direction: flock -n exits 1 when it cannot get the lock.
    expect(spawnSync('flock', ['-n', '-x', lockFile, 'true']).status).toBe(1);
    flockSync(fd, LOCK_UN);
    expect(spawnSync('flock', ['-n', '-x', lockFile, 'true']).status).toBe(0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  }
});

test('a bad fd is EBADF and a bad operation EINVAL', async () => {
  const fd = await openLock();
  expect(thrown(() => flockSync(99999, LOCK_EX))).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'flock' });
  expect(thrown(() => flockSync(fd, 0))).toMatchObject({ code: 'EINVAL' });
  expect(thrown(() => flockSync(-1, LOCK_EX)).name).toBe('TypeError');
});
