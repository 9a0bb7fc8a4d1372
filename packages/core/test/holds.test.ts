// Mount holds shared across processes (SharedMounts), with a second real process
// (lock-child.ts) using the same marker-file hooks: a mount is a file `mounted/<id>`
// created with O_EXCL, so a second mount of a layer fails the test by itself.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootId, isCairnError, isProcessAlive, processStartTime, selfIdentity, SharedMounts, StoreLocks } from '@cairnfs/core';
import type { MountHooks } from '@cairnfs/core';
import { killChild } from '@cairnfs/testkit';
import { ask, killLockChildren, startLockChild } from './lock-children.js';

let home: string;
let calls: string[];

beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'cairn-holds-'));
  calls = [];
});
afterEach(async () => {
  await killLockChildren();
  await rm(home, { recursive: true, force: true });
});

function hooks(): MountHooks {
  return {
    async mount(id) {
      calls.push(`mount ${id}`);
      await mkdir(join(home, 'mounted'), { recursive: true });
      await writeFile(join(home, 'mounted', id), String(process.pid), { flag: 'wx' });
      return join(home, 'mnt', id);
    },
    async unmount(id, path) {
      calls.push(`unmount ${id} ${path === null ? 'null' : 'path'}`);
      await rm(join(home, 'mounted', id), { force: true });
    },
  };
}

function open(timeoutMs = 5000): { locks: StoreLocks; mounts: SharedMounts } {
  const locks = new StoreLocks(home, { timeoutMs, what: 'test table' });
  return { locks, mounts: new SharedMounts(home, locks, hooks()) };
}

const child = () => startLockChild(home);

const mounted = (id: string) => existsSync(join(home, 'mounted', id));
// The record lives in the layer's lock file, after the 256-byte holder record (StoreLocks.layerRecord).
const lockFile = (id: string) => join(home, '.cairn', 'locks', id);
const recordOf = async (id: string) => JSON.parse((await readFile(lockFile(id))).subarray(256).toString('utf8').trim()) as { holds: unknown[]; path: string | null; boot: string };
async function writeRecord(id: string, text: string): Promise<void> {
  await mkdir(join(home, '.cairn', 'locks'), { recursive: true });
  const page = Buffer.alloc(4096, 0x20);
  page.write(text, 256, 'utf8');
  await writeFile(lockFile(id), page);
}

test('proc: our own start time is field 22 of /proc/self/stat; a pid with another start time is not alive', () => {
  const me = selfIdentity();
  expect(me.pid).toBe(process.pid);
  expect(processStartTime(process.pid)).toBe(me.start);
  expect(isProcessAlive(me)).toBe(true);
  expect(isProcessAlive({ pid: 1, start: processStartTime(1)! + 1 })).toBe(false); // pid 1 lives, but not that one
  expect(processStartTime(2 ** 22 + 7)).toBeNull();
});

test('64 concurrent gets mount once and return one path; 64 puts unmount once', async () => {
  const { mounts, locks } = open();
  const paths = await Promise.all(Array.from({ length: 64 }, () => mounts.get('a')));
  expect(new Set(paths)).toEqual(new Set([join(home, 'mnt', 'a')]));
  expect(await mounts.count('a')).toBe(64);
  await Promise.all(Array.from({ length: 64 }, () => mounts.put('a')));
  expect(calls).toEqual(['mount a', 'unmount a path']);
  await expect(mounts.put('a')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
  await locks.close();
});

test('get from two processes is one mount with two holds; the last put of either unmounts', async () => {
  const { mounts, locks } = open();
  const c = await child();
  const path = await ask(c, 'get a');
  expect(mounted('a')).toBe(true);
  expect(await mounts.get('a')).toBe(path); // the child's mount: ours would fail O_EXCL
  expect(calls).toEqual([]);
  expect(await mounts.count('a')).toBe(2);
  expect((await mounts.holds('a')).map((h) => h.holder).sort()).toEqual([`process ${c.proc.pid}`, `process ${process.pid}`].sort());
  await mounts.put('a');
  expect(mounted('a')).toBe(true);
  expect(await ask(c, 'put a')).toBe('done');
  expect(mounted('a')).toBe(false);
  await locks.close();
});

test('the holds of a process killed with SIGKILL are dropped when next seen, and its mount comes off with the last of them', async () => {
  const { mounts, locks } = open();
  const c = await child();
  await ask(c, 'get a');
  await ask(c, 'get b');
  await mounts.get('b');
  killChild(c);
  await c.exited;
  expect(await mounts.count('a')).toBe(0); // seen: dropped, and nobody is left
  expect(mounted('a')).toBe(false);
  expect(await mounts.count('b')).toBe(1); // ours stays
  expect(mounted('b')).toBe(true);
  await mounts.put('b');
  expect(mounted('b')).toBe(false);
  await locks.close();
});

test('a hold whose pid is alive but started at another time (pid reuse) is not a holder', async () => {
  const { mounts, locks } = open();
  await mounts.get('a');
  const record = await recordOf('a');
  const init = { pid: 1, start: processStartTime(1)! + 99, session: 'old', count: 3 };
  await writeRecord('a', JSON.stringify({ ...record, holds: [...record.holds, init] }));
  expect(await mounts.count('a')).toBe(1);
  expect((await recordOf('a')).holds).toHaveLength(1); // rewritten without it
  await mounts.put('a');
  expect(mounted('a')).toBe(false);
  await locks.close();
});

test('a named hold (cairn mount) outlives the process that made it and every cleanup; only a put by that name ends it', async () => {
  const first = open();
  await first.mounts.get('web', { holder: 'cli-mount:web' });
  await first.locks.close(); // the CLI process is gone; its named hold stays
  const { mounts, locks } = open();
  await mounts.get('web');
  expect(await mounts.releaseAll()).toEqual([]); // our cleanup: our hold goes, the named one stays
  expect(mounted('web')).toBe(true);
  expect(await mounts.holds('web')).toEqual([{ holder: 'cli-mount:web', count: 1, mine: false }]);
  await expect(mounts.put('web')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED', message: expect.stringContaining('held by cli-mount:web') });
  await expect(mounts.assertUnheld('web', 'remove')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE', message: expect.stringContaining('cli-mount:web') });
  await mounts.put('web', { holder: 'cli-mount:web' });
  expect(mounted('web')).toBe(false);
  await locks.close();
});

test('a get killed between recording its hold and its mount is undone by the next reader (unmount with no path)', async () => {
  const dead = { pid: selfIdentity().pid, start: selfIdentity().start - 1, session: 'x', count: 1 };
  await writeRecord('a', JSON.stringify({ boot: bootId(), path: null, holds: [dead] }));
  const { mounts, locks } = open();
  expect(await mounts.get('a')).toBe(join(home, 'mnt', 'a'));
  expect(calls).toEqual(['unmount a null', 'mount a']);
  await mounts.put('a');
  await locks.close();
});

test('holds recorded in an earlier boot are void', async () => {
  const { mounts, locks } = open();
  await mounts.get('a');
  const record = await recordOf('a');
  await writeRecord('a', JSON.stringify({ ...record, boot: 'another-boot' }));
  expect(await mounts.count('a')).toBe(0);
  await locks.close();
});

test('a corrupt hold record is refused naming the file and what to do; the open-time sweep skips it', async () => {
  const file = lockFile('bad');
  await writeRecord('bad', '{"boot": "x", "holds": [{"pid": "no"}');
  const { mounts, locks } = open();
  const err = await mounts.get('bad').then(() => null, (e: unknown) => e as Error);
  expect(isCairnError(err, 'ERR_BACKEND_FAILED')).toBe(true);
  expect(err!.message).toContain(file);
  expect(err!.message).toMatch(/delete that file/);
  await writeRecord('bad', JSON.stringify({ boot: bootId(), path: '/x', holds: [{ count: 1 }] }));
  await expect(mounts.count('bad')).rejects.toMatchObject({ code: 'ERR_BACKEND_FAILED', message: expect.stringContaining('malformed') });
  await mounts.sweep([{ id: 'bad', path: '/x' }]); // does not throw: the layer stays refused, open goes on
  expect(calls).toEqual([]);
  await locks.close();
});

test('the open-time sweep drops dead holds and unmounts mounts no record knows, but leaves a layer another operation holds', async () => {
  const c = await child();
  await ask(c, 'get dead');
  killChild(c);
  await c.exited;
  const c2 = await child();
  expect(await ask(c2, 'layer busy')).toBe('held');
  const { mounts, locks } = open();
  await mounts.sweep([{ id: 'dead', path: '/dead' }, { id: 'orphan', path: '/somewhere' }, { id: 'busy', path: '/busy' }]);
  expect(calls.sort()).toEqual(['unmount dead path', 'unmount orphan path']);
  c2.proc.stdin!.write('release\n');
  await locks.close();
});

test('a record too big for the lock file page (many holders) moves to its own file and back', async () => {
  const { mounts, locks } = open();
  for (let i = 0; i < 80; i++) await mounts.get('big', { holder: `cli-mount:a-long-container-name-number-${i}` });
  expect(existsSync(join(home, '.cairn', 'mounts', 'big.json'))).toBe(true);
  expect(await mounts.count('big')).toBe(80);
  for (let i = 0; i < 79; i++) await mounts.put('big', { holder: `cli-mount:a-long-container-name-number-${i}` });
  expect(existsSync(join(home, '.cairn', 'mounts', 'big.json'))).toBe(false); // small again: back in the page
  expect(await mounts.count('big')).toBe(1);
  await mounts.put('big', { holder: 'cli-mount:a-long-container-name-number-79' });
  expect(calls).toEqual(['mount big', 'unmount big path']);
  await locks.close();
});
