// The per-operation locks with a second real process (lock-child.ts): readers share,
// writers exclude, waits end at lockTimeoutMs with ERR_LOCKED naming the holder, a
// SIGKILLed holder releases everything, the generation makes another process reload.
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError, SharedTable, StoreLocks, STORE_LOCK_FILE } from '@cairnfs/core';
import { killChild } from '@cairnfs/testkit';
import { ask, killLockChildren, startLockChild } from './lock-children.js';

let home: string;

beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'cairn-storelock-')); });
afterEach(async () => {
  await killLockChildren();
  await rm(home, { recursive: true, force: true });
});

const child = (timeoutMs?: number) => startLockChild(home, timeoutMs);

async function failure(p: Promise<unknown>): Promise<Error & { code?: string }> {
  return p.then(() => { throw new Error('expected a failure'); }, (err: Error & { code?: string }) => err);
}

const locksOf = (timeoutMs: number) => new StoreLocks(home, { timeoutMs, what: 'test table' });

test('another process writing makes a read wait; the read goes on as soon as it lets go', async () => {
  const c = await child();
  expect(await ask(c, 'write create layer x')).toBe('held');
  const locks = locksOf(5000);
  const started = Date.now();
  const reading = locks.read('look', async () => Date.now());
  setTimeout(() => c.proc.stdin!.write('release\n'), 300);
  const at = await reading;
  expect(at - started).toBeGreaterThanOrEqual(250);
  expect(at - started).toBeLessThan(2000);
  await locks.close();
});

test('readers of two processes share the lock; a writer waits for both', async () => {
  const c = await child();
  expect(await ask(c, 'read list')).toBe('held');
  const locks = locksOf(300);
  expect(await locks.read('list', async () => 'shared')).toBe('shared');
  const err = await failure(locks.write('remove layer y', async () => undefined));
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect(err.message).toContain(`process ${c.proc.pid} (shared)`);
  await locks.close();
});

test('ERR_LOCKED after lockTimeoutMs names the holder pid and what it does; 0 does not wait', async () => {
  const c = await child();
  expect(await ask(c, 'write apply a diff to layer big')).toBe('held');
  const locks = locksOf(400);
  const started = Date.now();
  const err = await failure(locks.read('list layers', async () => undefined));
  const waited = Date.now() - started;
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect(err.message).toContain(`process ${c.proc.pid} (exclusive: apply a diff to layer big, for`);
  expect(err.message).toMatch(/waited 400 ms \(lockTimeoutMs\)/);
  expect(err.message).toMatch(/cannot list layers/);
  expect(waited).toBeGreaterThanOrEqual(380);
  expect(waited).toBeLessThan(3000);
  const now = locksOf(0);
  const t0 = Date.now();
  expect(isCairnError(await failure(now.read('x', async () => undefined)), 'ERR_LOCKED')).toBe(true);
  expect(Date.now() - t0).toBeLessThan(300);
  await locks.close();
  await now.close();
});

test('a holder killed with SIGKILL mid-operation releases the store lock and its layer locks at once', async () => {
  const c = await child();
  expect(await ask(c, 'layer a')).toBe('held');
  const c2 = await child();
  expect(await ask(c2, 'write w')).toBe('held');
  killChild(c);
  killChild(c2);
  await c.exited;
  await c2.exited;
  const locks = locksOf(2000);
  const started = Date.now();
  await locks.write('after the kill', async () => undefined);
  await locks.layer(['a', 'b'], 'after the kill', async () => undefined);
  expect(Date.now() - started).toBeLessThan(500);
  await locks.close();
});

test('a layer lock excludes another process; tryLayer never waits and says whether it ran', async () => {
  const c = await child();
  expect(await ask(c, 'layer l1')).toBe('held');
  const locks = locksOf(200);
  expect(await locks.tryLayer('l1', 'repair', async () => 'ran')).toEqual({ ran: false });
  expect(await locks.tryLayer('l2', 'repair', async () => 'ran')).toEqual({ ran: true, value: 'ran' });
  const err = await failure(locks.layer('l1', 'remove layer l1', async () => undefined));
  expect(isCairnError(err, 'ERR_LOCKED')).toBe(true);
  expect(err.message).toContain(`layer l1 in ${home} is locked by process ${c.proc.pid}`);
  c.proc.stdin!.write('release\n');
  await locks.layer('l1', 'remove layer l1', async () => undefined);
  await locks.close();
});

test('locks are reentrant within one operation, and the order rule (layer before store) is enforced', async () => {
  const locks = locksOf(0);
  expect(await locks.layer('x', 'outer', () => locks.layer(['x', 'y'], 'inner', () => locks.read('r', () => locks.read('rr', async () => 7))))).toBe(7);
  await expect(locks.read('r', () => locks.layer('z', 'late', async () => undefined))).rejects.toThrow(/layer locks come first/);
  await expect(locks.read('r', () => locks.write('upgrade', async () => undefined))).rejects.toThrow(/while holding its read lock/);
  expect(await locks.write('w', () => locks.tryLayer('z', 'try under the store lock', async () => 1))).toEqual({ ran: true, value: 1 });
  // A promise chain that outlives its lock does not inherit it.
  let later: Promise<unknown> = Promise.resolve();
  await locks.layer('x', 'outer', async () => { later = new Promise((r) => setTimeout(r, 50)).then(() => locks.holdsLayer('x')); });
  expect(await later).toBe(false);
  await locks.close();
});

test('in one process, writers exclude each other and readers, first come first served; readers share', async () => {
  const locks = locksOf(0);
  const events: string[] = [];
  const op = (name: string, write: boolean) => (write ? locks.write.bind(locks) : locks.read.bind(locks))(name, async () => {
    events.push(`+${name}`);
    await new Promise((r) => setTimeout(r, 20));
    events.push(`-${name}`);
  });
  await Promise.all([op('r1', false), op('r2', false), op('w1', true), op('r3', false), op('w2', true)]);
  expect(events).toEqual(['+r1', '+r2', '-r1', '-r2', '+w1', '-w1', '+r3', '-r3', '+w2', '-w2']);
  await locks.close();
});

test('a SharedTable reloads exactly when another process wrote, and never for its own writes', async () => {
  const locks = locksOf(2000);
  let loads = 0;
  const table = new SharedTable(locks, async () => { loads++; return new Map<string, number>(); });
  await table.read('r', () => undefined);
  await table.read('r', () => undefined);
  expect(loads).toBe(1);
  await table.write('w', (t) => { t.set('mine', 1); });
  expect(await table.read('r', (t) => t.get('mine'))).toBe(1);
  expect(loads).toBe(1);
  const c = await child();
  expect(await ask(c, 'bump')).toBe('done');
  expect(await table.read('r', (t) => t.has('mine'))).toBe(false); // reloaded from "disk" (our loader)
  expect(loads).toBe(2);
  await table.read('r', () => undefined);
  expect(loads).toBe(2);
  // The lock file says who wrote last and the generation; a torn one forces a reload, never a crash.
  const record = JSON.parse(await readFile(join(home, STORE_LOCK_FILE), 'utf8')) as { generation: number; pid: number; op: string };
  expect(record).toMatchObject({ pid: c.proc.pid, op: 'bump' });
  await rm(join(home, STORE_LOCK_FILE));
  await table.read('r', () => undefined); // a new, empty lock file: generation 0, not ours
  expect(loads).toBe(3);
  await locks.close();
});

test('a removed layer\'s lock file is unlinked under its lock; a process waiting on the old file starts over on the new one', async () => {
  const locks = locksOf(5000);
  const c = await child(5000);
  let asked: Promise<string | null> | null = null;
  await locks.layer('gone', 'remove layer gone', async () => {
    asked = ask(c, 'layer gone'); // the child opens the file and waits on it
    await new Promise((r) => setTimeout(r, 200));
    await locks.forgetLayer('gone');
  });
  expect(await asked).toBe('held');
  // The child holds the lock on a fresh inode at the same path; we cannot have it at the same time.
  const path = join(home, '.cairn', 'locks', 'gone');
  expect((await stat(path)).isFile()).toBe(true);
  expect(await locks.tryLayer('gone', 'try', async () => undefined)).toEqual({ ran: false });
  c.proc.stdin!.write('release\n');
  await locks.close();
});

test('the lock file of a removed layer is closed when its remove lets go, not kept open among the idle ones; a kept layer\'s is', async () => {
  const locks = locksOf(5000);
  const openLockFiles = async (): Promise<string[]> => {
    const out: string[] = [];
    for (const fd of await readdir('/proc/self/fd')) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (target.startsWith(join(home, '.cairn', 'locks'))) out.push(target.slice(join(home, '.cairn', 'locks').length + 1));
    }
    return out.sort();
  };
  await locks.layer('kept', 'create layer kept', async () => undefined);
  await locks.layer('gone', 'remove layer gone', async () => { await locks.forgetLayer('gone'); });
  // Before: 'gone (deleted)' stayed open (and took one of the idle slots) until 64 other layers pushed it out.
  expect(await openLockFiles()).toEqual(['kept']);
  // A layer made again under that id gets a fresh file.
  await locks.layer('gone', 'create layer gone', async () => undefined);
  expect(await openLockFiles()).toEqual(['gone', 'kept']);
  await locks.close();
  expect(await openLockFiles()).toEqual([]);
});
