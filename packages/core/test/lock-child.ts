/**
 * A second process for the lock and hold tests: core's StoreLocks and SharedMounts on a
 * home, driven by lines on stdin, answering on stdout. Run through
 * scripts/ts-register.mjs (testkit's spawnTsChild), so it is exactly the library code.
 *
 *   write OP | read OP | layer ID   take that lock, say `held`, keep it until `release`
 *   get ID | put ID                 a SharedMounts get/put (hooks: marker files), says the path / `done`
 *   bump                            take and drop the write lock (a generation bump), says `done`
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { SharedMounts, StoreLocks } from '@cairnfs/core';
import { say } from '@cairnfs/testkit';

const home = process.argv[2]!;
const locks = new StoreLocks(home, { timeoutMs: Number(process.argv[3] ?? 5000), what: 'test table' });
const mounts = new SharedMounts(home, locks, {
  async mount(id) {
    await mkdir(join(home, 'mounted'), { recursive: true });
    await writeFile(join(home, 'mounted', id), String(process.pid), { flag: 'wx' });
    return join(home, 'mnt', id);
  },
  async unmount(id) {
    await rm(join(home, 'mounted', id), { force: true });
  },
});

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const queue: string[] = [];
async function next(): Promise<string | null> {
  const queued = queue.shift();
  if (queued !== undefined) return queued;
  const r = await lines.next();
  return r.done ? null : r.value;
}

async function holdUntilRelease(): Promise<void> {
  say('held');
  for (;;) {
    const line = await next();
    if (line === null || line === 'release') return;
    queue.push(line);
  }
}

async function main(): Promise<void> {
  say('ready');
  for (let line = await next(); line !== null; line = await next()) {
    const [cmd, ...rest] = line.split(' ');
    const arg = rest.join(' ');
    try {
      if (cmd === 'write') await locks.write(arg, holdUntilRelease);
      else if (cmd === 'read') await locks.read(arg, holdUntilRelease);
      else if (cmd === 'layer') await locks.layer(arg, 'test hold', holdUntilRelease);
      else if (cmd === 'get') say(await mounts.get(arg));
      else if (cmd === 'put') { await mounts.put(arg); say('done'); }
      else if (cmd === 'bump') { await locks.write('bump', async () => undefined); say('done'); }
      else say(`unknown ${cmd}`);
    } catch (err) {
      say(`error ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`);
    }
  }
}

void main();
