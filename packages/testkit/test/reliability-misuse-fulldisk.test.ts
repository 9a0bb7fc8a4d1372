// Misuse (bad ids, missing parents, put without get, removing a parent, double cleanup)
// must fail with the documented code and change nothing on disk; a full disk must be
// ERR_NO_SPACE with the layer rolled back and the space given back. vfs and overlay2.
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { encodeHeader, tarTrailer } from '@cairnfs/archive';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, layerTar, makeLoopFs, snapshotTree, comparable, treeHash } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { overlayMissing } from './reliability-helpers.js';

const badIds = ['', '.hidden', '-dash', 'a/b', '../x', 'x'.repeat(129), 'sp ace', 'nul\0', 'ünï'];

/** A tar whose one file is `bytes` long, streamed so it never sits in memory. */
function bigTar(bytes: number): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    yield encodeHeader({ name: 'big', type: 'file', mode: 0o644, size: bytes });
    const chunk = Buffer.alloc(1 << 20, 7);
    for (let left = bytes; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
    yield Buffer.alloc((512 - (bytes % 512)) % 512);
    yield tarTrailer();
  }
  return Readable.from(gen());
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

for (const [factory, missing] of [[vfsDriver, process.getuid?.() === 0 ? null : 'needs root'], [overlay2Driver, overlayMissing()]] as Array<[DriverFactory, string | null]>) {
  describeBackend(factory.name === 'vfs' ? 'root' : 'overlay', missing, () => {
    describe(`${factory.name} misuse and full disk`, () => {
      let fs: LoopFs;
      let driver: StorageDriver;
      let home: string;
      beforeEach(async () => {
        fs = await makeLoopFs('tmpfs', { sizeMiB: 24 });
        home = join(fs.dir, factory.name);
        driver = await factory.open({ root: fs.dir, home, options: {}, lockTimeoutMs: 0 });
      });
      afterEach(async () => {
        await driver.cleanup().catch(() => undefined);
        await fs.dispose();
      });

      test('every call with an invalid id is ERR_INVALID_ID and leaves the home byte-for-byte as it was', async () => {
        await driver.create('ok', null);
        const before = comparable(await snapshotTree(home));
        for (const id of badIds) {
          const calls: Array<[string, () => Promise<unknown>]> = [
            ['create', () => driver.create(id, null)], ['create(parent)', () => driver.create('fresh', id)],
            ['createReadWrite', () => driver.createReadWrite(id, 'ok')], ['exists', () => driver.exists(id)],
            ['remove', () => driver.remove(id)], ['get', () => driver.get(id)], ['put', () => driver.put(id)],
            ['diff', () => driver.diff(id)], ['diff(parent)', () => driver.diff('ok', id)], ['changes', () => driver.changes(id)],
            ['applyDiff', () => driver.applyDiff(id, null, Readable.from([tarTrailer()]))], ['diffSize', () => driver.diffSize(id)],
            ['metadata', () => driver.metadata(id)],
          ];
          for (const [name, call] of calls) {
            // An empty parent means "no parent", as in moby; only the layer position refuses ''.
            if (id === '' && name.endsWith('(parent)')) continue;
            const err = await call().then(() => null, (e: unknown) => e);
            expect([name, id, err]).toEqual([name, id, expect.objectContaining({ name: 'CairnError', code: 'ERR_INVALID_ID' })]);
          }
        }
        expect(comparable(await snapshotTree(home))).toEqual(before);
      });

      test('missing parents, missing layers, put without get, removing a parent, double cleanup: documented codes, nothing changed', async () => {
        await driver.create('parent', null);
        await driver.applyDiff('parent', null, Readable.from([layerTar('parent', 3, 2048, false)]));
        await driver.createReadWrite('child', 'parent');
        const before = comparable(await snapshotTree(home));
        await expect(driver.create('orphan', 'nope')).rejects.toMatchObject({ code: 'ERR_PARENT_NOT_FOUND' });
        await expect(driver.createReadWrite('orphan', 'nope')).rejects.toMatchObject({ code: 'ERR_PARENT_NOT_FOUND' });
        await expect(driver.create('parent', null)).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
        await expect(driver.get('nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
        await expect(driver.applyDiff('nope', null, Readable.from([tarTrailer()]))).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
        await expect(driver.diff('nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
        await expect(driver.put('child')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
        await expect(driver.put('nope')).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_(NOT_MOUNTED|LAYER_NOT_FOUND)$/) });
        await expect(driver.remove('parent')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
        await expect(driver.create('x', null, { storageOpt: { bogus: '1' } })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
        expect(await driver.exists('orphan')).toBe(false);
        expect(await driver.exists('x')).toBe(false);
        expect(comparable(await snapshotTree(home))).toEqual(before);
        const hash = await treeHash(await driver.get('child'));
        await driver.put('child');
        await driver.cleanup();
        await driver.cleanup();
        driver = await factory.open({ root: fs.dir, home, options: {}, lockTimeoutMs: 0 });
        expect(await treeHash(await driver.get('child'))).toBe(hash);
        await driver.put('child');
      });

      test('applyDiff that fills the disk is ERR_NO_SPACE; the layer is as before and the space is given back', async () => {
        await driver.create('l', null);
        const emptyHash = await treeHash(await driver.get('l'));
        await driver.put('l');
        const free = await freeBytes(fs.dir);
        const err = await driver.applyDiff('l', null, bigTar(64 << 20)).then(() => null, (e: unknown) => e);
        expect(err).toMatchObject({ name: 'CairnError', code: 'ERR_NO_SPACE' });
        expect(await driver.exists('l')).toBe(true);
        expect(await treeHash(await driver.get('l'))).toBe(emptyHash);
        await driver.put('l');
        expect(Math.abs((await freeBytes(fs.dir)) - free)).toBeLessThan(256 * 1024);
        // And the store still works once space is free.
        await driver.applyDiff('l', null, Readable.from([layerTar('l', 9, 4096, false)]));
      });

      test('create on a full disk is ERR_NO_SPACE and leaves no layer', async () => {
        await driver.create('big', null);
        // Fill the disk with a real layer up to the last few KiB (vfs copies it in full on create).
        await driver.applyDiff('big', null, bigTar(14 << 20)).catch(() => undefined);
        const before = await freeBytes(fs.dir);
        const err = await driver.create('copy', 'big').then(() => null, (e: unknown) => e);
        if (factory.name === 'vfs') {
          expect(err).toMatchObject({ name: 'CairnError', code: 'ERR_NO_SPACE' });
          expect(await driver.exists('copy')).toBe(false);
          expect(Math.abs((await freeBytes(fs.dir)) - before)).toBeLessThan(256 * 1024);
        } else {
          expect(err).toBeNull(); // overlay2 shares the parent: creating costs no copy
        }
      });
    });
  });
}
