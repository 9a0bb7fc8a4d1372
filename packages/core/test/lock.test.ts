import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { acquireHomeLock, HOME_LOCK_FILE, isCairnError } from '@cairnfs/core';

// The child is plain Node holding flock(2) through the same addon the library uses, so
// the test sees exactly what a second cairn process would do to us and we to it.
// node-gyp-build picks the binary the library loads (a local build, else the prebuilt one).
const ADDON: string = createRequire(import.meta.url)('node-gyp-build').path(fileURLToPath(new URL('../../sys', import.meta.url)));
const CHILD = `
const fs = require('fs');
const [addonPath, lockPath, releaseAfterMs] = process.argv.slice(1);
const addon = require(addonPath);
fs.mkdirSync(require('path').dirname(lockPath), { recursive: true });
const fd = fs.openSync(lockPath, 'a');
const got = addon.flockSync(fd, addon.constants.LOCK_EX | addon.constants.LOCK_NB);
process.stdout.write(got ? 'locked\\n' : 'busy\\n');
if (!got) process.exit(0);
if (Number(releaseAfterMs) > 0) setTimeout(() => { fs.closeSync(fd); process.stdout.write('released\\n'); }, Number(releaseAfterMs));
setInterval(() => {}, 1000);
`;

const children: ChildProcess[] = [];

/** Starts a child that tries to lock `home`'s lock file; resolves with its first line ('locked' or 'busy'). */
async function childLock(home: string, releaseAfterMs = 0): Promise<{ child: ChildProcess; first: string }> {
  const child = spawn(process.execPath, ['-e', CHILD, ADDON, join(home, HOME_LOCK_FILE), String(releaseAfterMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  // A child that dies before saying anything fails the test now rather than at the jest timeout.
  const first = await Promise.race([
    once(child.stdout!, 'data').then(([chunk]) => String(chunk).trim()),
    once(child, 'exit').then(([code, signal]) => { throw new Error(`lock child exited early (${String(code ?? signal)})`); }),
  ]);
  return { child, first };
}

async function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  await exited;
}

let base: string;
let home: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cairn-lock-'));
  home = join(base, 'vfs');
});
afterEach(async () => {
  for (const c of children.splice(0)) await kill(c);
  await rm(base, { recursive: true, force: true });
});

async function lockError(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected acquireHomeLock to fail');
}

test('the first acquire creates the home and its .cairn-lock file and holds it', async () => {
  const lock = await acquireHomeLock(home);
  expect(lock.held).toBe(true);
  expect(lock.path).toBe(join(home, HOME_LOCK_FILE));
  expect(await readdir(home)).toEqual([HOME_LOCK_FILE]);
  await lock.release();
  expect(lock.held).toBe(false);
  await lock.release(); // twice is fine
});

test('a second acquire in the same process fails with ERR_LOCKED naming the home, until the first is released', async () => {
  const first = await acquireHomeLock(home);
  const err = await lockError(acquireHomeLock(home));
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect((err as Error).message).toContain(home);
  expect((err as Error).message).toMatch(/another cairn/);
  await first.release();
  const second = await acquireHomeLock(home);
  await second.release();
});

test('another process holding the home makes acquire fail with ERR_LOCKED at once', async () => {
  const { first } = await childLock(home);
  expect(first).toBe('locked');
  const started = Date.now();
  const err = await lockError(acquireHomeLock(home));
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect(Date.now() - started).toBeLessThan(1000);
});

test('our lock keeps another process out', async () => {
  const lock = await acquireHomeLock(home);
  try {
    const { first } = await childLock(home);
    expect(first).toBe('busy');
  } finally {
    await lock.release();
  }
  const { first } = await childLock(home);
  expect(first).toBe('locked');
});

test('a holder killed with SIGKILL releases the lock (the kernel drops it)', async () => {
  const { child, first } = await childLock(home);
  expect(first).toBe('locked');
  expect(isCairnError(await lockError(acquireHomeLock(home)), 'ERR_LOCKED')).toBe(true);
  await kill(child, 'SIGKILL');
  expect(child.signalCode).toBe('SIGKILL');
  const lock = await acquireHomeLock(home);
  expect(lock.held).toBe(true);
  await lock.release();
});

test('with timeoutMs, acquire waits for a holder that lets go in time', async () => {
  const { first } = await childLock(home, 400);
  expect(first).toBe('locked');
  const started = Date.now();
  const lock = await acquireHomeLock(home, { timeoutMs: 5000 });
  const waited = Date.now() - started;
  expect(waited).toBeGreaterThanOrEqual(250);
  expect(waited).toBeLessThan(4000);
  await lock.release();
});

test('with timeoutMs, acquire gives up with ERR_LOCKED once the time is spent', async () => {
  await childLock(home);
  const started = Date.now();
  const err = await lockError(acquireHomeLock(home, { timeoutMs: 300 }));
  const waited = Date.now() - started;
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect((err as Error).message).toMatch(/300 ms/);
  expect(waited).toBeGreaterThanOrEqual(290);
  expect(waited).toBeLessThan(2000);
});
