// Concurrency and several processes, on vfs and overlay2: many get/put pairs, racing
// creates of one id, remove racing get, a second process on a locked home.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMountInfo } from '@cairnfs/core';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, layerTar } from '@cairnfs/testkit';
import { Readable } from 'node:stream';
import { overlayMissing } from './reliability-helpers.js';

const repo = join(new URL('.', import.meta.url).pathname, '..', '..', '..');

async function mountsUnder(home: string): Promise<string[]> {
  return (await readMountInfo()).map((m) => m.mountPoint).filter((p) => p.startsWith(`${home}/`));
}

for (const [factory, missing] of [[vfsDriver, process.getuid?.() === 0 ? null : 'needs root'], [overlay2Driver, overlayMissing()]] as Array<[DriverFactory, string | null]>) {
  describeBackend(factory.name === 'vfs' ? 'root' : 'overlay', missing, () => {
    describe(`${factory.name} under concurrency`, () => {
      let root: string;
      let driver: StorageDriver;
      const open = (lockTimeoutMs = 0) => factory.open({ root, home: join(root, factory.name), options: {}, lockTimeoutMs });
      beforeEach(async () => {
        root = await mkdtemp(join(tmpdir(), `cairn-conc-${factory.name}-`));
        driver = await open();
      });
      afterEach(async () => {
        await driver.cleanup().catch(() => undefined);
        expect(await mountsUnder(join(root, factory.name))).toEqual([]);
        await rm(root, { recursive: true, force: true });
      });

      test('256 concurrent get/put pairs over 32 layers leave every layer unmounted and readable', async () => {
        await driver.create('base', null);
        await driver.applyDiff('base', null, Readable.from([layerTar('base', 1, 4096, false)]));
        const ids = Array.from({ length: 32 }, (_, i) => `l${i}`);
        await Promise.all(ids.map((id, i) => (i % 2 ? driver.create(id, 'base') : driver.createReadWrite(id, 'base'))));
        const paths = await Promise.all(Array.from({ length: 256 }, async (_, i) => {
          const id = ids[i % 32]!;
          const path = await driver.get(id);
          const names = await readdir(join(path, 'L-base'));
          await driver.put(id);
          return [id, path, names.length] as const;
        }));
        for (const [id, path, n] of paths) {
          expect(n).toBeGreaterThan(3);
          expect(path).toBe(paths.find((p) => p[0] === id)![1]);
        }
        expect(await mountsUnder(join(root, factory.name))).toEqual([]);
        // Every count went back to zero: a put now is ERR_NOT_MOUNTED everywhere.
        for (const id of ids) await expect(driver.put(id)).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
      });

      test('concurrent creates of 32 distinct ids all succeed', async () => {
        await driver.create('base', null);
        const ids = Array.from({ length: 32 }, (_, i) => `d${i}`);
        await Promise.all(ids.map((id) => driver.createReadWrite(id, 'base')));
        for (const id of ids) expect(await driver.exists(id)).toBe(true);
      });

      test('16 racing creates of one id: exactly one wins, the rest get ERR_LAYER_EXISTS', async () => {
        const results = await Promise.allSettled(Array.from({ length: 16 }, () => driver.createReadWrite('same', null)));
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ERR_LAYER_EXISTS' });
        expect(await driver.exists('same')).toBe(true);
      });

      test('remove racing get: either the remove fails with ERR_LAYER_IN_USE or it is clean and the get fails; never a broken mount', async () => {
        for (let round = 0; round < 20; round++) {
          const id = `r${round}`;
          await driver.create(id, null);
          await driver.applyDiff(id, null, Readable.from([layerTar(id, round, 2048, false)]));
          const [got, removed] = await Promise.allSettled([driver.get(id), driver.remove(id)]);
          if (removed.status === 'rejected') {
            expect(removed.reason).toMatchObject({ code: 'ERR_LAYER_IN_USE' });
            expect(got.status).toBe('fulfilled');
            expect((await readdir(join((got as PromiseFulfilledResult<string>).value, `L-${id}`))).length).toBeGreaterThan(3);
            await driver.put(id);
            await driver.remove(id);
          } else if (got.status === 'fulfilled') {
            // get won the lock first, yet remove succeeded: that would pull a mounted layer away.
            throw new Error(`round ${round}: remove succeeded while get returned ${got.value}`);
          } else {
            expect(got.reason).toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
          }
          expect(await driver.exists(id)).toBe(false);
          expect(await mountsUnder(join(root, factory.name))).toEqual([]);
        }
      });

      test('a second open of the home in the same process works at once; both see the same layers and share mounts', async () => {
        const second = await open();
        await driver.createReadWrite('x', null);
        expect(await second.exists('x')).toBe(true);
        await second.remove('x');
        expect(await driver.exists('x')).toBe(false);
        await second.cleanup();
      });

      test('another process working on the home does not keep open or operations out; when it is SIGKILLed its work in flight is tidied', async () => {
        await driver.cleanup();
        const child = spawn(process.execPath, ['--import', join(repo, 'scripts', 'ts-register.mjs'), join(repo, 'packages', 'testkit', 'src', 'crash-child.ts'), factory.name], {
          stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' },
        });
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        let out = '';
        const working = new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (d: Buffer) => { out += String(d); if (out.includes('{"end":0}')) resolve(); });
          child.once('exit', () => reject(new Error(`worker child exited early: ${out}`)));
        });
        // The child creates layers one after another; we open and work alongside it.
        const ops = Array.from({ length: 2000 }, (_, i) => ({ op: 'createRW', id: `p${i}`, parent: null }));
        child.stdin!.end(JSON.stringify({ driver: factory.name, root, ops }) + '\n');
        try {
          await working;
          driver = await open(5000);
          expect(await driver.exists('p0')).toBe(true);
          await driver.createReadWrite('mine', 'p0');
          await driver.remove('mine');
          child.kill('SIGKILL');
          await exited;
          const again = await open(5000);
          const count = (await readdir(join(root, factory.name, '.staging')).catch(() => [])).length;
          expect(count).toBe(0); // the dead child's staging work is gone with the reopen
          await again.cleanup();
        } finally {
          child.kill('SIGKILL');
          await exited;
        }
      }, 60_000);
    });
  });
}
